"""A log's lidar sweeps: the .pcd.bin point layout, points in the ego frame, points per object.

A sweep is float32 points of fmt.LIDAR_POINT_DIMS values (x, y, z metres in the sensor frame,
intensity 0..255, ring index), one file per sweep (fmt.lidar_sweep_file), as nuScenes' LIDAR_TOP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jadd_dagster.camera import matrix_from_quaternion
from jadd_dagster.geometry import count_points_in_boxes
from jadd_dagster.logs import format as fmt

CHANNEL = "LIDAR_TOP"


def read_sweep(path: Path) -> np.ndarray:
    """A .pcd.bin sweep as (N, fmt.LIDAR_POINT_DIMS) float32."""
    return np.fromfile(path, dtype=np.float32).reshape(-1, fmt.LIDAR_POINT_DIMS)


def sweep_to_ego(points: np.ndarray, calib: fmt.LidarCalibration) -> np.ndarray:
    """Sensor-frame points (N, >= 3) in the ego frame (N, 3)."""
    return points[:, :3].astype(np.float64) @ matrix_from_quaternion(calib.rotation).T + np.asarray(calib.translation)


def lidar_points_per_object(
    log, timestamp_us: int, channel: str = CHANNEL, margin: float = 0.1, sweep: np.ndarray | None = None
) -> pd.Series:
    """Ground truth num_lidar_pts: lidar points of the sweep at timestamp_us inside each object's
    box (grown by margin metres: returns lie on the surface, with range noise), by instance_id.
    log is a DriveLog with objects, and with that sweep unless it is given (sensor-frame points,
    e.g. read from a sampled scene)."""
    sweep = log.lidar_sweep(channel, timestamp_us) if sweep is None else sweep
    points = sweep_to_ego(sweep, log.lidar_calibration[channel])
    boxes = log.objects_at(timestamp_us)
    if boxes.empty:
        return pd.Series(dtype=np.int64)
    translation, rotation = log.pose_at(np.array([timestamp_us]))
    ego_rot = matrix_from_quaternion(rotation[0])
    centres = (boxes[["x", "y", "z"]].to_numpy() - translation[0]) @ ego_rot
    yaws = boxes["yaw"].to_numpy() - np.arctan2(ego_rot[1, 0], ego_rot[0, 0])
    counts = count_points_in_boxes(points, centres, boxes[["width", "length", "height"]].to_numpy(), yaws, margin)
    return pd.Series(counts, index=boxes["instance_id"].to_numpy(), name="num_lidar_pts")
