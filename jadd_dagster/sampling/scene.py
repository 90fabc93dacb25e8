"""Sample one scene end to end: select, decode and write its frames, then its record.

Each camera's frames are selected at its own rate (the log's manifest, rate_hz). A camera whose
images were stored as recorded JPEGs (codec mjpeg) and whose frames the profile keeps as they are
(no resize, no undistortion of a distorted lens: FrameEncoder.luma is None) gets the recorded
JPEG files, copied: nothing is decoded or encoded, and jpeg_quality does not apply. Otherwise each
frame is decoded once and encoded once.

The output folder follows jadd_dagster.scene_record; scene.json is written last and is the
completion marker, so a folder without it is an interrupted attempt and is simply redone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
import pandas as pd

from jadd_dagster.camera import CameraCalibration

from jadd_dagster.sampling.decode import (
    DecodeStats,
    decode_frames,
    jpeg_has_huffman_tables,
    read_packets,
    sampling_threads,
    video_codec,
)
from jadd_dagster.sampling.encode import frame_encoder
from jadd_dagster.sampling.frames import (
    MissingKeyframes,
    SamplingError,
    SamplingProfile,
    Selection,
    select_frames,
    target_times,
)
from jadd_dagster.scene_record import SCENE_CAN, SCENE_JSON, SCENE_POSE, EgoPose, FrameRecord, SceneRecord


@dataclass
class SamplingStats:
    """What sampling one scene cost. Seconds are wall time in this process.

    decode_s: inside the decoder (demux, seek, decode); encode_s: colour conversion, remap and
    JPEG encoding; write_s: writing files (with threads > 1, encode_s and write_s add up the
    encoding threads' times); frames: JPEGs written; copied: of those, recorded JPEGs written as
    they are (neither decoded nor encoded); decoded: frames out of the decoder; not_decoded:
    packets no wanted frame needed, never decoded; threads: decoder and encoder threads used.
    """

    scene_id: str
    frames: int = 0
    copied: int = 0
    keyframes: int = 0
    sweeps: int = 0
    decoded: int = 0
    not_decoded: int = 0
    seeks: int = 0
    threads: int = 1
    decode_s: float = 0.0
    encode_s: float = 0.0
    write_s: float = 0.0
    decode_cpu_s: float = 0.0
    encode_cpu_s: float = 0.0
    write_cpu_s: float = 0.0
    wall_s: float = 0.0
    per_channel: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# The shortest run of one camera's frames worth a decoder of its own (see _pieces).
MIN_PIECE_FRAMES = 4
_SUMMED = (
    "frames", "copied", "decoded", "not_decoded", "seeks", "decode_s", "encode_s", "write_s", "decode_cpu_s", "encode_cpu_s",
    "write_cpu_s",
)


def sample_scene(
    log,
    scene_index: int,
    start_us: int,
    end_us: int,
    profile: SamplingProfile,
    out_dir: Path,
    scene_id: str,
    threads: int | None = None,
) -> SceneRecord:
    """Write the scene [start_us, end_us) of a drive log into out_dir and return its record.

    log is a logs.reader.DriveLog (or anything with its interface); out_dir is the scene's own
    folder. Frames in the record are grouped by channel (profile order), each in time order.
    Raises SamplingError, before anything is decoded, if a channel is missing or cannot give a
    frame for every keyframe. sample_scene_timed does the same and also returns SamplingStats.

    threads: CPU threads to use (None: sampling_threads(), the CPUs this process may use). With
    more than one, the scene's frames are cut into pieces (by camera, and runs of a camera's
    frames, see _pieces) that threads decode and encode side by side; a piece that has more than
    one thread to itself decodes frame-threaded while a pool encodes. The files are the same
    bytes as with one thread.
    """
    return sample_scene_timed(log, scene_index, start_us, end_us, profile, out_dir, scene_id, threads)[0]


def sample_scene_timed(
    log,
    scene_index: int,
    start_us: int,
    end_us: int,
    profile: SamplingProfile,
    out_dir: Path,
    scene_id: str,
    threads: int | None = None,
) -> tuple[SceneRecord, SamplingStats]:
    """sample_scene, and what it cost (SamplingStats)."""
    wall = time.perf_counter()
    threads = sampling_threads() if threads is None else max(1, int(threads))
    out_dir = Path(out_dir)
    manifest = log.manifest
    for channel in profile.channels:
        if channel not in manifest.channels or channel not in log.calibration:
            raise SamplingError(f"scene {scene_id}: log {manifest.log_id} has no camera {channel}")
    keyframe_times = target_times(start_us, end_us, profile.keyframe_hz)
    if keyframe_times.size == 0:
        raise SamplingError(f"scene {scene_id}: empty time range [{start_us}, {end_us})")

    timestamps = {c: np.asarray(log.frame_timestamps(c), dtype=np.int64) for c in profile.channels}
    selections = {c: _select(log, c, timestamps[c], start_us, end_us, profile, scene_id) for c in profile.channels}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SCENE_JSON).unlink(missing_ok=True)  # an earlier record no longer describes the folder
    stats = SamplingStats(scene_id=scene_id, threads=threads)
    cameras: dict[str, dict] = {}
    frames: list[FrameRecord] = []
    pieces = _pieces(selections, threads)
    inner_threads = max(1, threads // len(pieces))

    def write_piece(piece: tuple[str, list[Selection]]) -> tuple[CameraCalibration, list[FrameRecord], dict]:
        channel, selected = piece
        return _write_channel(log, channel, selected, len(timestamps[channel]), profile, out_dir, scene_id, inner_threads)

    if len(pieces) == 1:
        written = [write_piece(pieces[0])]
    else:
        with ThreadPoolExecutor(min(threads, len(pieces)), thread_name_prefix="jadd-sampling") as pool:
            written = list(pool.map(write_piece, pieces))
    for (channel, _), (calib, piece_frames, piece_stats) in zip(pieces, written):
        cameras[channel] = calib.to_json()
        frames.extend(piece_frames)
        channel_stats = stats.per_channel.setdefault(channel, dict.fromkeys(piece_stats, 0))
        for name, value in piece_stats.items():
            channel_stats[name] += value
        for name in _SUMMED:
            setattr(stats, name, getattr(stats, name) + piece_stats[name])
    stats.keyframes = sum(f.is_key_frame for f in frames)
    stats.sweeps = len(frames) - stats.keyframes

    t = time.perf_counter()
    _write_parquet(_time_slice(log.can(), start_us, end_us), out_dir / SCENE_CAN)
    _write_parquet(_time_slice(log.pose(), start_us, end_us), out_dir / SCENE_POSE)
    record = SceneRecord(
        scene_id=scene_id,
        log_id=manifest.log_id,
        scene_index=scene_index,
        location=manifest.location,
        vehicle=manifest.vehicle,
        date_captured=manifest.date_captured,
        log_start_time_us=manifest.start_time_us,
        start_time_us=int(start_us),
        end_time_us=int(end_us),
        profile=profile.key(),
        keyframe_hz=float(profile.keyframe_hz),
        sweep_hz=float(profile.sweep_hz),
        cameras=cameras,
        keyframe_times_us=[int(v) for v in keyframe_times],
        frames=frames,
        camera_rates_hz={c: float(manifest.rate_hz(c)) for c in profile.channels},
    )
    record.save(out_dir)
    stats.write_s += time.perf_counter() - t
    stats.wall_s = time.perf_counter() - wall
    return record, stats


def _select(
    log, channel: str, timestamps: np.ndarray, start_us: int, end_us: int, profile: SamplingProfile, scene_id: str
) -> list[Selection]:
    try:
        return select_frames(
            timestamps, start_us, end_us, profile.keyframe_hz, profile.sweep_hz, source_hz=log.manifest.rate_hz(channel)
        )
    except MissingKeyframes as err:
        covered = f"{timestamps[0]}..{timestamps[-1]} µs" if len(timestamps) else "no frames"
        raise SamplingError(
            f"scene {scene_id}: {channel} has no frame within {err.max_offset_us} µs of keyframe time "
            f"{err.times_us[0]} µs ({len(err.times_us)} keyframe(s) missing; video covers {covered})"
        ) from err


def _pieces(selections: dict[str, list[Selection]], threads: int) -> list[tuple[str, list[Selection]]]:
    """The scene's frames as (channel, frames) pieces for threads to write side by side, in the
    record's order (channels in profile order, each in time order).

    A piece is decoded by a decoder of its own from the keyframe at or before its first frame, as a
    scene is, so its frames are the same bytes whichever thread decodes them, and the threads do
    not wait for each other (one frame-threaded decoder feeding an encode pool got 1.4x on 2 cores
    at 2 Hz). Each camera is one piece when there are at least as many cameras as threads;
    otherwise each camera's frames are cut into runs of equal length, so that there are as many
    pieces as threads. A cut inside a group of pictures decodes its head twice: at most one GOP
    more per cut. A run is at least MIN_PIECE_FRAMES frames.
    """
    cuts = 1 if threads < 2 else -(-threads // max(1, len(selections)))
    pieces = []
    for channel, selected in selections.items():
        parts = max(1, min(cuts, len(selected) // MIN_PIECE_FRAMES))
        bounds = [round(i * len(selected) / parts) for i in range(parts + 1)]
        pieces.extend((channel, selected[lo:hi]) for lo, hi in zip(bounds, bounds[1:]))
    return pieces


def _write_channel(
    log,
    channel: str,
    selections: list[Selection],
    frame_count: int,
    profile: SamplingProfile,
    out_dir: Path,
    scene_id: str,
    threads: int = 1,
) -> tuple[CameraCalibration, list[FrameRecord], dict]:
    """Write one camera's selected frames, copied or decoded and encoded (see the module
    docstring): (output calibration, FrameRecords, stats)."""
    encoder = frame_encoder(log.calibration[channel], profile.image_size, profile.undistort, profile.jpeg_quality)
    out_calib = encoder.out_calib
    video, rate_hz = log.video_path(channel), log.manifest.rate_hz(channel)
    folder = out_dir / channel
    folder.mkdir(parents=True, exist_ok=True)
    by_index = {s.frame_index: s for s in selections}
    decode = DecodeStats()
    seconds = np.zeros(4)  # encode wall, write wall, encode CPU, write CPU

    def write(index: int, frame) -> np.ndarray:
        t0, c0 = time.perf_counter(), time.thread_time()
        jpeg = encoder.encode(frame)
        t1, c1 = time.perf_counter(), time.thread_time()
        _write_atomic(folder / f"{by_index[index].timestamp_us}.jpg", jpeg)
        return np.array([t1 - t0, time.perf_counter() - t1, c1 - c0, time.thread_time() - c1])

    def done(times: np.ndarray) -> None:
        seconds[:] += times

    copied = 0
    try:
        if encoder.luma is None and video_codec(video) == "mjpeg":
            copied = _copy_jpegs(read_packets(video, list(by_index), frame_count, rate_hz, decode), write, done,
                                 lambda index, jpeg: _write_atomic(folder / f"{by_index[index].timestamp_us}.jpg", jpeg))
        else:
            frames = decode_frames(video, list(by_index), frame_count, rate_hz, decode, threads=threads)
            if threads == 1:
                for index, frame in frames:
                    done(write(index, frame))
            else:
                _write_in_pool(frames, write, done, threads)
    except SamplingError as err:
        raise SamplingError(f"scene {scene_id}: {channel}: {err}") from err

    translations, rotations = log.pose_at(np.array([s.timestamp_us for s in selections], dtype=np.int64))
    records = [
        FrameRecord(
            channel=channel,
            timestamp_us=s.timestamp_us,
            is_key_frame=s.is_key_frame,
            keyframe_index=s.keyframe_index,
            path=f"{channel}/{s.timestamp_us}.jpg",
            width=out_calib.width,
            height=out_calib.height,
            ego_pose=EgoPose(
                translation=tuple(float(v) for v in translations[i]),  # type: ignore[arg-type]
                rotation=tuple(float(v) for v in rotations[i]),  # type: ignore[arg-type]
            ),
        )
        for i, s in enumerate(selections)
    ]
    stats = {
        "frames": len(selections),
        "copied": copied,
        "decoded": decode.decoded,
        "not_decoded": decode.not_decoded,
        "seeks": decode.seeks,
        "decode_s": decode.seconds,
        "encode_s": float(seconds[0]),
        "write_s": float(seconds[1]),
        "decode_cpu_s": decode.cpu_seconds,
        "encode_cpu_s": float(seconds[2]),
        "write_cpu_s": float(seconds[3]),
    }
    return out_calib, records, stats


def _copy_jpegs(packets, write, done, copy) -> int:
    """copy(index, jpeg) for each recorded JPEG (index, bytes) that is a JPEG file of its own; one
    without Huffman tables (motion JPEG relying on the decoder's defaults) is decoded and
    encoded instead: write(index, frame), its times to done. Returns how many were copied."""
    copied, decoder = 0, None
    for index, jpeg in packets:
        if jpeg_has_huffman_tables(jpeg):
            t0, c0 = time.perf_counter(), time.thread_time()
            copy(index, jpeg)
            done(np.array([0.0, time.perf_counter() - t0, 0.0, time.thread_time() - c0]))
            copied += 1
            continue
        decoder = decoder or av.CodecContext.create("mjpeg", "r")
        try:
            frames = decoder.decode(av.Packet(jpeg))
        except av.FFmpegError as error:
            raise SamplingError(f"frame {index}: not a decodable JPEG ({error})") from None
        if len(frames) != 1:
            raise SamplingError(f"frame {index}: not a decodable JPEG")
        done(write(index, frames[0]))
    return copied


def _write_in_pool(frames, write, done, threads: int) -> None:
    """write(index, frame) for each decoded frame on a pool of threads while the decoder goes on;
    done(result) in frame order. At most 2 x threads frames wait, so memory stays bounded.

    Decoding (PyAV), remapping (OpenCV) and JPEG encoding (simplejpeg) release the GIL, so the
    threads run on separate cores; each frame's bytes do not depend on which thread made them.
    """
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="jadd-sampling") as pool:
        try:
            for index, frame in frames:
                pending.append(pool.submit(write, index, frame))
                while len(pending) > 2 * threads:
                    done(pending.popleft().result())
            while pending:
                done(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()


def _time_slice(table: pd.DataFrame, start_us: int, end_us: int) -> pd.DataFrame:
    """Rows with start <= t < end, plus one row either side so the window can be interpolated."""
    t = table["timestamp_us"].to_numpy()
    lo = max(int(np.searchsorted(t, start_us, side="left")) - 1, 0)
    hi = min(int(np.searchsorted(t, end_us, side="left")) + 1, len(t))
    return table.iloc[lo:hi].reset_index(drop=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)
