"""The topic map: which MCAP topic is which channel of our log format, and which signal is which
CAN column (YAML; examples in examples/topic-maps/).

    vehicle: car-07                     # manifest fields (optional)
    location: tokyo
    ego_frame: base_link                # the vehicle frame: sensor extrinsics and the pose are of it
    map_frame: map                      # the pose's parent frame when the pose comes from TF
    tf_static: /tf_static               # static transforms: sensor-to-ego extrinsics
    cameras:
      CAM_FRONT: {topic: /cam_front/image/compressed, calibration: /cam_front/camera_info}
    lidars:
      LIDAR_TOP: {topic: /lidar_top/points}
    pose: {topic: /odom}                # nav_msgs/Odometry, TF (/tf), foxglove PoseInFrame / Odometry
    can:
      frames: /can/rx                   # raw CAN frames (id, data), decoded with the DBC file
      signals:                          # our CAN columns (logs/format.py CAN_COLUMNS, their units)
        speed_mps: {message: VehicleSpeed, signal: SpeedKph, scale: 0.2777778}
        yaw_rate_rps: {topic: /imu, field: angular_velocity.z}

A signal comes from a field of a decoded message (`topic` + `field`, a dotted path) or from a
signal of a CAN message in the DBC (`message` + `signal`); its value is raw * scale + offset, or
values[raw] when a values table is given (e.g. the vehicle's gear codes to ours). One CAN row is
written per message of the speed_mps source; the other columns hold their latest value. Columns
without a source take DEFAULT_CAN_VALUES.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jadd_dagster.logs.format import CAN_COLUMNS

# CAN columns the topic map does not name: a gear of 3 (drive), no turn signal, zero otherwise.
DEFAULT_CAN_VALUES = {name: 0.0 for name in CAN_COLUMNS[1:]} | {"gear": 3, "turn_signal": 0}
CHANNEL_PATTERN = r"^[A-Z0-9_]+$"


class TopicMapError(ValueError):
    """A topic map that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraTopics(_Strict):
    """A camera: its images (sensor_msgs/CompressedImage JPEG/PNG or foxglove CompressedVideo H.264),
    its intrinsics (sensor_msgs/CameraInfo or foxglove CameraCalibration) and, optionally, the
    TF frame of its optical centre when the messages do not name it."""

    topic: str
    calibration: str
    frame_id: str | None = None
    jpeg_crf: int | None = Field(None, ge=0, le=51, description=(
        "JPEG/PNG topics are stored as recorded (never re-encoded) unless this is set: then they are encoded once "
        "to H.264 at this x264 quality (0 lossless), a smaller log whose dataset frames are a second encode"))


class LidarTopics(_Strict):
    """A lidar: sensor_msgs/PointCloud2 or foxglove PointCloud; frame_id as for cameras."""

    topic: str
    frame_id: str | None = None


class PoseTopic(_Strict):
    """The ego pose: nav_msgs/Odometry, foxglove Odometry or PoseInFrame, or TF messages (the
    transform from map_frame to ego_frame)."""

    topic: str


class SignalSource(_Strict):
    """Where one CAN column comes from (see the module docstring)."""

    topic: str | None = None
    field: str | None = None
    message: str | None = None
    signal: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    values: dict[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "SignalSource":
        decoded, raw = self.topic is not None, self.message is not None
        if decoded == raw:
            raise ValueError("give either topic and field (a decoded message) or message and signal (a DBC signal)")
        if decoded and not self.field:
            raise ValueError(f"topic {self.topic}: the field to read is missing")
        if raw and not self.signal:
            raise ValueError(f"message {self.message}: the signal to read is missing")
        return self

    def value(self, raw: float) -> float:
        """The column's value for a raw reading."""
        if self.values is not None:
            if float(raw) not in self.values:
                raise ValueError(f"value {raw!r} is not in the values table {sorted(self.values)}")
            return self.values[float(raw)]
        return float(raw) * self.scale + self.offset


class CanTopics(_Strict):
    """CAN: raw frames decoded with a DBC (frames) and/or signals of decoded messages."""

    frames: str | None = None
    signals: dict[str, SignalSource]

    @model_validator(mode="after")
    def _columns(self) -> "CanTopics":
        unknown = sorted(set(self.signals) - set(CAN_COLUMNS[1:]))
        if unknown:
            raise ValueError(f"signals {unknown} are not CAN columns; the columns are {list(CAN_COLUMNS[1:])}")
        if "speed_mps" not in self.signals:
            raise ValueError("speed_mps needs a source: one CAN row is written per speed message")
        if any(s.message for s in self.signals.values()) and not self.frames:
            raise ValueError("DBC signals need the topic of the raw CAN frames (frames)")
        return self


class TopicMap(_Strict):
    """Which topics make up a log (see the module docstring)."""

    vehicle: str = "unknown"
    location: str = "unknown"
    ego_frame: str = "base_link"
    map_frame: str = "map"
    tf_static: str = "/tf_static"
    cameras: dict[str, CameraTopics] = Field(min_length=1)
    lidars: dict[str, LidarTopics] = Field(default_factory=dict)
    pose: PoseTopic
    can: CanTopics

    @model_validator(mode="after")
    def _channel_names(self) -> "TopicMap":
        bad = [c for c in (*self.cameras, *self.lidars) if not re.match(CHANNEL_PATTERN, c)]
        if bad:
            raise ValueError(f"channel names {bad} must match {CHANNEL_PATTERN} (nuScenes style, e.g. CAM_FRONT)")
        return self

    @property
    def uses_dbc(self) -> bool:
        return any(s.message for s in self.can.signals.values())


def load_topic_map(path: Path) -> TopicMap:
    """Read a topic map YAML file; TopicMapError names the file and each bad field."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise TopicMapError(f"{path}: cannot read the topic map ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise TopicMapError(f"{path}: not valid YAML: {error}") from None
    return parse_topic_map(data, str(path))


def parse_topic_map(data, where: str = "topic map") -> TopicMap:
    """Validate a topic map mapping; TopicMapError has one line per bad field."""
    if not isinstance(data, dict):
        raise TopicMapError(f"{where}: expected a mapping (cameras, pose, can, ...)")
    try:
        return TopicMap.model_validate(data)
    except ValidationError as error:
        lines = [
            f"{'.'.join(str(p) for p in item['loc']) or 'topic map'}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        ]
        raise TopicMapError(f"{where}:\n" + "\n".join(lines)) from None
