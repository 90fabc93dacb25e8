"""The parts of a log written while the messages stream by: cameras, lidars, pose and CAN.

Each stream keeps its messages' times (µs, int64, 8 bytes a message) for the timestamps files and
the gap report; video frames and lidar sweeps go to disk as they come, CAN rows in row groups of
CAN_ROW_GROUP; only the pose (64 bytes a row, ≈12 MB for an hour at 50 Hz) waits in memory for
its map origin. Memory does not grow with the size of the images or point clouds.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jadd_dagster.ingest.messages import MessageError
from jadd_dagster.ingest.video import CameraVideo
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.reader import CAN_DTYPES

CAN_ROW_GROUP = 50_000
# A camera step longer than this many frame periods means frames were lost.
LOST_FRAME_STEPS = 1.5
# A gap: a step between two messages of a stream longer than this many of its median steps (the
# scene catalog uses the same rule for CAN and pose: scenes.MAX_CAN_GAP_S, MAX_POSE_GAP_S).
GAP_PERIODS = 10


class Clock:
    """A stream's message times: a time before the previous one is out of order (MessageError);
    with strict, a repeat of the previous time is a duplicate (say so by returning False)."""

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.times = array("q")
        self.duplicates = 0
        self.from_log_time = 0

    def accept(self, stamp_us: int) -> bool:
        last = self.times[-1] if self.times else None
        if last is not None and stamp_us < last:
            raise MessageError(f"out of order: time {stamp_us} µs is before the previous message's {last} µs")
        if self.strict and stamp_us == last:
            self.duplicates += 1
            return False
        self.times.append(stamp_us)
        return True

    def stats(self) -> dict:
        t = self.times
        return {"messages": len(t), "first_us": t[0] if t else None, "last_us": t[-1] if t else None,
                "duplicates_dropped": self.duplicates, "stamps_from_log_time": self.from_log_time}


def gaps(times: array, max_step_s: float | None = None) -> list[dict]:
    """Steps between consecutive times (µs) longer than max_step_s, or than GAP_PERIODS median
    steps: [{start_us, end_us, seconds}]."""
    t = np.frombuffer(times, dtype=np.int64) if len(times) else np.zeros(0, dtype=np.int64)
    if len(t) < 2:
        return []
    steps = np.diff(t)
    limit_us = max_step_s * 1e6 if max_step_s is not None else GAP_PERIODS * float(np.median(steps))
    return [{"start_us": int(t[i]), "end_us": int(t[i + 1]), "seconds": round(float(steps[i]) / 1e6, 6)}
            for i in np.flatnonzero(steps > limit_us)]


def write_timestamps(path: Path, times: array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    column = pa.array(np.frombuffer(times, dtype=np.int64) if len(times) else [], type=pa.int64())
    pq.write_table(pa.table({"timestamp_us": column}), path)


class CameraStream:
    """A camera topic into cameras/<CHANNEL>.mp4 and its timestamps file."""

    def __init__(self, log_dir: Path, channel: str, camera_hz: int, crf: int):
        self.log_dir = log_dir
        self.channel = channel
        self.clock = Clock()
        self.period_us = 1e6 / camera_hz
        self.video = CameraVideo(log_dir / fmt.video_file(channel), camera_hz, crf)

    def add(self, stamp_us: int, image_format: str, data: bytes) -> None:
        last = self.clock.times[-1] if self.clock.times else None
        if not self.clock.accept(stamp_us):
            return
        if last is not None and stamp_us - last > LOST_FRAME_STEPS * self.period_us:
            self.video.frames_lost()
        if not self.video.add(image_format, data):
            self.clock.times.pop()  # a frame the video cannot decode: no row

    def close(self) -> None:
        self.video.close()
        write_timestamps(self.log_dir / fmt.timestamps_file(self.channel), self.clock.times)


class LidarStream:
    """A point-cloud topic into lidar/<CHANNEL>/<µs>.pcd.bin sweeps and their timestamps file."""

    def __init__(self, log_dir: Path, channel: str):
        self.log_dir = log_dir
        self.channel = channel
        self.clock = Clock()
        self.points = 0

    def add(self, stamp_us: int, points: np.ndarray) -> None:
        if not self.clock.accept(stamp_us):
            return
        path = self.log_dir / fmt.lidar_sweep_file(self.channel, stamp_us)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.ascontiguousarray(points, dtype=np.float32).tofile(path)
        self.points += len(points)

    def close(self) -> None:
        write_timestamps(self.log_dir / fmt.lidar_timestamps_file(self.channel), self.clock.times)


class PoseStream:
    """Ego poses, written to pose.parquet shifted so that x and y are at least margin_m (the
    format's map frame has x, y >= 0; the devkit's map mask starts at the origin)."""

    def __init__(self):
        self.clock = Clock()
        self._values = array("d")  # x, y, z, qw, qx, qy, qz per row

    def add(self, stamp_us: int, position: tuple, rotation: tuple) -> None:
        values = (*position, *rotation)
        if not all(np.isfinite(values)):
            raise MessageError(f"pose {values} is not finite")
        if self.clock.accept(stamp_us):
            self._values.extend(values)

    def write(self, path: Path, margin_m: float) -> tuple[float, float]:
        """Write pose.parquet; returns the shift (dx, dy) in metres added to x and y."""
        values = np.frombuffer(self._values, dtype=np.float64).reshape(-1, 7)
        shift = (margin_m - float(values[:, 0].min()), margin_m - float(values[:, 1].min()))
        table = pd.DataFrame(values, columns=list(fmt.POSE_COLUMNS[1:]))
        table["x"] += shift[0]
        table["y"] += shift[1]
        table.insert(0, "timestamp_us", np.frombuffer(self.clock.times, dtype=np.int64))
        table.to_parquet(path, index=False)
        return shift


class CanTable:
    """CAN rows (fmt.CAN_COLUMNS with reader.CAN_DTYPES) appended one at a time into can.parquet."""

    def __init__(self, path: Path):
        self.path = path
        self.clock = Clock()
        self._rows: list[tuple] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema = pa.schema([(c, pa.from_numpy_dtype(np.dtype(CAN_DTYPES[c]))) for c in fmt.CAN_COLUMNS])

    def add(self, stamp_us: int, values: dict[str, float]) -> None:
        if self.clock.accept(stamp_us):
            self._rows.append((stamp_us, *(values[c] for c in fmt.CAN_COLUMNS[1:])))
            if len(self._rows) >= CAN_ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        frame = pd.DataFrame(self._rows, columns=list(fmt.CAN_COLUMNS)).astype(CAN_DTYPES)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self._schema)
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False))
        self._rows.clear()

    def close(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
