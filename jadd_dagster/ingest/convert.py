"""The recording of one drive (MCAP files, or rosbag2 bags) into one log of our format
(logs/format.py), streaming.

    ingest_mcap([a.mcap, b.mcap], Path("store/logs"), load_topic_map(Path("ros2.yaml")))
    ingest_drive([Path("bag_dir")], Path("store/logs"), topic_map, format="rosbag2")

One pass over the messages of the mapped topics in log-time order (the files merged), after a
probe of each camera's first frames for its frame rate. Times are the messages' own
(header.stamp or timestamp) in µs, the log time only when a message has none. The log is
written into a staging folder next to its destination and renamed into place once it is
complete and passes the reader's validation (logs/reader.py), so a failed ingest leaves nothing.

Besides the format's files the log gets ingest.json: the source files, every stream's message
counts, duplicates dropped and stamps taken from log time, the gaps (steps longer than ten
periods; CAN and pose by the scene catalog's rule), the map origin and the CAN defaults used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jadd_dagster.camera import CameraCalibration
from jadd_dagster.ingest.can import CanSignals, load_dbc
from jadd_dagster.ingest.mcap_reader import IngestError, McapDrive, McapMessage, RecordedDrive
from jadd_dagster.ingest.messages import (
    Intrinsics,
    MessageError,
    can_frame,
    frame_id,
    header_stamp_us,
    image_payload,
    intrinsics,
    is_transform_message,
    point_cloud,
    poses,
    transforms,
)
from jadd_dagster.ingest.streams import CameraStream, CanTable, Clock, LidarStream, PoseStream, gaps
from jadd_dagster.ingest.bag_layout import is_rosbag2
from jadd_dagster.ingest.tf_tree import PoseChain, StaticTree
from jadd_dagster.ingest.topic_map import TopicMap
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.reader import LOG_ID_PATTERN, is_log_id, read_log
from jadd_dagster.scenes import MAX_CAN_GAP_S, MAX_POSE_GAP_S
from jadd_dagster.storage import process_umask

INGEST_REPORT = "ingest.json"
MAP_MARGIN_M = 50.0  # the poses' smallest x and y in the log's map frame
PROBE_FRAMES = 10  # first frames of each camera that give the log's frame rate
FORMATS = ("mcap", "rosbag2")


def reader(format: str) -> type[RecordedDrive]:
    """The reader of a recording format (FORMATS); rosbags is imported only for bags."""
    if format not in FORMATS:
        raise IngestError(f"unknown recording format {format!r} (formats: {', '.join(FORMATS)})")
    if format == "rosbag2":
        from jadd_dagster.ingest.rosbag_reader import Rosbag2Drive

        return Rosbag2Drive
    return McapDrive


@dataclass(frozen=True)
class IngestResult:
    """The log written: its folder, its manifest and its ingest report (ingest.json)."""

    path: Path
    manifest: fmt.LogManifest
    report: dict


def default_log_id(paths: Sequence[Path]) -> str:
    """A bag directory's name, or the first file's name without .mcap / .db3 and without a split
    index ('drive_0.mcap' -> 'drive')."""
    first = Path(paths[0])
    if first.is_dir():
        return first.name
    return re.sub(r"_\d+$", "", first.name.removesuffix(".mcap").removesuffix(".db3"))


def detect_format(paths: Sequence[Path]) -> str:
    """'rosbag2' when every path is a bag directory or .db3 file, 'mcap' when every path is a
    .mcap file; IngestError otherwise."""
    kinds = {"rosbag2" if is_rosbag2(p) else "mcap" if Path(p).suffix == ".mcap" else None for p in paths}
    if len(kinds) != 1 or None in kinds:
        raise IngestError(f"cannot tell the recording's format of {', '.join(Path(p).name for p in paths)}: give "
                          "MCAP files (.mcap) or rosbag2 bags (directories with metadata.yaml, or .db3 files)")
    return kinds.pop()


def ingest_mcap(
    paths: Sequence[Path], out_dir: Path, topic_map: TopicMap, dbc: Path | None = None, log_id: str | None = None
) -> IngestResult:
    """Convert the MCAP files of one drive into the log out_dir/<log_id> (see ingest_drive)."""
    return ingest_drive(paths, out_dir, topic_map, dbc, log_id, format="mcap")


def ingest_drive(
    paths: Sequence[Path], out_dir: Path, topic_map: TopicMap, dbc: Path | None = None, log_id: str | None = None,
    format: str = "mcap",
) -> IngestResult:
    """Convert the recording of one drive (format: one of FORMATS) into the log out_dir/<log_id>.

    Raises IngestError naming the file, topic and message index of the first problem (and the
    reader's LogFormatError if the result is not a valid log); nothing is left in out_dir then.
    """
    if not paths:
        raise IngestError(f"no {format} files given")
    log_id = log_id or default_log_id(paths)
    if not is_log_id(log_id):
        raise IngestError(f"log id {log_id!r} must match {LOG_ID_PATTERN.pattern} without '..' (give another one)")
    target = Path(out_dir) / log_id
    if target.exists():
        raise IngestError(f"{target}: a log with this id exists already")
    if topic_map.uses_dbc and dbc is None:
        raise IngestError("the topic map reads DBC signals (can.signals ... message:), but no DBC file was given")
    database = load_dbc(dbc, topic_map.can) if dbc is not None else None
    with reader(format)(paths) as drive:
        writer = LogWriter(topic_map, database)
        missing = drive.topics_missing(list(writer.roles))
        if missing:
            raise _missing_topics(missing, writer.roles, paths)
        camera_rates = probe_camera_rates(drive, topic_map)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{log_id}.ingest-"))
        try:
            writer.open(staging, camera_rates)
            for message in drive.messages(list(writer.roles)):
                writer.add(message)
            empty = writer.empty_topics()
            if empty:
                raise _missing_topics(empty, writer.roles, paths)
            manifest, report = writer.finish(log_id, drive.summaries, drive.format)
            read_log(staging, label=str(target), log_id=log_id)
            staging.chmod(0o777 & ~process_umask())  # mkdtemp made it 0700
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return IngestResult(target, manifest, report)


def _missing_topics(topics: list[str], roles: dict[str, str], paths: Sequence[Path]) -> IngestError:
    files = ", ".join(Path(p).name for p in paths)
    lines = [f"topic {t} ({roles[t]}): no messages in {files}" for t in topics]
    return IngestError("\n".join(lines))


def probe_camera_rates(drive: McapDrive, topic_map: TopicMap) -> dict[str, int]:
    """Each camera's frame rate (Hz, whole) from its first frames: their time span over the
    periods in it (each step counted as a whole number of median steps, so a lost frame counts
    twice and timestamp jitter averages out). Cameras of one log may run at different rates (a
    30 Hz front camera, 12 Hz side ones)."""
    rates = {}
    for channel, camera in topic_map.cameras.items():
        stamps = [header_stamp_us(m.decoded()) or m.log_time_ns // 1000 for m in drive.first_messages(camera.topic, PROBE_FRAMES)]
        steps = np.diff(np.unique(stamps))
        if len(steps) == 0:
            raise IngestError(f"topic {camera.topic} (camera {channel}): fewer than two frames")
        periods = np.maximum(1, np.rint(steps / float(np.median(steps))))
        rates[channel] = max(1, round(1e6 * float(periods.sum()) / float(steps.sum())))
    return rates


class LogWriter:
    """Routes each message to the part of the log it feeds, then writes the small files."""

    def __init__(self, topic_map: TopicMap, database=None):
        self.map = topic_map
        self.database = database
        self.roles: dict[str, str] = {}  # topic -> what it is, for messages
        self._handlers: dict[str, list[Callable[[McapMessage], None]]] = {}
        for channel, camera in topic_map.cameras.items():
            self._route(camera.topic, f"camera {channel}", lambda m, c=channel: self._image(c, m))
            self._route(camera.calibration, f"calibration of {channel}", lambda m, c=channel: self._intrinsics(c, m))
        for channel, lidar in topic_map.lidars.items():
            self._route(lidar.topic, f"lidar {channel}", lambda m, c=channel: self._cloud(c, m))
        self._route(topic_map.pose.topic, "pose", self._pose)
        self._route(topic_map.tf_static, "static transforms", self._static)
        if topic_map.can.frames:
            self._route(topic_map.can.frames, "raw CAN frames", self._can_frame)
        for topic in {s.topic for s in topic_map.can.signals.values() if s.topic}:
            self._route(topic, "CAN signals", self._can_signals)

    def _route(self, topic: str, role: str, handler: Callable[[McapMessage], None]) -> None:
        self.roles[topic] = f"{self.roles[topic]}, {role}" if topic in self.roles else role
        self._handlers.setdefault(topic, []).append(handler)

    def open(self, log_dir: Path, camera_rates: dict[str, int]) -> None:
        self.log_dir = log_dir
        self.camera_rates = camera_rates
        self.cameras = {c: CameraStream(log_dir, c, camera_rates[c], cam.jpeg_crf) for c, cam in self.map.cameras.items()}
        self.lidars = {c: LidarStream(log_dir, c) for c in self.map.lidars}
        self.pose = PoseStream()
        self.can_table = CanTable(log_dir / fmt.CAN)
        self.signals = CanSignals(self.map.can, self.database, self.can_table)
        self.topic_clocks = {t: Clock(strict=False) for t in self.roles}  # every topic's own order
        self.intrinsics: dict[str, Intrinsics] = {}
        self.sensor_frames: dict[str, str] = {}
        self.static = StaticTree()
        self.pose_chain = PoseChain(self.map.map_frame, self.map.ego_frame, self.static, self.map.pose.topic,
                                    self.map.tf_static)
        self.counts = {t: 0 for t in self.roles}

    def add(self, message: McapMessage) -> None:
        self.counts[message.topic] += 1
        try:
            for handler in self._handlers[message.topic]:
                handler(message)
        except (MessageError, AttributeError, TypeError, ValueError, KeyError, IndexError) as error:
            raise message.error(str(error) or type(error).__name__) from None

    def empty_topics(self) -> list[str]:
        return [t for t, n in self.counts.items() if n == 0]

    def _stamp(self, message: McapMessage, stamp_us: int | None, clock: Clock) -> int:
        if stamp_us is None:
            clock.from_log_time += 1
            return message.log_time_ns // 1000
        return stamp_us

    def _image(self, channel: str, message: McapMessage) -> None:
        msg = message.decoded()
        stream = self.cameras[channel]
        self.sensor_frames.setdefault(channel, self.map.cameras[channel].frame_id or frame_id(msg))
        stream.add(self._stamp(message, header_stamp_us(msg), stream.clock), *image_payload(msg))

    def _intrinsics(self, channel: str, message: McapMessage) -> None:
        if channel not in self.intrinsics:  # the first one; later ones are not decoded
            self.intrinsics[channel] = intrinsics(message.decoded())

    def _cloud(self, channel: str, message: McapMessage) -> None:
        msg = message.decoded()
        stream = self.lidars[channel]
        self.sensor_frames.setdefault(channel, self.map.lidars[channel].frame_id or frame_id(msg))
        stream.add(self._stamp(message, header_stamp_us(msg), stream.clock), point_cloud(msg))

    def _pose(self, message: McapMessage) -> None:
        msg = message.decoded()
        if is_transform_message(msg):  # links of the chain map -> ... -> ego, composed in finish
            for transform in transforms(msg):
                self.pose_chain.add(transform, message.log_time_ns // 1000)
            return
        for stamp, position, rotation in poses(msg, self.map.ego_frame):
            self.pose.add(self._stamp(message, stamp, self.pose.clock), position, rotation)

    def _static(self, message: McapMessage) -> None:
        for transform in transforms(message.decoded()):
            self.static.add(transform)

    def _can_frame(self, message: McapMessage) -> None:
        msg = message.decoded()
        clock = self.topic_clocks[message.topic]
        stamp = self._stamp(message, header_stamp_us(msg), clock)
        clock.accept(stamp)
        self.signals.on_frame(*can_frame(msg), stamp)

    def _can_signals(self, message: McapMessage) -> None:
        msg = message.decoded()
        clock = self.topic_clocks[message.topic]
        stamp = self._stamp(message, header_stamp_us(msg), clock)
        clock.accept(stamp)
        self.signals.on_message(message.topic, msg, stamp)

    def finish(self, log_id: str, summaries, source_format: str = "mcap") -> tuple[fmt.LogManifest, dict]:
        """Close the streams and write calibration, pose, ingest.json and (last) the manifest."""
        if self.pose_chain.links or not len(self.pose.clock.times):  # the pose came from TF
            for stamp, position, rotation in zip(*self.pose_chain.poses()):
                self.pose.add(int(stamp), tuple(position), tuple(rotation))
            self.pose.clock.from_log_time += self.pose_chain.from_log_time
            self.pose.clock.duplicates += self.pose_chain.duplicates
        for stream in (*self.cameras.values(), *self.lidars.values()):
            stream.close()
        self.can_table.close()
        if not len(self.can_table.clock.times):
            raise IngestError(f"no CAN rows: the speed_mps source gave no message after every mapped signal had a "
                              f"value (still without one: {sorted(self.signals.waiting)})")
        if not len(self.pose.clock.times):
            raise IngestError(f"topic {self.map.pose.topic} (pose): no pose of {self.map.ego_frame!r} "
                              f"in {self.map.map_frame!r}")
        calibration = {c: self._camera_calibration(c).to_json() for c in self.cameras}
        calibration |= {c: self._lidar_calibration(c).to_json() for c in self.lidars}
        (self.log_dir / fmt.CALIBRATION).write_text(json.dumps(calibration, indent=2))
        shift = self.pose.write(self.log_dir / fmt.POSE, MAP_MARGIN_M)
        streams = {f"camera {c}": s.clock for c, s in self.cameras.items()}
        streams |= {f"lidar {c}": s.clock for c, s in self.lidars.items()}
        streams |= {"pose": self.pose.clock, "can": self.can_table.clock}
        first = min(c.times[0] for c in streams.values() if len(c.times))
        last = max(c.times[-1] for c in streams.values() if len(c.times))
        manifest = fmt.LogManifest(
            log_id=log_id, vehicle=self.map.vehicle, location=self.map.location, start_time_us=first,
            duration_us=max(last - first, 1), channels=tuple(self.cameras), camera_hz=max(self.camera_rates.values()),
            lidar_channels=tuple(self.lidars), camera_rates_hz=dict(self.camera_rates),
        )
        report = {
            "source_format": source_format,
            "files": [_file_entry(s) for s in summaries],
            "file_gaps": _file_gaps(summaries),
            "camera_rates_hz": self.camera_rates,
            "streams": {name: clock.stats() for name, clock in streams.items()},
            "signal_topics_stamped_by_log_time": {t: c.from_log_time for t, c in self.topic_clocks.items() if c.from_log_time},
            "videos": {c: {"source": s.video.kind, "codec": s.video.codec, "frames": s.video.frames,
                           "reencoded": s.video.reencoded,
                           "dropped_waiting_for_keyframe": s.video.dropped_waiting_for_keyframe} for c, s in self.cameras.items()},
            "gaps": _stream_gaps(streams),
            "map_origin": {"frame": self.map.map_frame, "x": -shift[0], "y": -shift[1], "z": 0.0},
            "pose_chain": self.pose_chain.report or None,
            "can_defaults": self.signals.defaults,
            "can_rows_before_every_signal": self.signals.rows_waiting,
            "topic_map": self.map.model_dump(mode="json"),
        }
        (self.log_dir / INGEST_REPORT).write_text(json.dumps(report, indent=2))
        (self.log_dir / fmt.MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2))
        return manifest, report

    def _mounting(self, channel: str) -> tuple[tuple, tuple]:
        frame = self.sensor_frames.get(channel, "")
        if not frame:
            raise IngestError(f"{channel}: its messages name no frame_id; give frame_id in the topic map")
        mounting = self.static.pose_in(frame, self.map.ego_frame)
        if mounting is None:
            raise IngestError(f"{channel}: no static transform from {self.map.ego_frame!r} to {frame!r} on "
                              f"{self.map.tf_static} ({len(self.static)} static transforms seen)")
        return mounting

    def _camera_calibration(self, channel: str) -> CameraCalibration:
        topics = self.map.cameras[channel]
        lens = self.intrinsics.get(channel)
        if lens is None:
            raise IngestError(f"topic {topics.calibration} (calibration of {channel}): no message")
        size = self.cameras[channel].video.size
        if size is None:
            raise IngestError(f"topic {topics.topic} (camera {channel}): no frame that can be decoded "
                              f"({self.cameras[channel].video.dropped_waiting_for_keyframe} before a keyframe)")
        if size != (lens.width, lens.height):
            raise IngestError(f"topic {topics.calibration}: {channel} is calibrated for {lens.width}x{lens.height} "
                              f"images but topic {topics.topic} has {size[0]}x{size[1]} ones")
        translation, rotation = self._mounting(channel)
        return CameraCalibration(channel=channel, width=lens.width, height=lens.height, intrinsic=lens.matrix,
                                 distortion=lens.distortion, translation=translation, rotation=rotation)

    def _lidar_calibration(self, channel: str) -> fmt.LidarCalibration:
        translation, rotation = self._mounting(channel)
        return fmt.LidarCalibration(channel=channel, translation=translation, rotation=rotation)


def _stream_gaps(streams: dict[str, Clock]) -> list[dict]:
    limits = {"can": MAX_CAN_GAP_S, "pose": MAX_POSE_GAP_S}
    return [{"stream": name, **gap} for name, clock in streams.items() for gap in gaps(clock.times, limits.get(name))]


def _file_entry(summary) -> dict:
    return {"name": summary.path.name, "bytes": summary.path.stat().st_size,
            "start_us": summary.start_ns // 1000 if summary.start_ns is not None else None,
            "end_us": summary.end_ns // 1000 if summary.end_ns is not None else None,
            "messages": sum(summary.topic_counts.values()) if summary.topic_counts else None}


def _file_gaps(summaries) -> list[dict]:
    """Stretches of log time no file covers, between the files' own time ranges (µs)."""
    spans = sorted((s.start_ns // 1000, s.end_ns // 1000, s.path.name) for s in summaries if s.start_ns is not None)
    out, covered_to, last_name = [], None, None
    for start, end, name in spans:
        if covered_to is not None and start > covered_to:
            out.append({"after": last_name, "before": name, "start_us": covered_to, "end_us": start,
                        "seconds": round((start - covered_to) / 1e6, 6)})
        if covered_to is None or end > covered_to:
            covered_to, last_name = end, name
    return out
