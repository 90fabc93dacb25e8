"""The raw drive-log format (DESIGN §3): file names, manifest and table columns.

One folder per log:
    manifest.json                       LogManifest
    calibration.json                    {channel: CameraCalibration.to_json()}
    cameras/<CHANNEL>.mp4               30 Hz H.264, one video stream
    cameras/<CHANNEL>.timestamps.parquet  column timestamp_us (int64), one row per frame in decode order
    can.parquet                         CAN_COLUMNS at ~100 Hz
    pose.parquet                        POSE_COLUMNS at ~50 Hz, ego pose in the log's local map frame
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CAMERA_CHANNELS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
FORMAT_VERSION = 1
CAMERA_HZ = 30

MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"
CAN = "can.parquet"
POSE = "pose.parquet"

# Units: timestamp_us µs since the Unix epoch; speed m/s; steering_deg steering-wheel angle in
# degrees (positive left); accel_mps2 longitudinal acceleration; brake, throttle pedal 0..1;
# yaw_rate_rps rad/s (positive left); gear 0=P 1=R 2=N 3=D; turn_signal -1 right, 0 off, 1 left.
CAN_COLUMNS = (
    "timestamp_us",
    "speed_mps",
    "steering_deg",
    "accel_mps2",
    "brake",
    "throttle",
    "yaw_rate_rps",
    "gear",
    "turn_signal",
)
# Position in metres (local map frame, x and y >= 0), orientation [w, x, y, z] ego-to-map.
POSE_COLUMNS = ("timestamp_us", "x", "y", "z", "qw", "qx", "qy", "qz")


def video_file(channel: str) -> str:
    return f"cameras/{channel}.mp4"


def timestamps_file(channel: str) -> str:
    return f"cameras/{channel}.timestamps.parquet"


@dataclass(frozen=True)
class LogManifest:
    """What a log is: identity, where and when it was recorded, and which cameras it has."""

    log_id: str
    vehicle: str
    location: str
    start_time_us: int
    duration_us: int
    channels: tuple[str, ...]
    camera_hz: int = CAMERA_HZ
    format_version: int = FORMAT_VERSION

    @property
    def end_time_us(self) -> int:
        return self.start_time_us + self.duration_us

    @property
    def date_captured(self) -> str:
        from datetime import datetime, timezone

        return datetime.fromtimestamp(self.start_time_us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")

    def to_json(self) -> dict:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LogManifest":
        return cls(
            log_id=str(data["log_id"]),
            vehicle=str(data["vehicle"]),
            location=str(data["location"]),
            start_time_us=int(data["start_time_us"]),
            duration_us=int(data["duration_us"]),
            channels=tuple(str(c) for c in data["channels"]),
            camera_hz=int(data.get("camera_hz", CAMERA_HZ)),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
        )
