"""Synthetic drives recorded as rosbag2 bags in SQLite storage (.db3), written with rosbags' own
Writer and serialised by rosbags' CDR encoder, for the rosbag2 ingest tests.

The drive is the ROS 2 flavour of tests/mcap_drives.py (the same events, message definitions and
real H.264 / JPEG payloads), one bag directory per (start_s, end_s) segment, so several bags of one
drive may overlap or leave gaps. Variants: `tf_chain` publishes the pose as TF links map -> odom
(2 Hz, a drifting correction) -> base_footprint (50 Hz) -> base_link (static); `definitions=False`
drops the stored message definitions, as rosbag2 on Humble writes bags; `compress` compresses
each message with zstd; `corrupt` changes the serialised bytes of chosen messages; `storage="mcap"`
writes rosbag2's MCAP storage instead of SQLite.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype

import mcap_drives as drives
from mcap_drives import DEFS, START_S, msgdef, pose_at

POSE_HZ = drives.POSE_HZ
MAP_ODOM_HZ = 2  # the slow link of the TF chain
FOOTPRINT_HEIGHT = 0.3  # base_link above base_footprint: the static link at the bottom of the chain


def ros2_type(name: str) -> str:
    """'sensor_msgs/CompressedImage' -> 'sensor_msgs/msg/CompressedImage' (rosbag2's spelling)."""
    package, message = name.split("/")
    return f"{package}/msg/{message}"


def typestore():
    """A rosbags typestore with every message type of the drive, from mcap_drives' definitions."""
    store = get_typestore(Stores.EMPTY)
    for name in DEFS:
        store.register(get_types_from_msg(msgdef(name), ros2_type(name)))
    return store


def to_message(store, typename: str, value: dict):
    """A rosbags message object of typename from a dict of its fields (nested dicts, lists)."""
    _, fields = store.fielddefs[typename]
    kwargs = {}
    for name, (kind, detail) in fields:
        kwargs[name] = _to_field(store, kind, detail, value[name])
    return store.types[typename](**kwargs)


def _to_field(store, kind, detail, value):
    if kind == Nodetype.NAME:
        return to_message(store, detail, value)
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (item_kind, item_detail), _ = detail
        if item_kind == Nodetype.BASE and item_detail[0] != "string":
            dtype = {"uint8": np.uint8, "float64": np.float64, "float32": np.float32, "uint32": np.uint32,
                     "int32": np.int32, "uint16": np.uint16, "int8": np.int8, "bool": np.bool_}[item_detail[0]]
            return np.frombuffer(value, dtype=np.uint8).copy() if isinstance(value, bytes) else np.array(value, dtype=dtype)
        return [_to_field(store, item_kind, item_detail, v) for v in value]
    return value


@dataclass
class BagRecording(drives.Recording):
    """What went into a drive's bags (mcap_drives.Recording; files are the bag directories), and
    the stamps of the TF chain's map -> odom link (µs)."""

    map_odom_stamps: list[int] = field(default_factory=list)


def map_odom_at(t_s: float) -> tuple[tuple[float, float, float], float]:
    """The map -> odom correction at t seconds: a translation (metres) and a yaw (rad), both
    drifting linearly (so interpolating between its transforms is exact)."""
    return (5.0 + 0.1 * t_s, -3.0 + 0.05 * t_s, 0.0), 0.1 + 0.01 * t_s


def chain_pose_at(t_s: float) -> tuple[tuple[float, float, float], float]:
    """Where base_link is in map at t seconds in the tf_chain drive: map -> odom (map_odom_at)
    after odom -> base_footprint (pose_at, on the ground) after base_footprint -> base_link."""
    (mx, my, _), myaw = map_odom_at(t_s)
    (ox, oy, _), (_, _, qz, qw) = pose_at(t_s)
    oyaw = 2 * math.atan2(qz, qw)
    c, s = math.cos(myaw), math.sin(myaw)
    return (mx + c * ox - s * oy, my + s * ox + c * oy, FOOTPRINT_HEIGHT), myaw + oyaw


def _yaw_xyzw(yaw: float) -> tuple[float, float, float, float]:
    return 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)


def _messages(kind: str, payload, tf_chain: bool, map_odom: bool = True):
    """The drive's ROS 2 messages for one event (mcap_drives'), with the TF chain variant."""
    for topic, schema, message in drives._ros2_messages(kind, payload):
        if tf_chain and kind == "static":
            message["transforms"].append(drives._ros_transform(
                "base_footprint", "base_link", (0.0, 0.0, FOOTPRINT_HEIGHT), (0.0, 0.0, 0.0, 1.0)))
        if tf_chain and topic == "/tf":
            stamp, t_s = payload
            (x, y, _), rotation = pose_at(t_s)
            message = {"transforms": [message["transforms"][0],  # the wheel beside it
                                      drives._ros_transform("odom", "base_footprint", (x, y, 0.0), rotation, stamp)]}
        yield topic, schema, message
    if tf_chain and map_odom and kind == "pose" and round(payload[1] * POSE_HZ) % (POSE_HZ // MAP_ODOM_HZ) == 0:
        stamp, t_s = payload
        translation, yaw = map_odom_at(t_s)
        yield "/tf", "tf2_msgs/TFMessage", {"transforms": [
            drives._ros_transform("map", "odom", translation, _yaw_xyzw(yaw), stamp)]}


def write_drive(folder: Path, segments: list[tuple[float, float]], lidar: bool = True, name: str = "drive",
                tf_chain: bool = False, map_odom: bool = True, definitions: bool = True, compress: bool = False,
                corrupt: dict[tuple[str, int], Callable[[bytes], bytes]] | None = None,
                storage: str = "sqlite3") -> BagRecording:
    """One bag directory folder/<name>_<n> per (start_s, end_s) segment of one continuous drive;
    map_odom=False leaves the chain's map -> odom link out (localisation not running); corrupt
    maps (topic, index of the message in its bag) to a change of its serialised bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    store = typestore()
    recording = BagRecording()
    events = sorted(_drive_events(max(end for _, end in segments), lidar), key=lambda e: e[0])
    for number, (start_s, end_s) in enumerate(segments):
        path = folder / f"{name}_{number}"
        start_ns, end_ns = drives._ns(start_s), drives._ns(end_s)
        kept = [(start_ns, "static", None, start_ns)] + [e for e in events if start_ns <= e[3] < end_ns]
        _write_bag(path, store, kept, tf_chain, map_odom, compress, corrupt or {}, StoragePlugin[storage.upper()])
        if not definitions:  # as rosbag2 on Humble: the types are only named
            with sqlite3.connect(path / f"{path.name}.db3") as db:
                db.execute("DELETE FROM message_definitions")
        recording.add(path, kept)
        recording.map_odom_stamps += [
            stamp // 1000 for _, kind, payload, stamp in kept
            if tf_chain and map_odom and kind == "pose" and round(payload[1] * POSE_HZ) % (POSE_HZ // MAP_ODOM_HZ) == 0
        ]
    recording.finish()
    recording.map_odom_stamps = sorted(set(recording.map_odom_stamps))
    return recording


def _drive_events(end_s: float, lidar: bool):
    """mcap_drives' events of the whole drive: every camera at CAMERA_HZ, CAM_FRONT as JPEG."""
    return drives._events(end_s, lidar, {c: drives.CAMERA_HZ for c in drives.CAMERA_MOUNT}, "jpeg")


def _write_bag(path: Path, store, events, tf_chain: bool, map_odom: bool, compress: bool, corrupt: dict,
               storage: StoragePlugin) -> None:
    writer = Writer(path, version=9, storage_plugin=storage)
    if compress:
        writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
    connections, counts = {}, {}
    with writer:
        for log_ns, kind, payload, _ in events:
            for topic, schema, message in _messages(kind, payload, tf_chain, map_odom):
                typename = ros2_type(schema)
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, typename, msgdef=msgdef(schema),
                                                               rihs01=store.hash_rihs01(typename))
                data = bytes(store.serialize_cdr(to_message(store, typename, message), typename))
                index = counts.get(topic, 0)
                counts[topic] = index + 1
                if (topic, index) in corrupt:
                    data = corrupt[(topic, index)](data)
                writer.write(connections[topic], log_ns, data)


def seconds_of(stamp_us: int) -> float:
    """Seconds into the drive of a stamp in µs."""
    return (stamp_us - START_S * 1_000_000) / 1e6

