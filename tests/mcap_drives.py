"""Synthetic drives recorded as MCAP with the official writers (mcap-ros2-support's and
mcap-protobuf-support's), for the ingest tests and bench/bench_ingest.py.

Two flavours of the same drive: `ros2` (CDR: sensor_msgs/CompressedImage JPEG, foxglove_msgs/
CompressedVideo H.264, CameraInfo, tf2_msgs/TFMessage (static, and the pose on /tf), nav_msgs/Odometry, PointCloud2, can_msgs/
Frame decoded with DRIVE_DBC, std_msgs/Float64) and `foxglove` (protobuf: foxglove CompressedVideo,
CompressedImage, CameraCalibration, FrameTransforms, PoseInFrame, Odometry, PointCloud). Images
are real H.264 (libx264) and JPEG (libjpeg-turbo) payloads of frames that `image` regenerates,
so a test can compare what it decodes with what went in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import simplejpeg

START_S = 1_700_000_000
WIDTH, HEIGHT = 96, 64
CAMERA_HZ, POSE_HZ, CAN_HZ, LIDAR_HZ = 10, 50, 100, 10
INTRINSIC = ((80.0, 0.0, 48.0), (0.0, 80.0, 32.0), (0.0, 0.0, 1.0))
DISTORTION = (-0.05, 0.01, 0.0, 0.0, 0.0)
# Optical frame (x right, y down, z forward) in base_link (x forward, y left, z up), facing ahead.
OPTICAL_ROTATION_XYZW = (-0.5, 0.5, -0.5, 0.5)
CAMERA_MOUNT = {"CAM_FRONT": ((1.5, 0.0, 1.6), OPTICAL_ROTATION_XYZW),
                "CAM_FRONT_LEFT": ((1.4, 0.3, 1.6), OPTICAL_ROTATION_XYZW)}
LIDAR_MOUNT = ((0.9, 0.0, 1.9), (0.0, 0.0, 0.0, 1.0))
SPEED_MPS = 8.0
START_XY = (-120.0, -40.0)  # the source map frame's coordinates: negative, the log shifts them
LATENCY_NS = 7_000_000  # log time = header stamp + this: the ingest must use the header stamp

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DRIVE_DBC = EXAMPLES / "vehicle.dbc"  # VehicleSpeed (0x100) and Steering (0x101)

HEADER = """std_msgs/Header header"""
DEFS = {
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Quaternion": "float64 x\nfloat64 y\nfloat64 z\nfloat64 w",
    "geometry_msgs/Transform": "geometry_msgs/Vector3 translation\ngeometry_msgs/Quaternion rotation",
    "geometry_msgs/TransformStamped": f"{HEADER}\nstring child_frame_id\ngeometry_msgs/Transform transform",
    "geometry_msgs/Pose": "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation",
    "geometry_msgs/PoseWithCovariance": "geometry_msgs/Pose pose\nfloat64[36] covariance",
    "geometry_msgs/Twist": "geometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular",
    "geometry_msgs/TwistWithCovariance": "geometry_msgs/Twist twist\nfloat64[36] covariance",
    "sensor_msgs/RegionOfInterest": "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify",
    "sensor_msgs/PointField": "string name\nuint32 offset\nuint8 datatype\nuint32 count",
    "sensor_msgs/CompressedImage": f"{HEADER}\nstring format\nuint8[] data",
    "sensor_msgs/CameraInfo": (f"{HEADER}\nuint32 height\nuint32 width\nstring distortion_model\nfloat64[] d\n"
                               "float64[9] k\nfloat64[9] r\nfloat64[12] p\nuint32 binning_x\nuint32 binning_y\n"
                               "sensor_msgs/RegionOfInterest roi"),
    "sensor_msgs/PointCloud2": (f"{HEADER}\nuint32 height\nuint32 width\nsensor_msgs/PointField[] fields\n"
                                "bool is_bigendian\nuint32 point_step\nuint32 row_step\nuint8[] data\nbool is_dense"),
    "tf2_msgs/TFMessage": "geometry_msgs/TransformStamped[] transforms",
    "nav_msgs/Odometry": (f"{HEADER}\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\n"
                          "geometry_msgs/TwistWithCovariance twist"),
    "can_msgs/Frame": f"{HEADER}\nuint32 id\nbool is_rtr\nbool is_extended\nbool is_error\nuint8 dlc\nuint8[8] data",
    "std_msgs/Float64": "float64 data",
    "foxglove_msgs/CompressedVideo": "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format",
}


def msgdef(name: str) -> str:
    """The full message definition of a ROS 2 type as rosbag2 stores it (dependencies appended)."""
    seen, order, todo = set(), [], [name]
    while todo:
        current = todo.pop(0)
        for line in DEFS[current].splitlines():
            kind = line.split()[0].split("[")[0]
            if "/" in kind and kind not in seen and kind != name:
                seen.add(kind)
                order.append(kind)
                todo.append(kind)
    parts = [DEFS[name]] + [f"{'=' * 80}\nMSG: {dep}\n{DEFS[dep]}" for dep in order]
    return "\n".join(parts)


def image(channel: str, index: int) -> np.ndarray:
    """Frame index of a camera (HEIGHT, WIDTH, 3) RGB: a gradient and a square that moves."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    shade = 60 if channel == "CAM_FRONT" else 140
    rgb = np.stack([(x * 2 + index * 3) % 256, (y * 3 + shade) % 256, np.full_like(x, (index * 7) % 256)], axis=-1)
    left = (index * 4) % (WIDTH - 16)
    rgb[20:36, left:left + 16] = (250, 250, 30)
    return rgb.astype(np.uint8)


def jpeg(channel: str, index: int) -> bytes:
    return simplejpeg.encode_jpeg(image(channel, index), quality=92, colorspace="RGB", colorsubsampling="420")


def png(channel: str, index: int) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image(channel, index), cv2.COLOR_RGB2BGR))[1].tobytes()


def compressed(channel: str, index: int, image_format: str) -> bytes:
    """Frame index of the image camera as its topic carries it: 'jpeg' or 'png' bytes."""
    return jpeg(channel, index) if image_format == "jpeg" else png(channel, index)


class H264Stream:
    """A camera encoded to Annex B H.264 access units (SPS/PPS on every keyframe, no B-frames)."""

    def __init__(self, hz: int = CAMERA_HZ):
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height, self.codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        self.codec.time_base = Fraction(1, hz)
        self.codec.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={hz}:bframes=0:repeat-headers=1"}
        self.count = 0

    def encode(self, rgb: np.ndarray) -> list[bytes]:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = self.count
        self.count += 1
        return [bytes(p) for p in self.codec.encode(frame)]


def pose_at(t_s: float) -> tuple[tuple[float, float, float], tuple[float, float, float, float]]:
    """The ego pose at t seconds into the drive in the source map frame: position (metres) and
    [x, y, z, w] (ROS order); a gentle left curve at SPEED_MPS."""
    yaw = 0.02 * t_s
    return (START_XY[0] + SPEED_MPS * t_s * math.cos(yaw / 2), START_XY[1] + SPEED_MPS * t_s * math.sin(yaw / 2), 0.3), (
        0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def cloud(index: int) -> np.ndarray:
    """Sweep index: (64, 5) float32 x, y, z, intensity, ring."""
    rng = np.random.default_rng(index)
    points = np.zeros((64, 5), dtype=np.float32)
    points[:, :3] = rng.uniform(-20, 20, (64, 3))
    points[:, 3] = rng.integers(0, 255, 64)
    points[:, 4] = np.arange(64) % 32
    return points


@dataclass
class Recording:
    """What went into a drive: each camera's frame indices and header stamps (µs), pose stamps."""

    camera_stamps: dict[str, list[int]] = field(default_factory=dict)
    camera_frames: dict[str, list[int]] = field(default_factory=dict)
    pose_stamps: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def add(self, path: Path, events) -> None:
        """One file (or bag) of the drive and the events written into it."""
        self.files.append(path)
        for _, kind, payload, stamp in events:
            if kind in ("jpeg", "h264"):
                channel = "CAM_FRONT" if kind == "jpeg" else "CAM_FRONT_LEFT"
                self.camera_stamps.setdefault(channel, []).append(stamp // 1000)
                self.camera_frames.setdefault(channel, []).append(payload[2])
            elif kind == "pose":
                self.pose_stamps.append(stamp // 1000)

    def finish(self) -> None:
        """Each stamp once, in order: files of one drive that overlap repeat messages."""
        for channel in self.camera_stamps:
            pairs = sorted(set(zip(self.camera_stamps[channel], self.camera_frames[channel])))
            self.camera_stamps[channel] = [s for s, _ in pairs]
            self.camera_frames[channel] = [i for _, i in pairs]
        self.pose_stamps = sorted(set(self.pose_stamps))


def _ns(t_s: float) -> int:
    return START_S * 1_000_000_000 + round(t_s * 1e9)


def _camera_stamp_ns(index: int, hz: int = CAMERA_HZ) -> int:
    jitter_ms = (index * 7) % 5  # 0-4 ms late: real cameras are not on a perfect grid
    return _ns(index / hz) + jitter_ms * 1_000_000


def write_drive(folder: Path, flavour: str, segments: list[tuple[float, float]], lidar: bool = True,
                name: str = "drive", rates: dict[str, int] | None = None, image_format: str = "jpeg") -> Recording:
    """One MCAP file per (start_s, end_s) segment of one continuous drive: split files, which may
    overlap (repeating messages) or leave gaps (messages lost). rates: the cameras' frame rates (Hz;
    CAMERA_HZ for those not given); image_format: 'jpeg' or 'png' for CAM_FRONT's images. Returns
    what was recorded."""
    folder.mkdir(parents=True, exist_ok=True)
    recording = Recording()
    rates = {channel: (rates or {}).get(channel, CAMERA_HZ) for channel in CAMERA_MOUNT}
    events = sorted(_events(max(end for _, end in segments), lidar, rates, image_format), key=lambda e: e[0])
    for number, (start_s, end_s) in enumerate(segments):
        path = folder / f"{name}_{number}.mcap"
        kept = [(_ns(start_s), "static", None, _ns(start_s))]
        kept += [e for e in events if _ns(start_s) <= e[3] < _ns(end_s)]
        (_write_ros2 if flavour == "ros2" else _write_foxglove)(path, [e[:3] for e in kept])
        recording.add(path, kept)
    recording.finish()
    return recording


def _events(end_s: float, lidar: bool, rates: dict[str, int], image_format: str):
    """(log time ns, kind, payload, header stamp ns) of the whole drive: CAM_FRONT's images
    (kind 'jpeg', either format), CAM_FRONT_LEFT's H.264 stream; each camera at its rate."""
    for index in range(math.ceil(end_s * rates["CAM_FRONT"])):
        stamp = _camera_stamp_ns(index, rates["CAM_FRONT"])
        data = compressed("CAM_FRONT", index, image_format)
        yield stamp + LATENCY_NS, "jpeg", (stamp, data, index, image_format), stamp
    h264 = H264Stream(rates["CAM_FRONT_LEFT"])
    for index in range(math.ceil(end_s * rates["CAM_FRONT_LEFT"])):
        stamp = _camera_stamp_ns(index, rates["CAM_FRONT_LEFT"])
        (data,) = h264.encode(image("CAM_FRONT_LEFT", index))  # no B-frames, no delay: one out per frame in
        yield stamp + LATENCY_NS, "h264", (stamp, data, index), stamp
    for index in range(math.ceil(end_s * CAMERA_HZ)):
        stamp = _camera_stamp_ns(index)
        if index % CAMERA_HZ == 0:
            yield stamp + LATENCY_NS, "info", stamp, stamp
        if lidar:
            yield stamp + LATENCY_NS, "cloud", (stamp, cloud(index)), stamp
    for k in range(math.ceil(end_s * POSE_HZ)):
        stamp = _ns(k / POSE_HZ)
        yield stamp + LATENCY_NS, "pose", (stamp, k / POSE_HZ), stamp
    for k in range(math.ceil(end_s * CAN_HZ)):
        stamp = _ns(k / CAN_HZ)
        yield stamp + LATENCY_NS, "can", (stamp, k / CAN_HZ), stamp


def _ros_time(ns: int) -> dict:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


def _ros_header(ns: int, frame: str) -> dict:
    return {"stamp": _ros_time(ns), "frame_id": frame}


def _ros_transform(parent: str, child: str, translation, rotation_xyzw, ns: int = 0) -> dict:
    return {"header": _ros_header(ns, parent), "child_frame_id": child, "transform": {
        "translation": dict(zip("xyz", translation)), "rotation": dict(zip("xyzw", rotation_xyzw))}}


def _camera_frame(channel: str) -> str:
    return f"{channel.lower()}_optical"


def _write_ros2(path: Path, events) -> None:
    from mcap_ros2.writer import Writer

    with open(path, "wb") as stream:
        writer = Writer(stream)
        schemas = {name: writer.register_msgdef(name, msgdef(name)) for name in DEFS if "/" in name and name not in (
            "std_msgs/Header", "builtin_interfaces/Time")}
        for log_ns, kind, payload in events:
            for topic, schema, message in _ros2_messages(kind, payload):
                writer.write_message(topic, schemas[schema], message, log_time=log_ns, publish_time=log_ns)
        writer.finish()


def _ros2_messages(kind: str, payload):
    if kind == "static":
        transforms = [_ros_transform("base_link", _camera_frame(c), *m) for c, m in CAMERA_MOUNT.items()]
        transforms.append(_ros_transform("base_link", "lidar_top", *LIDAR_MOUNT))
        yield "/tf_static", "tf2_msgs/TFMessage", {"transforms": transforms}
    elif kind == "jpeg":
        stamp, data, _, image_format = payload
        yield "/cam_front/image/compressed", "sensor_msgs/CompressedImage", {
            "header": _ros_header(stamp, _camera_frame("CAM_FRONT")), "format": image_format, "data": data}
    elif kind == "h264":
        stamp, data, _ = payload
        yield "/cam_front_left/video", "foxglove_msgs/CompressedVideo", {
            "timestamp": _ros_time(stamp), "frame_id": _camera_frame("CAM_FRONT_LEFT"), "data": data, "format": "h264"}
    elif kind == "info":
        for channel in CAMERA_MOUNT:
            yield f"/{channel.lower()}/camera_info", "sensor_msgs/CameraInfo", {
                "header": _ros_header(payload, _camera_frame(channel)), "height": HEIGHT, "width": WIDTH,
                "distortion_model": "plumb_bob", "d": list(DISTORTION), "k": [v for row in INTRINSIC for v in row],
                "r": [1.0, 0, 0, 0, 1, 0, 0, 0, 1], "p": [0.0] * 12, "binning_x": 0, "binning_y": 0,
                "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}
    elif kind == "cloud":
        stamp, points = payload
        fields = [{"name": n, "offset": 4 * i, "datatype": 7, "count": 1} for i, n in enumerate(("x", "y", "z", "intensity"))]
        fields.append({"name": "ring", "offset": 16, "datatype": 4, "count": 1})
        packed = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("i", "<f4"), ("ring", "<u2"), ("pad", "<u2")])
        for column, name in enumerate(("x", "y", "z", "i", "ring")):
            packed[name] = points[:, column]
        yield "/lidar_top/points", "sensor_msgs/PointCloud2", {
            "header": _ros_header(stamp, "lidar_top"), "height": 1, "width": len(points), "fields": fields,
            "is_bigendian": False, "point_step": 20, "row_step": 20 * len(points), "data": packed.tobytes(), "is_dense": True}
    elif kind == "pose":
        stamp, t_s = payload
        position, rotation = pose_at(t_s)
        yield "/odom", "nav_msgs/Odometry", {
            "header": _ros_header(stamp, "map"), "child_frame_id": "base_link",
            "pose": {"pose": {"position": dict(zip("xyz", position)), "orientation": dict(zip("xyzw", rotation))},
                     "covariance": [0.0] * 36},
            "twist": {"twist": {"linear": {"x": SPEED_MPS, "y": 0.0, "z": 0.0}, "angular": {"x": 0.0, "y": 0.0, "z": 0.02}},
                      "covariance": [0.0] * 36}}
        # The same pose as TF (what a localisation node broadcasts), with an unrelated transform beside it.
        yield "/tf", "tf2_msgs/TFMessage", {"transforms": [
            _ros_transform("base_link", "wheel_fl", (1.2, 0.8, 0.3), (0.0, 0.0, 0.0, 1.0), stamp),
            _ros_transform("map", "base_link", position, rotation, stamp)]}
    elif kind == "can":
        stamp, t_s = payload
        speed = int(round(SPEED_MPS * 3.6 / 0.01)).to_bytes(2, "little") + bytes(6)
        steering = int(round(15.0 * math.sin(t_s) / 0.1)).to_bytes(2, "little", signed=True) + bytes([4]) + bytes(5)
        for frame_id, data in ((256, speed), (257, steering)):
            yield "/can/rx", "can_msgs/Frame", {"header": _ros_header(stamp, "can0"), "id": frame_id, "is_rtr": False,
                                               "is_extended": False, "is_error": False, "dlc": 8, "data": list(data)}
        yield "/vehicle/brake", "std_msgs/Float64", {"data": 0.25 if 5 <= t_s < 6 else 0.0}


def _write_foxglove(path: Path, events) -> None:
    from mcap_protobuf.writer import Writer

    with open(path, "wb") as stream:
        writer = Writer(stream)
        for log_ns, kind, payload in events:
            for topic, message in _foxglove_messages(kind, payload):
                writer.write_message(topic, message, log_time=log_ns, publish_time=log_ns)
        writer.finish()


def _pb_time(ns: int):
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def _foxglove_messages(kind: str, payload):
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
    from foxglove_schemas_protobuf.Odometry_pb2 import Odometry
    from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
    from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
    from foxglove_schemas_protobuf.Pose_pb2 import Pose
    from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
    from foxglove_schemas_protobuf.Vector3_pb2 import Vector3

    def transform(parent, child, translation, rotation):
        return FrameTransform(timestamp=_pb_time(_ns(0)), parent_frame_id=parent, child_frame_id=child,
                              translation=Vector3(**dict(zip("xyz", translation))),
                              rotation=Quaternion(**dict(zip("xyzw", rotation))))

    if kind == "static":
        items = [transform("base_link", _camera_frame(c), *m) for c, m in CAMERA_MOUNT.items()]
        items.append(transform("base_link", "lidar_top", *LIDAR_MOUNT))
        yield "/tf_static", FrameTransforms(transforms=items)
    elif kind == "h264":
        stamp, data, _ = payload
        yield "/cam_front_left/video", CompressedVideo(timestamp=_pb_time(stamp), frame_id=_camera_frame("CAM_FRONT_LEFT"),
                                                      data=data, format="h264")
    elif kind == "jpeg":
        stamp, data, _, image_format = payload
        yield "/cam_front/image", CompressedImage(timestamp=_pb_time(stamp), frame_id=_camera_frame("CAM_FRONT"),
                                                  data=data, format=image_format)
    elif kind == "info":
        for channel in CAMERA_MOUNT:
            yield f"/{channel.lower()}/calibration", CameraCalibration(
                timestamp=_pb_time(payload), frame_id=_camera_frame(channel), width=WIDTH, height=HEIGHT,
                distortion_model="plumb_bob", D=list(DISTORTION), K=[v for row in INTRINSIC for v in row],
                R=[1.0, 0, 0, 0, 1, 0, 0, 0, 1], P=[0.0] * 12)
    elif kind == "cloud":
        stamp, points = payload
        fields = [PackedElementField(name=n, offset=4 * i, type=7) for i, n in enumerate(("x", "y", "z", "intensity", "ring"))]
        yield "/lidar_top/points", PointCloud(timestamp=_pb_time(stamp), frame_id="lidar_top", point_stride=20,
                                              fields=fields, data=points.astype("<f4").tobytes())
    elif kind == "pose":
        stamp, t_s = payload
        position, rotation = pose_at(t_s)
        pose = Pose(position=Vector3(**dict(zip("xyz", position))), orientation=Quaternion(**dict(zip("xyzw", rotation))))
        yield "/pose", PoseInFrame(timestamp=_pb_time(stamp), frame_id="map", pose=pose)
    elif kind == "can":
        stamp, t_s = payload
        yield "/odom", Odometry(timestamp=_pb_time(stamp), frame_id="map", body_frame_id="base_link",
                                linear_velocity=Vector3(x=SPEED_MPS), angular_velocity=Vector3(z=0.02))


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a log's camera video, decoded, RGB."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, dB (99 for identical ones)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


def build_two_camera_dataset(log_path: Path, name: str, tmp_path: Path):
    """`jadd build` of one ingested log (CAM_FRONT and CAM_FRONT_LEFT, 2 / 10 Hz, frames kept as
    they are) in tmp_path; the devkit's NuScenes of the part, and the build's summary."""
    import json

    import yaml
    from nuscenes.nuscenes import NuScenes

    from jadd_dagster.cli import main as jadd

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / log_path.name).symlink_to(log_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "channels": ["CAM_FRONT", "CAM_FRONT_LEFT"],
                                    "keyframe_hz": 2, "sweep_hz": 10, "undistort": False, "jpeg_quality": 95}))
    assert jadd(["build", "--spec", str(spec), "--logs", str(logs), "--workdir", str(tmp_path / "work")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    return NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False), summary


def sensor_ticker(instance, resources: dict):
    """tick(name): one evaluation of the named sensor of the project's definitions on `instance`,
    with `resources`, as the daemon would run it (the incoming-drive tests tick it and
    drive_log_sensor in turn)."""
    import dagster as dg

    from jadd_dagster.definitions import defs

    repo = defs.get_repository_def()

    def tick(name: str):
        with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=repo,
                                     resources=resources) as context:
            return repo.get_sensor_def(name).evaluate_tick(context)

    return tick
