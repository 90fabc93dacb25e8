"""Tiny synthetic scene folders (the sampling stage's output) for the nuScenes merge tests.

Each scene: 4 s, keyframes at 2 Hz (9 samples), frames at 10 Hz per channel (41: 9 keyframes and 32
sweeps), CAN rows at 100 Hz (401) and pose rows at 50 Hz (201). The vehicle drives straight along a
log-specific heading; every value comes from the functions below, which the tests use as ground truth.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from jadd_dagster.camera import (
    CameraCalibration,
    camera_to_ego_rotation,
    pinhole_intrinsic,
    quaternion_from_matrix,
    yaw_quaternion,
)
from jadd_dagster.logs.format import CAN_COLUMNS, POSE_COLUMNS
from jadd_dagster.scene_record import SCENE_CAN, SCENE_POSE, EgoPose, FrameRecord, SceneRecord, scene_id

LOG_START_US = 1_700_000_000_000_000
LOG_GAP_US = 3_600_000_000  # logs start an hour apart: the devkit's list_scenes fails on equal scene starts
SCENE_GAP_US = 5_000_000
DURATION_US = 4_000_000
KEYFRAME_US = 500_000
SWEEP_US = 100_000
CAN_US = 10_000
POSE_US = 20_000
CHANNELS = {"CAM_FRONT": (0.0, 2_000), "CAM_BACK": (180.0, 4_000)}  # yaw in degrees, frame time offset µs
WIDTH, HEIGHT = 64, 36
N_SAMPLES = DURATION_US // KEYFRAME_US + 1
N_FRAMES = DURATION_US // SWEEP_US + 1


def origin(log_index: int) -> tuple[float, float, float]:
    """Start x, y (metres, >= 50) and heading (rad) of a log."""
    return 80.0 + 30.0 * log_index, 60.0 + 20.0 * log_index, math.radians(30.0 * log_index)


def speed_mps(t_s: float | np.ndarray):
    """CAN speed (m/s) at t_s seconds since the log start."""
    return 8.0 + 0.25 * np.sin(0.7 * np.asarray(t_s))


def distance_m(t_s: float | np.ndarray):
    t = np.asarray(t_s)
    return 8.0 * t + 0.25 / 0.7 * (1.0 - np.cos(0.7 * t))


def steering_deg(t_s):
    return 30.0 * np.sin(0.5 * np.asarray(t_s))


def ego_xy(log_index: int, t_s):
    x0, y0, yaw = origin(log_index)
    d = distance_m(t_s)
    return x0 + d * math.cos(yaw), y0 + d * math.sin(yaw)


def log_start_us(log_index: int) -> int:
    return LOG_START_US + log_index * LOG_GAP_US


def scene_start_us(log_index: int, scene_index: int) -> int:
    return log_start_us(log_index) + scene_index * SCENE_GAP_US


def _jpeg(channel: str) -> bytes:
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, :, 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :]
    image[:, :, 1 if channel == "CAM_FRONT" else 2] = 180
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def calibration(channel: str) -> CameraCalibration:
    yaw_deg, _ = CHANNELS[channel]
    return CameraCalibration(
        channel=channel,
        width=WIDTH,
        height=HEIGHT,
        intrinsic=pinhole_intrinsic(WIDTH, HEIGHT, 90.0),
        translation=(1.5 if yaw_deg == 0 else -1.0, 0.0, 1.6),
        rotation=quaternion_from_matrix(camera_to_ego_rotation(yaw_deg)),
    )


def write_scene(root: Path, log_index: int, scene_index: int) -> Path:
    """Write one scene folder under root and return it."""
    log_id = f"log-{log_index:04d}"
    folder = root / f"{log_id}-{scene_index:04d}"
    start = scene_start_us(log_index, scene_index)
    log_start = log_start_us(log_index)
    _, _, yaw = origin(log_index)
    rotation = yaw_quaternion(yaw)

    def pose_at(t_us: int) -> EgoPose:
        x, y = ego_xy(log_index, (t_us - log_start) / 1e6)
        return EgoPose((float(x), float(y), 0.0), rotation)

    frames = []
    for channel, (_, offset) in CHANNELS.items():
        (folder / channel).mkdir(parents=True, exist_ok=True)
        data = _jpeg(channel)
        for k in range(N_FRAMES):
            t = start + k * SWEEP_US + offset
            key = k % (KEYFRAME_US // SWEEP_US) == 0
            path = f"{channel}/{t}.jpg"
            (folder / path).write_bytes(data)
            frames.append(FrameRecord(channel, t, key, k // 5 if key else None, path, WIDTH, HEIGHT, pose_at(t)))

    can_t = np.arange(start, start + DURATION_US + 1, CAN_US, dtype=np.int64)
    t_s = (can_t - log_start) / 1e6
    can = pd.DataFrame(
        {
            "timestamp_us": can_t,
            "speed_mps": speed_mps(t_s),
            "steering_deg": steering_deg(t_s),
            "accel_mps2": 0.175 * np.cos(0.7 * t_s),
            "brake": np.where(t_s % 2 < 0.5, 0.3, 0.0),
            "throttle": np.where(t_s % 2 < 0.5, 0.0, 0.25),
            "yaw_rate_rps": 0.02 * np.sin(t_s),
            "gear": np.full(len(can_t), 3, dtype=np.int64),
            "turn_signal": np.where(t_s % 3 < 1, 1, 0).astype(np.int64),
        },
        columns=list(CAN_COLUMNS),
    )
    can.to_parquet(folder / SCENE_CAN)
    pose_t = np.arange(start, start + DURATION_US + 1, POSE_US, dtype=np.int64)
    x, y = ego_xy(log_index, (pose_t - log_start) / 1e6)
    pose = pd.DataFrame(
        {"timestamp_us": pose_t, "x": x, "y": y, "z": 0.0, "qw": rotation[0], "qx": 0.0, "qy": 0.0, "qz": rotation[3]},
        columns=list(POSE_COLUMNS),
    )
    pose.to_parquet(folder / SCENE_POSE)

    SceneRecord(
        scene_id=scene_id(log_id, scene_index),
        log_id=log_id,
        scene_index=scene_index,
        location="test-town",
        vehicle="jadd-test-car",
        date_captured="2023-11-14",
        log_start_time_us=log_start,
        start_time_us=start,
        end_time_us=start + DURATION_US,
        profile="test",
        keyframe_hz=2.0,
        sweep_hz=10.0,
        cameras={channel: calibration(channel).to_json() for channel in CHANNELS},
        keyframe_times_us=[start + i * KEYFRAME_US for i in range(N_SAMPLES)],
        frames=frames,
    ).save(folder)
    return folder


def write_scenes(root: Path, logs: int = 2, scenes_per_log: int = 2) -> list[Path]:
    return [write_scene(root, log, scene) for log in range(logs) for scene in range(scenes_per_log)]
