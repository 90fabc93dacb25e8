"""Raw drive logs: the format and a validating reader, with optional ground-truth objects and lidar.

Synthetic logs of this format come from the demo world, jadd_dagster.sim (never imported here)."""

from jadd_dagster.logs.format import (
    CAMERA_CHANNELS,
    CAMERA_HZ,
    CAN_COLUMNS,
    LIDAR_CHANNELS,
    LIDAR_HZ,
    OBJECT_COLUMNS,
    POSE_COLUMNS,
    LidarCalibration,
    LogManifest,
    lidar_sweep_file,
    lidar_timestamps_file,
    timestamps_file,
    video_file,
)
from jadd_dagster.logs.reader import (
    CAN_DTYPES,
    OBJECT_DTYPES,
    POSE_DTYPES,
    DriveLog,
    LogFormatError,
    read_log,
    validate_log,
)

__all__ = [
    "CAMERA_CHANNELS",
    "CAMERA_HZ",
    "CAN_COLUMNS",
    "CAN_DTYPES",
    "LIDAR_CHANNELS",
    "LIDAR_HZ",
    "OBJECT_COLUMNS",
    "OBJECT_DTYPES",
    "POSE_COLUMNS",
    "POSE_DTYPES",
    "DriveLog",
    "LidarCalibration",
    "LogFormatError",
    "LogManifest",
    "lidar_sweep_file",
    "lidar_timestamps_file",
    "read_log",
    "timestamps_file",
    "validate_log",
    "video_file",
]
