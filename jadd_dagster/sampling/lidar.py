"""Add a log's LIDAR_TOP sweeps to a sampled scene: one point cloud per keyframe, no sweeps.

The scene folder gets LIDAR_TOP/<timestamp_us>.pcd.bin (the log's sweeps, checked and written
anew, never linked: checked_point_cloud), and its SceneRecord gets the LIDAR_TOP frames (width and height 0) and the
lidar's calibration under cameras["LIDAR_TOP"] ({channel, translation, rotation}, no intrinsic).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jadd_dagster.logs.format import LIDAR_POINT_DIMS
from jadd_dagster.logs.sweeps import CHANNEL
from jadd_dagster.scene_record import EgoPose, FrameRecord, SceneRecord

MAX_OFFSET_US = 25_000  # a keyframe takes the nearest sweep no further than this (half a 20 Hz period)


def checked_point_cloud(log_root: Path, path: Path) -> bytes:
    """The bytes of a log's .pcd.bin sweep, checked: no symbolic link on the way from the log's
    folder to the file (a link could lend the dataset a file from outside the log), a whole number
    of LIDAR_POINT_DIMS float32 points, at least one, all finite. ValueError naming the file."""
    log_root, path = Path(log_root), Path(path)
    relative = path.relative_to(log_root)
    current = log_root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise ValueError(f"{relative}: a symbolic link in the log ({current.relative_to(log_root)}); refused")
    data = path.read_bytes()
    point_bytes = LIDAR_POINT_DIMS * 4
    if not data or len(data) % point_bytes:
        raise ValueError(f"{relative}: {len(data)} bytes is not a whole number of {LIDAR_POINT_DIMS}-float points")
    if not np.isfinite(np.frombuffer(data, dtype=np.float32)).all():
        raise ValueError(f"{relative}: non-finite point values")
    return data


def nearest_sweeps(sweep_times_us: np.ndarray, keyframe_times_us: list[int], max_offset_us: int = MAX_OFFSET_US) -> list[int]:
    """For each keyframe time (µs), the nearest sweep time (µs); raises ValueError when one has no
    sweep within max_offset_us."""
    stamps = np.sort(np.asarray(sweep_times_us, dtype=np.int64))
    if len(stamps) == 0:
        raise ValueError("the log has no sweeps")
    chosen = []
    for t in keyframe_times_us:
        i = int(np.searchsorted(stamps, t))
        candidates = [int(stamps[j]) for j in (i - 1, i) if 0 <= j < len(stamps)]
        best = min(candidates, key=lambda s: (abs(s - t), s))
        if abs(best - t) > max_offset_us:
            raise ValueError(f"no {CHANNEL} sweep within {max_offset_us} µs of keyframe {t} (nearest {best})")
        chosen.append(best)
    return chosen


def add_lidar_frames(log, record: SceneRecord, out_dir: Path, channel: str = CHANNEL) -> SceneRecord:
    """The record with channel's keyframe sweeps added, their files placed in out_dir (the scene
    folder) and scene.json rewritten. log is a logs.reader.DriveLog with that lidar; a record that
    already has the channel is returned with its frames replaced. Raises KeyError when the log has no
    such lidar and ValueError when a keyframe has no sweep within MAX_OFFSET_US."""
    out_dir = Path(out_dir)
    calibration = log.lidar_calibration[channel]
    stamps = nearest_sweeps(log.lidar_timestamps(channel), [int(t) for t in record.keyframe_times_us])
    translations, rotations = log.pose_at(np.asarray(stamps, dtype=np.int64))
    (out_dir / channel).mkdir(parents=True, exist_ok=True)
    frames = []
    for index, (stamp, translation, rotation) in enumerate(zip(stamps, translations, rotations)):
        path = f"{channel}/{stamp}.pcd.bin"
        (out_dir / path).write_bytes(checked_point_cloud(log.path, log.lidar_sweep_path(channel, stamp)))
        pose = EgoPose(tuple(float(v) for v in translation), tuple(float(v) for v in rotation))
        frames.append(FrameRecord(channel, stamp, True, index, path, 0, 0, pose))
    updated = dataclasses.replace(
        record,
        cameras={**record.cameras, channel: calibration.to_json()},
        frames=[f for f in record.frames if f.channel != channel] + frames,
    )
    updated.save(out_dir)
    return updated
