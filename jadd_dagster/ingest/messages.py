"""Reading the fields we need from decoded ROS 2 and Foxglove messages.

The decoders of mcap-ros2-support (CDR), mcap-protobuf-support and rosbags (rosbag2's CDR) give
objects with the schema's field names as attributes (rosbags gives numeric arrays as numpy arrays); ROS 2 and Foxglove name the same things differently (header.stamp vs
timestamp, k vs K, child_frame_id vs body_frame_id), so each accessor tries the spellings of the
message types it supports and raises MessageError naming the field it could not find.

Times are integer µs since the Unix epoch; positions metres; quaternions [w, x, y, z].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# PointCloud2 datatypes (sensor_msgs/PointField) and foxglove PackedElementField types.
_ROS_POINT_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FOXGLOVE_POINT_TYPES = {1: "u1", 2: "i1", 3: "u2", 4: "i2", 5: "u4", 6: "i4", 7: "f4", 8: "f8"}
_H264_IDR = 5
_DISTORTION_MODELS = {"plumb_bob", "rational_polynomial", "opencv_radtan", ""}


class MessageError(ValueError):
    """A message that lacks a field we need or holds a value we cannot use."""


@dataclass(frozen=True)
class Transform:
    """A rigid transform: child frame in parent frame; stamp_us None for a stamp of zero."""

    parent: str
    child: str
    stamp_us: int | None
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclass(frozen=True)
class Intrinsics:
    """A camera's lens: image size (pixels), 3x3 matrix (pixels) and OpenCV (k1, k2, p1, p2, k3)."""

    frame_id: str
    width: int
    height: int
    matrix: tuple[tuple[float, float, float], ...]
    distortion: tuple[float, float, float, float, float]


def _has(msg, name: str) -> bool:
    """Whether a decoded message has the field set (a protobuf sub-message must be present)."""
    if hasattr(msg, "HasField"):
        try:
            return msg.HasField(name)
        except ValueError:  # a scalar or repeated field: always there
            return hasattr(msg, name)
    return hasattr(msg, name)


def field(msg, path: str):
    """The value at a dotted field path (e.g. 'twist.twist.linear.x'); MessageError if absent."""
    value = msg
    for name in path.split("."):
        if not hasattr(value, name):
            raise MessageError(f"no field {path!r} (missing {name!r})")
        value = getattr(value, name)
    return value


def time_us(stamp) -> int:
    """A builtin_interfaces/Time (sec, nanosec) or google.protobuf.Timestamp (seconds, nanos) in µs."""
    if hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000 + int(stamp.nanosec) // 1000
    return int(stamp.seconds) * 1_000_000 + int(stamp.nanos) // 1000


def header_stamp_us(msg) -> int | None:
    """The message's own time (header.stamp or timestamp) in µs, or None when it has none (or zero)."""
    if hasattr(msg, "header"):
        stamp = time_us(msg.header.stamp)
    elif _has(msg, "timestamp"):
        stamp = time_us(msg.timestamp)
    else:
        return None
    return stamp or None


def frame_id(msg) -> str:
    """The message's frame (header.frame_id or frame_id), '' when it names none."""
    if hasattr(msg, "header"):
        return str(msg.header.frame_id)
    return str(getattr(msg, "frame_id", ""))


def image_payload(msg) -> tuple[str, bytes]:
    """(format, data) of a CompressedImage or CompressedVideo: format lower-case, e.g. 'jpeg', 'h264'."""
    return str(field(msg, "format")).lower(), bytes(field(msg, "data"))


def is_h264_keyframe(data: bytes) -> bool:
    """Whether an Annex B access unit holds an IDR slice (NAL unit type 5)."""
    start = data.find(b"\x00\x00\x01")
    while start >= 0 and start + 3 < len(data):
        if data[start + 3] & 0x1F == _H264_IDR:
            return True
        start = data.find(b"\x00\x00\x01", start + 3)
    return False


def _numbers(msg, *names: str) -> list[float]:
    """The numbers of the first of these array fields the message has (a list, a protobuf
    repeated field or a numpy array), [] when it has none."""
    for name in names:
        values = getattr(msg, name, None)
        if values is not None:
            return [float(v) for v in values]
    return []


def intrinsics(msg) -> Intrinsics:
    """A sensor_msgs/CameraInfo or foxglove CameraCalibration as Intrinsics.

    plumb_bob (k1, k2, p1, p2, k3) is OpenCV's model; rational_polynomial is taken when its k4..k6
    are zero. Any other model (e.g. equidistant fisheye) is refused: our format has none."""
    k, d = _numbers(msg, "k", "K"), _numbers(msg, "d", "D")
    model = str(field(msg, "distortion_model"))
    if len(k) != 9:
        raise MessageError(f"the camera matrix K has {len(k)} values, expected 9")
    if model not in _DISTORTION_MODELS:
        raise MessageError(f"distortion model {model!r} is not supported (plumb_bob or rational_polynomial)")
    if len(d) > 5 and any(abs(v) > 0 for v in d[5:]):
        raise MessageError(f"distortion {d}: only k1, k2, p1, p2, k3 can be kept (k4..k6 must be zero)")
    d = (d + [0.0] * 5)[:5]
    width, height = int(field(msg, "width")), int(field(msg, "height"))
    if width <= 0 or height <= 0:
        raise MessageError(f"image size {width}x{height} is not positive")
    matrix = tuple(tuple(float(v) for v in k[row * 3 : row * 3 + 3]) for row in range(3))
    return Intrinsics(frame_id(msg), width, height, matrix, tuple(d))  # type: ignore[arg-type]


def _xyz(v) -> tuple[float, float, float]:
    return float(v.x), float(v.y), float(v.z)


def _wxyz(q) -> tuple[float, float, float, float]:
    norm = math.sqrt(q.w * q.w + q.x * q.x + q.y * q.y + q.z * q.z)
    if not math.isfinite(norm) or norm < 1e-6:
        raise MessageError(f"rotation ({q.x}, {q.y}, {q.z}, {q.w}) is not a quaternion")
    return float(q.w) / norm, float(q.x) / norm, float(q.y) / norm, float(q.z) / norm


def transforms(msg) -> list[Transform]:
    """The transforms of a tf2_msgs/TFMessage, foxglove FrameTransforms or FrameTransform."""
    if hasattr(msg, "transforms"):
        return [t for item in msg.transforms for t in transforms(item)]
    if hasattr(msg, "child_frame_id") and hasattr(msg, "transform"):  # geometry_msgs/TransformStamped
        stamp = time_us(msg.header.stamp) or None
        t = msg.transform
        return [Transform(str(msg.header.frame_id), str(msg.child_frame_id), stamp, _xyz(t.translation), _wxyz(t.rotation))]
    if hasattr(msg, "parent_frame_id"):  # foxglove FrameTransform
        return [Transform(str(msg.parent_frame_id), str(msg.child_frame_id), header_stamp_us(msg),
                          _xyz(field(msg, "translation")), _wxyz(field(msg, "rotation")))]
    raise MessageError("not a transform message (TFMessage, FrameTransform or FrameTransforms)")


def is_transform_message(msg) -> bool:
    """Whether a message is TF (tf2_msgs/TFMessage, foxglove FrameTransforms or FrameTransform)."""
    return hasattr(msg, "transforms") or hasattr(msg, "parent_frame_id")


def poses(msg, ego_frame: str) -> list[tuple[int | None, tuple, tuple]]:
    """The ego pose in a nav_msgs/Odometry, foxglove Odometry or PoseInFrame message: (stamp µs
    or None, position, [w, x, y, z]). Odometry must be of the ego frame (child_frame_id /
    body_frame_id, when set). TF messages are links of a chain (tf_tree.PoseChain) instead."""
    body = str(getattr(msg, "child_frame_id", "") or getattr(msg, "body_frame_id", ""))
    if body and body != ego_frame:
        raise MessageError(f"the pose is of frame {body!r}, not of the ego frame {ego_frame!r}")
    pose = field(msg, "pose")
    if hasattr(pose, "pose"):  # geometry_msgs/PoseWithCovariance
        pose = pose.pose
    return [(header_stamp_us(msg), _xyz(field(pose, "position")), _wxyz(field(pose, "orientation")))]


def point_cloud(msg) -> np.ndarray:
    """A sensor_msgs/PointCloud2 or foxglove PointCloud as (N, 5) float32 rows x, y, z (metres,
    sensor frame), intensity, ring (0 without a ring field); points with a non-finite x, y or z
    (no return) are dropped."""
    ros = hasattr(msg, "point_step")
    step = int(msg.point_step if ros else field(msg, "point_stride"))
    kinds = _ROS_POINT_TYPES if ros else _FOXGLOVE_POINT_TYPES
    data = bytes(field(msg, "data"))
    count = int(msg.width) * int(msg.height) if ros else (len(data) // step if step else 0)
    if step <= 0 or len(data) < count * step:
        raise MessageError(f"{len(data)} bytes of data for {count} points of {step} bytes")
    order = ">" if ros and msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        kind = int(f.datatype if ros else f.type)
        if f.name in ("x", "y", "z", "intensity", "ring") and kind in kinds:
            names.append(f.name)
            formats.append(order + kinds[kind])
            offsets.append(int(f.offset))
    missing = {"x", "y", "z"} - set(names)
    if missing:
        raise MessageError(f"the point cloud has no {sorted(missing)} field(s)")
    if ros and int(msg.row_step) != int(msg.width) * step and int(msg.height) > 1:
        raise MessageError("rows with padding (row_step != width * point_step) are not supported")
    points = np.frombuffer(data, dtype=np.dtype({"names": names, "formats": formats, "offsets": offsets,
                                                 "itemsize": step}), count=count)
    out = np.zeros((count, 5), dtype=np.float32)
    for column, name in enumerate(("x", "y", "z", "intensity", "ring")):
        if name in names:
            out[:, column] = points[name]
    return out[np.isfinite(out[:, :3]).all(axis=1)]


def can_frame(msg) -> tuple[int, bytes]:
    """(arbitration id, payload) of a raw CAN frame message (e.g. can_msgs/Frame: id, dlc, data)."""
    data = bytes(field(msg, "data"))
    dlc = getattr(msg, "dlc", None)
    return int(field(msg, "id")), data[: int(dlc)] if dlc is not None else data
