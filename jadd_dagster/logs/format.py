"""The raw drive-log format (DESIGN §3): file names, manifest and table columns.

One folder per log:
    manifest.json                       LogManifest
    calibration.json                    {channel: CameraCalibration.to_json()}
    cameras/<CHANNEL>.mp4               one video stream, frame i at pts i / the camera's rate (s; µs time base):
                                        H.264 (30 Hz in synthetic logs), or, for cameras recorded as images,
                                        each image's JPEG or PNG bytes as they were recorded, one packet a frame
                                        (codec mjpeg or png, every packet a keyframe; `ffmpeg -i X.mp4 -c copy
                                        -f image2 %06d.jpg` gives the original files back)
    cameras/<CHANNEL>.timestamps.parquet  column timestamp_us (int64), one row per frame in decode order
    can.parquet                         CAN_COLUMNS at ~100 Hz
    pose.parquet                        POSE_COLUMNS at ~50 Hz, ego pose in the log's local map frame
Optional (a log without them is valid):
    objects.parquet                     OBJECT_COLUMNS: ground-truth 3D boxes of the objects around the ego
    lidar/<CHANNEL>/<timestamp_us>.pcd.bin  one sweep per file (nuScenes layout, see lidar_sweep_file)
    lidar/<CHANNEL>.timestamps.parquet  column timestamp_us (int64), one row per sweep
    calibration.json then also has {lidar channel: LidarCalibration.to_json()} for each lidar channel

Images stay in an mp4 rather than Matroska or loose files: the pts keep µs (Matroska's are ms),
the header counts the frames (decode_frames checks them against the timestamps), seeks are exact,
and every camera keeps one file name whatever its codec, for the readers, the store and workers.

Versions: 1, all cameras at the manifest's camera_hz; 2, cameras at rates of their own
(camera_rates_hz). A manifest is written with the lowest version that describes it, so logs
without per-camera rates stay readable by readers of version 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CAMERA_CHANNELS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
LIDAR_CHANNELS = ("LIDAR_TOP",)
FORMAT_VERSION = 2  # the newest version this code reads and writes (see the module docstring)
CAMERA_HZ = 30
LIDAR_HZ = 20
LIDAR_POINT_DIMS = 5  # float32 x, y, z (metres, sensor frame), intensity (0..255), ring index

MANIFEST = "manifest.json"
CALIBRATION = "calibration.json"
CAN = "can.parquet"
POSE = "pose.parquet"
OBJECTS = "objects.parquet"

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
# One row per object and sample time (µs). instance_id is stable within the log; category is a
# nuScenes category name; x, y, z is the box centre (metres, map frame; z = height / 2 on flat
# ground); yaw rad about the map z axis (0 = map +x is the box's length direction); width, length,
# height metres (nuScenes wlh); vx, vy m/s in the map frame; attribute a nuScenes attribute name or
# "" (cones, barriers). An instance's rows are consecutive samples of the same rate (10 Hz here).
OBJECT_COLUMNS = (
    "instance_id",
    "category",
    "timestamp_us",
    "x",
    "y",
    "z",
    "yaw",
    "width",
    "length",
    "height",
    "vx",
    "vy",
    "attribute",
)


def video_file(channel: str) -> str:
    return f"cameras/{channel}.mp4"


def timestamps_file(channel: str) -> str:
    return f"cameras/{channel}.timestamps.parquet"


def lidar_timestamps_file(channel: str) -> str:
    return f"lidar/{channel}.timestamps.parquet"


def lidar_sweep_file(channel: str, timestamp_us: int) -> str:
    """A sweep: float32 points, LIDAR_POINT_DIMS values each, in the sensor frame (nuScenes .pcd.bin)."""
    return f"lidar/{channel}/{int(timestamp_us)}.pcd.bin"


@dataclass(frozen=True)
class LidarCalibration:
    """A lidar's mounting: translation (metres, sensor origin in the ego frame) and rotation
    (sensor-to-ego, [w, x, y, z]). No intrinsics; nuScenes LIDAR_TOP axes are x right, y forward, z up."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {"channel": self.channel, "translation": list(self.translation), "rotation": list(self.rotation)}

    @classmethod
    def from_json(cls, data: dict) -> "LidarCalibration":
        return cls(
            channel=str(data["channel"]),
            translation=tuple(float(v) for v in data["translation"]),  # type: ignore[arg-type]
            rotation=tuple(float(v) for v in data["rotation"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class LogManifest:
    """What a log is: identity, where and when it was recorded, and which cameras and lidars it has.

    camera_hz is the rate (Hz) of every camera not in camera_rates_hz (per-camera rates, format 2);
    rate_hz(channel) is the one to use. format_version is at least the lowest version that
    describes the manifest (required_version), so a log without per-camera rates is written as
    version 1, readable by older readers.
    """

    log_id: str
    vehicle: str
    location: str
    start_time_us: int
    duration_us: int
    channels: tuple[str, ...]
    camera_hz: int = CAMERA_HZ
    format_version: int = 1
    lidar_channels: tuple[str, ...] = ()
    camera_rates_hz: dict[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "format_version", max(self.format_version, self.required_version))

    def rate_hz(self, channel: str) -> int:
        """The frame rate (Hz) of a camera: its videos' constant-rate grid and its nominal period."""
        return self.camera_rates_hz.get(channel, self.camera_hz)

    @property
    def required_version(self) -> int:
        """The lowest format version that describes this manifest."""
        return 2 if any(hz != self.camera_hz for hz in self.camera_rates_hz.values()) else 1

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
        data["lidar_channels"] = list(self.lidar_channels)
        if not self.camera_rates_hz:
            del data["camera_rates_hz"]
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
            format_version=int(data.get("format_version", 1)),
            lidar_channels=tuple(str(c) for c in data.get("lidar_channels", ())),
            camera_rates_hz={str(c): int(hz) for c, hz in data.get("camera_rates_hz", {}).items()},
        )
