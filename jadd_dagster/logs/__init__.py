"""Raw drive logs: the format, a validating reader and a synthetic generator with ground truth."""

from jadd_dagster.logs.format import (
    CAMERA_CHANNELS,
    CAMERA_HZ,
    CAN_COLUMNS,
    POSE_COLUMNS,
    LogManifest,
    timestamps_file,
    video_file,
)
from jadd_dagster.logs.generator import make_logs
from jadd_dagster.logs.reader import (
    CAN_DTYPES,
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
    "POSE_COLUMNS",
    "POSE_DTYPES",
    "DriveLog",
    "LogFormatError",
    "LogManifest",
    "make_logs",
    "read_log",
    "timestamps_file",
    "validate_log",
    "video_file",
]
