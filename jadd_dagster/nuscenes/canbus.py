"""The nuScenes CAN bus expansion (can_bus/<scene name>_<message>.json) of one scene.

Built from the scene's can.parquet (logs.format.CAN_COLUMNS, ~100 Hz) and pose.parquet
(POSE_COLUMNS, ~50 Hz) in the layout that nuscenes.can_bus.can_bus_api.NuScenesCanBus reads (keys and
units of the devkit's can_bus/README.md; every message has an integer `utime` in µs):

    pose                 every pose row (50 Hz): pos [m, map frame], orientation [w, x, y, z] ego-to-map,
                         vel [m/s], accel [m/s², gravity removed] and rotation_rate [rad/s] in the ego
                         frame (x forward, y left, z up), from the CAN speed, acceleration and yaw rate
    ms_imu               every CAN row (100 Hz): linear_accel [m/s², includes +g on z], q (orientation),
                         rotation_rate [rad/s]
    steeranglefeedback   every CAN row: value = steering-wheel angle in rad, positive left (the
                         maintainers' correction of the README, devkit issue #371)
    vehicle_monitor      2 Hz: vehicle_speed km/h, steering deg, yaw_rate deg/s, brake bar, throttle 0..1000, ...
    zoe_veh_info         every CAN row: wheel speeds rpm, odom_speed km/h, accelerations, steering deg, ...
    zoesensors           every CAN row (the real sensor runs at ~900 Hz; we have 100 Hz)
    route                the driven path: [x, y] points ≥ ROUTE_SPACING_M apart (we have no planned route)
    meta                 per message: message_count, message_freq, timespan and var_stats

Quantities the logs do not record (battery, solar sensors, torques) are written as 0 so that the
files keep every key of the nuScenes schema.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from jadd_dagster.logs.format import CAN_COLUMNS, POSE_COLUMNS

MESSAGE_NAMES = ("ms_imu", "pose", "steeranglefeedback", "vehicle_monitor", "zoesensors", "zoe_veh_info")
DERIVED_NAMES = ("meta", "route")
VEHICLE_MONITOR_HZ = 2.0
ROUTE_SPACING_M = 1.0
WHEEL_RADIUS_M = 0.31  # a Renault Zoe's tyre, for wheel rpm from speed
GRAVITY_MPS2 = 9.80665
BRAKE_MAX_BAR = 126
GEAR_POSITION = {0: 0, 1: 1, 2: 2, 3: 7}  # our P R N D to the Zoe's gear_position (0 parked, 7 driving)


def _clean(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing}")
    frame = frame.loc[:, list(columns)].dropna()
    frame = frame.sort_values("timestamp_us").drop_duplicates("timestamp_us").reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"{what} has no rows in the scene window")
    return frame


def read_scene_tables(can_path: Path, pose_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scene's CAN and pose rows, sorted by time without duplicate timestamps."""
    can = _clean(pd.read_parquet(can_path), CAN_COLUMNS, can_path.name)
    pose = _clean(pd.read_parquet(pose_path), POSE_COLUMNS, pose_path.name)
    return can, pose


def _interp(t: np.ndarray, can: pd.DataFrame, column: str) -> np.ndarray:
    return np.interp(t, can["timestamp_us"].to_numpy(np.float64), can[column].to_numpy(np.float64))


def _orientations(t: np.ndarray, pose: pd.DataFrame) -> np.ndarray:
    """Pose quaternions [w, x, y, z] interpolated (normalised lerp) at times t (µs)."""
    q = pose[["qw", "qx", "qy", "qz"]].to_numpy(np.float64).copy()
    for i in range(1, len(q)):  # one hemisphere, so that componentwise interpolation is meaningful
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    pose_t = pose["timestamp_us"].to_numpy(np.float64)
    out = np.stack([np.interp(t, pose_t, q[:, k]) for k in range(4)], axis=1)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _utimes(frame: pd.DataFrame) -> list[int]:
    return [int(v) for v in frame["timestamp_us"].to_numpy(np.int64)]


def pose_messages(can: pd.DataFrame, pose: pd.DataFrame) -> list[dict]:
    t = pose["timestamp_us"].to_numpy(np.float64)
    speed, accel, yaw_rate = (_interp(t, can, c) for c in ("speed_mps", "accel_mps2", "yaw_rate_rps"))
    pos = pose[["x", "y", "z"]].to_numpy(np.float64).tolist()
    q = pose[["qw", "qx", "qy", "qz"]].to_numpy(np.float64)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).tolist()
    return [
        {
            "accel": [float(accel[i]), float(speed[i] * yaw_rate[i]), 0.0],
            "orientation": q[i],
            "pos": pos[i],
            "rotation_rate": [0.0, 0.0, float(yaw_rate[i])],
            "utime": utime,
            "vel": [float(speed[i]), 0.0, 0.0],
        }
        for i, utime in enumerate(_utimes(pose))
    ]


def imu_messages(can: pd.DataFrame, pose: pd.DataFrame) -> list[dict]:
    speed, accel, yaw_rate = (can[c].to_numpy(np.float64) for c in ("speed_mps", "accel_mps2", "yaw_rate_rps"))
    q = _orientations(can["timestamp_us"].to_numpy(np.float64), pose).tolist()
    return [
        {
            "linear_accel": [float(accel[i]), float(speed[i] * yaw_rate[i]), GRAVITY_MPS2],
            "q": q[i],
            "rotation_rate": [0.0, 0.0, float(yaw_rate[i])],
            "utime": utime,
        }
        for i, utime in enumerate(_utimes(can))
    ]


def steer_angle_messages(can: pd.DataFrame) -> list[dict]:
    steering = np.radians(can["steering_deg"].to_numpy(np.float64))
    return [{"utime": utime, "value": float(steering[i])} for i, utime in enumerate(_utimes(can))]


def _wheel_rpm(speed_mps: np.ndarray) -> np.ndarray:
    return speed_mps / (2 * math.pi * WHEEL_RADIUS_M) * 60.0


def vehicle_monitor_rows(can: pd.DataFrame, hz: float = VEHICLE_MONITOR_HZ) -> np.ndarray:
    """Indices of the CAN rows sent at `hz`: the first row at or after each tick from the first row."""
    t = can["timestamp_us"].to_numpy(np.int64)
    step = round(1e6 / hz)
    ticks = np.arange(t[0], t[-1] + 1, step, dtype=np.int64)
    return np.unique(np.clip(np.searchsorted(t, ticks, side="left"), 0, len(t) - 1))


def vehicle_monitor_messages(can: pd.DataFrame) -> list[dict]:
    t = can["timestamp_us"].to_numpy(np.float64)
    steering = can["steering_deg"].to_numpy(np.float64)
    steering_speed = np.gradient(steering, t / 1e6) if len(t) > 1 else np.zeros_like(t)
    rows = vehicle_monitor_rows(can)
    speed = can["speed_mps"].to_numpy(np.float64)
    brake, throttle = can["brake"].to_numpy(np.float64), can["throttle"].to_numpy(np.float64)
    yaw_rate, gear = can["yaw_rate_rps"].to_numpy(np.float64), can["gear"].to_numpy(np.int64)
    signal = can["turn_signal"].to_numpy(np.int64)
    utimes = _utimes(can)
    rpm = _wheel_rpm(speed)
    return [
        {
            "available_distance": 0,
            "battery_level": 0,
            "brake": int(round(float(np.clip(brake[i], 0, 1)) * BRAKE_MAX_BAR)),
            "brake_switch": 2 if brake[i] > 0.05 else 1,
            "gear_position": GEAR_POSITION.get(int(gear[i]), int(gear[i])),
            "left_signal": int(signal[i] == 1),
            "rear_left_rpm": float(rpm[i]),
            "rear_right_rpm": float(rpm[i]),
            "right_signal": int(signal[i] == -1),
            "steering": round(float(steering[i]), 1),
            "steering_speed": round(float(steering_speed[i]), 1),
            "throttle": int(round(float(np.clip(throttle[i], 0, 1)) * 1000)),
            "utime": utimes[i],
            "vehicle_speed": round(float(speed[i]) * 3.6, 2),
            "yaw_rate": round(math.degrees(float(yaw_rate[i])), 1),
        }
        for i in rows
    ]


def zoe_veh_info_messages(can: pd.DataFrame) -> list[dict]:
    t = can["timestamp_us"].to_numpy(np.float64)
    speed = can["speed_mps"].to_numpy(np.float64)
    distance_cm = np.concatenate([[0.0], np.cumsum(np.diff(t) / 1e6 * 0.5 * (speed[1:] + speed[:-1]))]) * 100.0
    odom = np.mod(distance_cm, 2 * math.pi * WHEEL_RADIUS_M * 100.0)
    accel, yaw_rate = can["accel_mps2"].to_numpy(np.float64), can["yaw_rate_rps"].to_numpy(np.float64)
    steering, throttle = can["steering_deg"].to_numpy(np.float64), can["throttle"].to_numpy(np.float64)
    rpm = _wheel_rpm(speed)
    messages = []
    for i, utime in enumerate(_utimes(can)):
        wheel = float(rpm[i])
        messages.append(
            {
                "FL_wheel_speed": wheel,
                "FR_wheel_speed": wheel,
                "RL_wheel_speed": wheel,
                "RR_wheel_speed": wheel,
                "left_solar": 0,
                "longitudinal_accel": float(accel[i]),
                "meanEffTorque": 0,
                "odom": float(odom[i]),
                "odom_speed": float(speed[i] * 3.6),
                "pedal_cc": int(round(float(np.clip(throttle[i], 0, 1)) * 1000)),
                "regen": 0,
                "requestedTorqueAfterProc": 0,
                "right_solar": 0,
                "steer_corrected": float(steering[i]),
                "steer_offset_can": 0.0,
                "steer_raw": float(steering[i]),
                "transversal_accel": float(speed[i] * yaw_rate[i] / GRAVITY_MPS2),
                "utime": utime,
            }
        )
    return messages


def zoesensors_messages(can: pd.DataFrame) -> list[dict]:
    brake = np.clip(can["brake"].to_numpy(np.float64), 0, 1)
    steering, throttle = can["steering_deg"].to_numpy(np.float64), can["throttle"].to_numpy(np.float64)
    return [
        {
            "brake_sensor": float(0.375 + 0.036 * brake[i]),
            "steering_sensor": float(steering[i]),
            "throttle_sensor": float(np.clip(throttle[i], 0, 1) * 1000),
            "utime": utime,
        }
        for i, utime in enumerate(_utimes(can))
    ]


def route_points(pose: pd.DataFrame, spacing_m: float = ROUTE_SPACING_M) -> list[list[float]]:
    """The driven path as [x, y] points (metres, map frame) at least spacing_m apart, ends included."""
    xy = pose[["x", "y"]].to_numpy(np.float64)
    keep = [0]
    for i in range(1, len(xy)):
        if np.hypot(*(xy[i] - xy[keep[-1]])) >= spacing_m:
            keep.append(i)
    if keep[-1] != len(xy) - 1:
        keep.append(len(xy) - 1)
    return xy[keep].tolist()


def _stats(values: np.ndarray) -> dict:
    diffs = np.diff(values, axis=0) if len(values) > 1 else np.zeros((1, *values.shape[1:]))

    def as_json(v: np.ndarray):
        return v.tolist() if np.ndim(v) else float(v)

    return {
        "max": as_json(values.max(axis=0)),
        "mean": as_json(values.mean(axis=0)),
        "min": as_json(values.min(axis=0)),
        "std": as_json(values.std(axis=0)),
        "diff_max": as_json(diffs.max(axis=0)),
        "diff_mean": as_json(diffs.mean(axis=0)),
        "diff_min": as_json(diffs.min(axis=0)),
        "diff_std": as_json(diffs.std(axis=0)),
    }


def meta_stats(messages: dict[str, list[dict]]) -> dict:
    """The meta file: count, frequency (Hz), timespan (s) and value statistics of each message."""
    meta = {}
    for name, items in messages.items():
        utimes = np.array([m["utime"] for m in items], dtype=np.int64)
        timespan = float(utimes[-1] - utimes[0]) / 1e6 if len(utimes) else 0.0
        keys = [k for k in (items[0] if items else {}) if k != "utime"]
        meta[name] = {
            "message_count": len(items),
            "message_freq": (len(items) - 1) / timespan if timespan > 0 else 0.0,
            "timespan": timespan,
            "var_stats": {k: _stats(np.array([m[k] for m in items], dtype=np.float64)) for k in keys},
        }
    return meta


def can_bus_messages(can: pd.DataFrame, pose: pd.DataFrame) -> dict[str, list | dict]:
    """Every can_bus file of a scene by message name (MESSAGE_NAMES + DERIVED_NAMES)."""
    messages: dict[str, list] = {
        "ms_imu": imu_messages(can, pose),
        "pose": pose_messages(can, pose),
        "steeranglefeedback": steer_angle_messages(can),
        "vehicle_monitor": vehicle_monitor_messages(can),
        "zoesensors": zoesensors_messages(can),
        "zoe_veh_info": zoe_veh_info_messages(can),
    }
    return {**messages, "meta": meta_stats(messages), "route": route_points(pose)}


def shifted_messages(messages: dict[str, list | dict], dx_m: float, dy_m: float) -> dict[str, list | dict]:
    """The messages with every map-frame position moved by (-dx_m, -dy_m): pose `pos` and the route,
    and the meta statistics recomputed. What a scene's map window does to all its global positions."""
    if dx_m == 0 and dy_m == 0:
        return messages
    shifted = dict(messages)
    shifted["pose"] = [{**m, "pos": [m["pos"][0] - dx_m, m["pos"][1] - dy_m, *m["pos"][2:]]} for m in messages["pose"]]
    shifted["route"] = [[x - dx_m, y - dy_m] for x, y in messages["route"]]
    shifted["meta"] = meta_stats({name: shifted[name] for name in MESSAGE_NAMES if name in shifted})
    return shifted


def can_bus_file(can_dir: Path, scene_name: str, message: str) -> Path:
    return can_dir / f"{scene_name}_{message}.json"


def write_can_bus(can_dir: Path, scene_name: str, messages: dict[str, list | dict]) -> list[Path]:
    """Write can_bus/<scene_name>_<message>.json for every message; returns the files written."""
    can_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for message, content in messages.items():
        path = can_bus_file(can_dir, scene_name, message)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(content, sort_keys=True, separators=(",", ":")))
        tmp.replace(path)
        written.append(path)
    return written
