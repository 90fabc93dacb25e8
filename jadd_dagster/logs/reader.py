"""Opening a raw drive log (logs/format.py): cheap validation first, then typed access.

Validation reads the JSON files, parquet schemas and timestamp columns, and of each video that is
on this machine only its container header (its frame size must be the calibration's); never the
frames or the lidar sweeps (only that the first and last sweep files exist), so a sensor can
afford it for every new log. Each problem names the log folder, the file and the field.
objects.parquet and the lidar are optional: a log without them is valid. Calibrations must be
plausible (camera.implausible_fields): finite, bounded, and a lens that rectifies.

A log is known by its folder: opened from the store (logs/stored.py), its manifest's log_id must
be the folder's name, so two folders can never claim one id.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jadd_dagster.camera import DISTORTION_MODEL, MAX_MOUNT_OFFSET_M, CameraCalibration, implausible_fields
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.tracks import Boxes, Tracks

# Column dtypes of DriveLog.can() and DriveLog.pose(), whatever integer/float widths the files use.
CAN_DTYPES = {
    "timestamp_us": "int64", "speed_mps": "float64", "steering_deg": "float64", "accel_mps2": "float64",
    "brake": "float64", "throttle": "float64", "yaw_rate_rps": "float64", "gear": "int8", "turn_signal": "int8",
}
POSE_DTYPES = {"timestamp_us": "int64", **{c: "float64" for c in fmt.POSE_COLUMNS[1:]}}
OBJECT_DTYPES = {
    "instance_id": "object", "category": "object", "timestamp_us": "int64",
    **{c: "float64" for c in ("x", "y", "z", "yaw", "width", "length", "height", "vx", "vy")}, "attribute": "object",
}
MANIFEST_KEYS = ("log_id", "vehicle", "location", "start_time_us", "duration_us", "channels")
# Log ids become partition keys and path parts (scene ids are "<log_id>/<index>").
LOG_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CHANNEL_PATTERN = re.compile(r"[A-Z0-9_]+")  # nuScenes-style names; they are file names too


class LogFormatError(ValueError):
    """A log folder that breaks the raw log format; the message names the folder and the file."""


@dataclass(frozen=True)
class DriveLog:
    """An opened, validated log. Tables are read on demand; the pose and the objects are kept for
    pose_at and objects_at. calibration has the cameras, lidar_calibration the lidars."""

    path: Path
    manifest: fmt.LogManifest
    calibration: dict[str, CameraCalibration]
    lidar_calibration: dict[str, fmt.LidarCalibration] = field(default_factory=dict)

    def can(self) -> pd.DataFrame:
        """CAN rows sorted by timestamp_us, columns fmt.CAN_COLUMNS with CAN_DTYPES."""
        return _read_table(self.path / fmt.CAN, CAN_DTYPES)

    def pose(self) -> pd.DataFrame:
        """Ego poses sorted by timestamp_us, columns fmt.POSE_COLUMNS with POSE_DTYPES."""
        return _read_table(self.path / fmt.POSE, POSE_DTYPES)

    def frame_timestamps(self, channel: str) -> np.ndarray:
        """Timestamps (µs, int64) of a camera's frames, one per frame in decode order."""
        table = pq.read_table(self.path / fmt.timestamps_file(self._known(channel)), columns=["timestamp_us"])
        return table.column("timestamp_us").to_numpy().astype(np.int64)

    def video_path(self, channel: str) -> Path:
        """A camera's video: H.264, or its JPEG / PNG images as recorded (logs/format.py)."""
        return self.path / fmt.video_file(self._known(channel))

    def camera_hz(self, channel: str) -> int:
        """A camera's frame rate (Hz): the constant-rate grid of its video's pts."""
        return self.manifest.rate_hz(self._known(channel))

    def pose_at(self, timestamps_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego translations (N, 3) metres and rotations (N, 4) [w, x, y, z] at the given µs times.

        Linear interpolation between the neighbouring pose rows (normalised lerp of the
        quaternions, which is within 1e-4 rad of slerp at 50 Hz); times outside the pose
        table get the first or last pose.
        """
        t, translations, rotations = self._pose_arrays
        ts = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
        if len(t) == 1:
            return np.repeat(translations, len(ts), axis=0), np.repeat(rotations, len(ts), axis=0)
        i = np.clip(np.searchsorted(t, ts, side="right") - 1, 0, len(t) - 2)
        w = np.clip((ts - t[i]) / (t[i + 1] - t[i]), 0.0, 1.0)[:, None]
        trans = translations[i] * (1 - w) + translations[i + 1] * w
        q0, q1 = rotations[i], rotations[i + 1]
        q1 = np.where(np.sum(q0 * q1, axis=1, keepdims=True) < 0, -q1, q1)  # the shorter way round
        q = q0 * (1 - w) + q1 * w
        return trans, q / np.linalg.norm(q, axis=1, keepdims=True)

    def objects(self) -> pd.DataFrame | None:
        """Ground-truth object rows (fmt.OBJECT_COLUMNS with OBJECT_DTYPES) sorted by instance_id
        then timestamp_us, or None when the log has no objects.parquet."""
        return self._objects.table.copy() if self._objects is not None else None

    def objects_at(self, timestamp_us: int) -> pd.DataFrame:
        """The boxes of the objects that exist at timestamp_us (µs; rows of fmt.OBJECT_COLUMNS with
        that timestamp_us): centre, size and velocity interpolated linearly between the object's
        neighbouring samples, yaw the shorter way round. Empty when the log has no objects."""
        if self._objects is None:
            return pd.DataFrame({c: pd.Series(dtype=d) for c, d in OBJECT_DTYPES.items()})
        return self._objects.at(int(timestamp_us)).to_frame(int(timestamp_us)).astype(OBJECT_DTYPES)

    def boxes_at(self, timestamp_us: int) -> Boxes | None:
        """The objects at timestamp_us as arrays (logs.tracks.Boxes, map frame; the rows of
        objects_at in the same order), or None when the log has no objects."""
        return self._objects.at(int(timestamp_us)) if self._objects is not None else None

    def lidar_timestamps(self, channel: str) -> np.ndarray:
        """Timestamps (µs, int64) of a lidar's sweeps, in order."""
        table = pq.read_table(self.path / fmt.lidar_timestamps_file(self._known_lidar(channel)), columns=["timestamp_us"])
        return table.column("timestamp_us").to_numpy().astype(np.int64)

    def lidar_sweep_path(self, channel: str, timestamp_us: int) -> Path:
        return self.path / fmt.lidar_sweep_file(self._known_lidar(channel), timestamp_us)

    def lidar_sweep(self, channel: str, timestamp_us: int) -> np.ndarray:
        """A sweep's points (N, fmt.LIDAR_POINT_DIMS) float32 in the sensor frame: x, y, z metres,
        intensity, ring index."""
        data = np.fromfile(self.lidar_sweep_path(channel, timestamp_us), dtype=np.float32)
        return data.reshape(-1, fmt.LIDAR_POINT_DIMS)

    @cached_property
    def _objects(self) -> Tracks | None:
        path = self.path / fmt.OBJECTS
        if not path.is_file():
            return None
        return Tracks(pd.read_parquet(path, columns=list(fmt.OBJECT_COLUMNS)).astype(OBJECT_DTYPES))

    @cached_property
    def _pose_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pose = self.pose()
        rotations = pose[["qw", "qx", "qy", "qz"]].to_numpy()
        rotations = rotations / np.linalg.norm(rotations, axis=1, keepdims=True)
        return pose["timestamp_us"].to_numpy(), pose[["x", "y", "z"]].to_numpy(), rotations

    def _known(self, channel: str) -> str:
        if channel not in self.manifest.channels:
            raise KeyError(f"{self.path}: no channel {channel!r}; the log has {list(self.manifest.channels)}")
        return channel

    def _known_lidar(self, channel: str) -> str:
        if channel not in self.manifest.lidar_channels:
            raise KeyError(f"{self.path}: no lidar {channel!r}; the log has {list(self.manifest.lidar_channels)}")
        return channel


VideoExists = Callable[[str], bool]


def is_log_id(name: str) -> bool:
    """True if name can be a log id: a partition key and a path part (LOG_ID_PATTERN, no '..')."""
    return LOG_ID_PATTERN.fullmatch(name) is not None and ".." not in name


def read_log(
    path: Path, video_exists: VideoExists | None = None, label: str | None = None, log_id: str | None = None
) -> DriveLog:
    """Validate and open the log folder at path; raises LogFormatError on the first problem.

    video_exists(relative path) checks a video or lidar sweep file without it being in the folder
    (a log whose large files stay in the object store); label names the log in messages instead
    of path; log_id, when given, is the id the manifest must have (the log's folder in the store).
    """
    path = Path(path)
    problem = next(_problems(path, video_exists, log_id), None)
    if problem is not None:
        raise LogFormatError(_relabel(problem, path, label))
    manifest = fmt.LogManifest.from_json(json.loads((path / fmt.MANIFEST).read_text()))
    calibration_json = json.loads((path / fmt.CALIBRATION).read_text())
    calibration = {c: CameraCalibration.from_json(calibration_json[c]) for c in manifest.channels}
    lidars = {c: fmt.LidarCalibration.from_json(calibration_json[c]) for c in manifest.lidar_channels}
    return DriveLog(path=path, manifest=manifest, calibration=calibration, lidar_calibration=lidars)


def validate_log(
    path: Path, video_exists: VideoExists | None = None, label: str | None = None, log_id: str | None = None
) -> list[str]:
    """Every problem found in the log folder at path (empty when it is a valid log)."""
    return [_relabel(p, Path(path), label) for p in _problems(Path(path), video_exists, log_id)]


def _relabel(problem: str, path: Path, label: str | None) -> str:
    return label + problem[len(str(path)):] if label and problem.startswith(str(path)) else problem


def _problems(log: Path, video_exists: VideoExists | None = None, log_id: str | None = None) -> Iterator[str]:
    """Problems in order; stops early where later checks would depend on a broken file."""
    if not log.is_dir():
        yield f"{log}: not a log folder"
        return
    manifest_problems = list(_manifest_problems(log))
    yield from manifest_problems
    if manifest_problems:
        return
    manifest = fmt.LogManifest.from_json(json.loads((log / fmt.MANIFEST).read_text()))
    calibration_problems = list(_calibration_problems(log, manifest.channels, manifest.lidar_channels))
    yield from calibration_problems
    exists = video_exists or (lambda name: (log / name).is_file() and (log / name).stat().st_size > 0)
    span = (manifest.start_time_us, manifest.end_time_us)
    for channel in manifest.channels:
        if not exists(fmt.video_file(channel)):
            yield f"{log}: {fmt.video_file(channel)}: missing or empty video of listed channel {channel}"
        elif not calibration_problems and (log / fmt.video_file(channel)).is_file():
            yield from _video_size_problems(log, channel)
        yield from _table_problems(log, fmt.timestamps_file(channel), {"timestamp_us": "int64"}, span)
    for channel in manifest.lidar_channels:
        name = fmt.lidar_timestamps_file(channel)
        problems = list(_table_problems(log, name, {"timestamp_us": "int64"}, span))
        yield from problems
        if not problems:
            stamps = pq.read_table(log / name, columns=["timestamp_us"]).column("timestamp_us").to_numpy()
            for stamp in {int(stamps[0]), int(stamps[-1])}:
                if not exists(fmt.lidar_sweep_file(channel, stamp)):
                    yield f"{log}: {fmt.lidar_sweep_file(channel, stamp)}: missing or empty sweep of lidar {channel}"
    yield from _table_problems(log, fmt.CAN, CAN_DTYPES)
    yield from _table_problems(log, fmt.POSE, POSE_DTYPES)
    if (log / fmt.OBJECTS).exists():
        yield from _object_problems(log, span)
    if log_id is not None and manifest.log_id != log_id:
        yield (
            f"{log}: {fmt.MANIFEST}: log_id {manifest.log_id!r} is not the log's folder {log_id!r}; a log is "
            "known by its folder, so no two folders can claim one id (rename the folder or fix the manifest)"
        )


def _video_size_problems(log: Path, channel: str) -> Iterator[str]:
    """The video's frame size against the calibration's (read from the container header only)."""
    import av

    calib = CameraCalibration.from_json(json.loads((log / fmt.CALIBRATION).read_text())[channel])
    name = fmt.video_file(channel)
    try:
        with av.open(str(log / name)) as container:
            if not container.streams.video:
                yield f"{log}: {name}: no video stream"
                return
            context = container.streams.video[0].codec_context
            size = (context.width, context.height)
    except (OSError, ValueError, av.FFmpegError) as exc:
        yield f"{log}: {name}: not a readable video ({exc})"
        return
    if size != (calib.width, calib.height):
        yield (
            f"{log}: {fmt.CALIBRATION}: {channel}: width x height {calib.width}x{calib.height} differs "
            f"from the {size[0]}x{size[1]} frames of {name}"
        )


def _manifest_problems(log: Path) -> Iterator[str]:
    where = f"{log}: {fmt.MANIFEST}"
    data = _load_json(log, fmt.MANIFEST)
    if isinstance(data, str):
        yield data
        return
    missing = [k for k in MANIFEST_KEYS if k not in data]
    if missing:
        yield f"{where}: missing keys {missing}"
        return
    if not isinstance(data.get("camera_rates_hz", {}), dict):
        yield f"{where}: camera_rates_hz must be an object {{channel: Hz}}"
        return
    try:
        manifest = fmt.LogManifest.from_json(data)
    except (TypeError, ValueError, OverflowError) as exc:
        yield f"{where}: malformed value ({exc})"
        return
    if not isinstance(data["channels"], list) or not manifest.channels:
        yield f"{where}: channels must be a non-empty list"
    elif not isinstance(data.get("lidar_channels", []), list):
        yield f"{where}: lidar_channels must be a list"
    elif len(set(manifest.channels + manifest.lidar_channels)) != len(manifest.channels + manifest.lidar_channels):
        yield f"{where}: duplicate channels {list(manifest.channels + manifest.lidar_channels)}"
    bad_channels = [c for c in manifest.channels + manifest.lidar_channels if not CHANNEL_PATTERN.fullmatch(c)]
    if bad_channels:
        yield f"{where}: channel names {bad_channels} must match {CHANNEL_PATTERN.pattern}"
    if not is_log_id(manifest.log_id):
        yield f"{where}: log_id {manifest.log_id!r} must match {LOG_ID_PATTERN.pattern} without '..'"
    if manifest.duration_us <= 0 or manifest.camera_hz <= 0:
        yield f"{where}: duration_us and camera_hz must be positive"
    unknown = sorted(set(manifest.camera_rates_hz) - set(manifest.channels))
    if unknown:
        yield f"{where}: camera_rates_hz has {unknown}, which are not in channels"
    slow = {c: hz for c, hz in manifest.camera_rates_hz.items() if hz <= 0}
    if slow:
        yield f"{where}: camera_rates_hz {slow} must be positive (Hz)"
    if not 1 <= manifest.format_version <= fmt.FORMAT_VERSION:
        yield f"{where}: format_version {manifest.format_version}, this reader knows 1 to {fmt.FORMAT_VERSION}"


def _calibration_problems(log: Path, channels: tuple[str, ...], lidars: tuple[str, ...] = ()) -> Iterator[str]:
    where = f"{log}: {fmt.CALIBRATION}"
    data = _load_json(log, fmt.CALIBRATION)
    if isinstance(data, str):
        yield data
        return
    for channel in lidars:
        if channel not in data:
            yield f"{where}: no calibration for listed lidar {channel}"
            continue
        try:
            lidar = fmt.LidarCalibration.from_json(data[channel])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            yield f"{where}: {channel}: malformed calibration ({type(exc).__name__}: {exc})"
            continue
        yield from (f"{where}: {channel}: {p}" for p in _mounting_errors(lidar.translation, lidar.rotation))
    for channel in channels:
        if channel not in data:
            yield f"{where}: no calibration for listed channel {channel}"
            continue
        try:
            calib = CameraCalibration.from_json(data[channel])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            yield f"{where}: {channel}: malformed calibration ({type(exc).__name__}: {exc})"
            continue
        yield from (f"{where}: {channel}: {p}" for p in _calibration_errors(calib))


def _calibration_errors(calib: CameraCalibration) -> Iterator[str]:
    if calib.distortion_model != DISTORTION_MODEL or len(calib.distortion) != 5:
        yield f"distortion must be {DISTORTION_MODEL} with 5 coefficients, got {calib.distortion_model} {list(calib.distortion)}"
    yield from _mounting_errors(calib.translation, calib.rotation)
    yield from implausible_fields(calib)


def _mounting_errors(translation: tuple, rotation: tuple) -> Iterator[str]:
    if len(translation) != 3 or not all(math.isfinite(v) for v in translation):
        yield f"translation {list(translation)} must be 3 finite metres"
    elif math.dist(translation, (0, 0, 0)) > MAX_MOUNT_OFFSET_M:
        yield f"translation {list(translation)} is more than {MAX_MOUNT_OFFSET_M:g} m from the ego origin"
    if len(rotation) != 4 or not abs(math.sqrt(sum(v * v for v in rotation)) - 1) < 1e-3:
        yield f"rotation {list(rotation)} must be a finite unit quaternion [w, x, y, z]"


def _object_problems(log: Path, time_range: tuple[int, int]) -> Iterator[str]:
    """objects.parquet: its columns and types, sizes, times within the log, one row per instance and time."""
    where = f"{log}: {fmt.OBJECTS}"
    try:
        schema = pq.read_schema(log / fmt.OBJECTS)
    except (OSError, ValueError, pa.ArrowException) as exc:
        yield f"{where}: unreadable parquet ({exc})"
        return
    missing = [c for c in fmt.OBJECT_COLUMNS if c not in schema.names]
    if missing:
        yield f"{where}: missing columns {missing}"
        return
    for column, dtype in OBJECT_DTYPES.items():
        kind = schema.field(column).type
        ok = {"object": pa.types.is_string(kind) or pa.types.is_large_string(kind), "int64": pa.types.is_integer(kind)}.get(
            dtype, pa.types.is_floating(kind) or pa.types.is_integer(kind))
        if not ok:
            yield f"{where}: column {column} has type {kind}, expected {'string' if dtype == 'object' else dtype}"
            return
    table = pd.read_parquet(log / fmt.OBJECTS, columns=["instance_id", "timestamp_us", "width", "length", "height"])
    if table.empty:
        return
    stamps = table["timestamp_us"].to_numpy()
    if stamps.min() < time_range[0] or stamps.max() > time_range[1]:
        yield f"{where}: timestamps {stamps.min()}..{stamps.max()} outside the log's [{time_range[0]}, {time_range[1]}] µs"
    if table.duplicated(["instance_id", "timestamp_us"]).any():
        yield f"{where}: an instance has two rows with the same timestamp_us"
    sizes = table[["width", "length", "height"]].to_numpy()
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        yield f"{where}: width, length and height must be positive metres"


def _table_problems(
    log: Path, name: str, dtypes: dict[str, str], time_range: tuple[int, int] | None = None
) -> Iterator[str]:
    """Columns present with numeric types, at least one row, strictly increasing timestamp_us."""
    where = f"{log}: {name}"
    path = log / name
    if not path.is_file():
        yield f"{where}: missing"
        return
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        yield f"{where}: unreadable parquet ({exc})"
        return
    missing = [c for c in dtypes if c not in schema.names]
    if missing:
        yield f"{where}: missing columns {missing}"
        return
    for column, dtype in dtypes.items():
        kind = schema.field(column).type
        ok = pa.types.is_integer(kind) if dtype.startswith("int") else (
            pa.types.is_floating(kind) or pa.types.is_integer(kind))
        if not ok:
            yield f"{where}: column {column} has type {kind}, expected {dtype}"
            return
    stamps = pq.read_table(path, columns=["timestamp_us"]).column("timestamp_us").to_numpy(zero_copy_only=False)
    if len(stamps) == 0:
        yield f"{where}: no rows"
    elif np.any(np.diff(stamps) <= 0):
        bad = int(np.argmax(np.diff(stamps) <= 0)) + 1
        yield f"{where}: timestamp_us not strictly increasing (row {bad}: {stamps[bad - 1]} then {stamps[bad]})"
    elif time_range and (stamps[0] < time_range[0] or stamps[-1] > time_range[1]):
        yield f"{where}: timestamps {stamps[0]}..{stamps[-1]} outside the log's [{time_range[0]}, {time_range[1]}] µs"


def _load_json(log: Path, name: str) -> dict | str:
    """The JSON object in log/name, or a problem message."""
    path = log / name
    if not path.is_file():
        return f"{log}: {name}: missing"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{log}: {name}: not valid JSON ({exc})"
    if not isinstance(data, dict):
        return f"{log}: {name}: must be a JSON object, got {type(data).__name__}"
    return data


def _read_table(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    table = pd.read_parquet(path, columns=list(dtypes)).astype(dtypes)
    return table.sort_values("timestamp_us", kind="stable").reset_index(drop=True)
