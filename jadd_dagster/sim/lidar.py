"""LIDAR_TOP for the synthetic logs: a 32-beam spinning lidar on the roof, like nuScenes'.

Each sweep casts BEAMS x AZIMUTH_STEPS rays from the sensor against the flat ground (z = 0 in the
map frame) and the world's object boxes (sim/world.py) and keeps the nearest hit within RANGE_M,
with Gaussian range noise. The sensor sits high enough that its lowest beam (about -31 degrees)
clears the ego's roof and meets the ground beyond the car's footprint. A sweep is taken at one
instant, its timestamp: the ego and the objects are where they are then (no smear over the 50 ms
revolution), so a sweep needs no motion compensation.

Points are written in the sensor frame as nuScenes .pcd.bin files: float32 x, y, z (metres),
intensity (0..255), ring index (0 = lowest beam); reading them, and counting points per object, is
real-log work in logs/sweeps.py. Intensity follows the surface: dark asphalt,
bright lane paint, a per-class level for objects (retro-reflective cones brightest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jadd_dagster.camera import matrix_from_quaternion, quaternion_from_matrix
from jadd_dagster.categories import CLASSES
from jadd_dagster.geometry import ray_boxes, yaw_matrix
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.sweeps import CHANNEL
from jadd_dagster.logs.tracks import Boxes, Tracks
from jadd_dagster.sim.render import ground_pattern
BEAMS = 32
ELEVATIONS_DEG = np.linspace(-30.67, 10.67, BEAMS)  # Velodyne HDL-32E, 1.33 degrees apart
AZIMUTH_STEPS = 1084  # rays per beam and revolution (about 0.33 degrees)
RANGE_M = 70.0
MIN_RANGE_M = 1.0
RANGE_NOISE_M = 0.02  # standard deviation
MOUNT_TRANSLATION = (0.94, 0.0, 1.84)  # metres in the ego frame, as nuScenes' LIDAR_TOP
MOUNT_YAW_DEG = -90.0  # sensor x points right and y forward (nuScenes LIDAR_TOP axes)
# Intensity levels (0..255) per surface.
ASPHALT_INTENSITY = (3.0, 12.0)
PAINT_INTENSITY = (40.0, 70.0)
CLASS_INTENSITY = {
    "car": 35.0, "truck": 30.0, "bus": 30.0, "trailer": 25.0, "construction_vehicle": 40.0, "pedestrian": 15.0,
    "motorcycle": 30.0, "bicycle": 20.0, "traffic_cone": 180.0, "barrier": 110.0,
}
_CLASS_INTENSITY = np.array([CLASS_INTENSITY[c.name] for c in CLASSES] + [30.0], dtype=np.float32)
_FACE_GAIN = np.array([1.0, 0.9, 0.8, 0.8, 0.7, 0.6], dtype=np.float32)


def lidar_calibration(rng: np.random.Generator) -> fmt.LidarCalibration:
    """The roof lidar's mounting, its yaw and tilt varied by a fraction of a degree."""
    yaw = np.radians(MOUNT_YAW_DEG + rng.uniform(-0.5, 0.5))
    tilt_x, tilt_y = np.radians(rng.uniform(-0.3, 0.3, 2))
    about_x = np.array([[1, 0, 0], [0, np.cos(tilt_x), -np.sin(tilt_x)], [0, np.sin(tilt_x), np.cos(tilt_x)]])
    about_y = np.array([[np.cos(tilt_y), 0, np.sin(tilt_y)], [0, 1, 0], [-np.sin(tilt_y), 0, np.cos(tilt_y)]])
    rotation = yaw_matrix(yaw) @ about_y @ about_x
    return fmt.LidarCalibration(CHANNEL, MOUNT_TRANSLATION, quaternion_from_matrix(rotation))


def sweep_offsets_us(duration_us: int, hz: int = fmt.LIDAR_HZ) -> np.ndarray:
    """Sweep times (µs from the log start): every 1/hz s from 0, < duration."""
    return np.arange(0, duration_us, 1_000_000 // hz, dtype=np.int64)


@dataclass(frozen=True)
class LidarRays:
    """Every ray of a revolution, column (azimuth) by column, the beams of a column together.

    sensor: (3, N) float32 unit directions in the sensor frame; ego: (3, N) float32 the same in the
    ego frame; origin: (3,) the sensor in the ego frame (metres); rotation: (3, 3) sensor-to-ego;
    ring: (N,) beam index; ground:
    (N,) float32 metres along each ray to the ground (inf if it never gets there); azimuth_steps:
    columns per revolution.
    """

    sensor: np.ndarray
    ego: np.ndarray
    origin: np.ndarray
    rotation: np.ndarray
    ring: np.ndarray
    ground: np.ndarray
    azimuth_steps: int


def lidar_rays(calib: fmt.LidarCalibration, azimuth_steps: int = AZIMUTH_STEPS) -> LidarRays:
    """Precompute a lidar's rays on a level ego (its height above the ground never changes)."""
    azimuth = np.arange(azimuth_steps) * (2 * np.pi / azimuth_steps)
    elevation = np.radians(ELEVATIONS_DEG)
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")  # (columns, beams)
    sensor = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]).reshape(3, -1)
    rotation = matrix_from_quaternion(calib.rotation)
    ego = rotation @ sensor
    origin = np.asarray(calib.translation, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ground = np.where(ego[2] < -1e-6, -origin[2] / ego[2], np.inf)
    return LidarRays(
        sensor=sensor.astype(np.float32), ego=ego.astype(np.float32), origin=origin, rotation=rotation,
        ring=np.tile(np.arange(BEAMS), azimuth_steps), ground=ground.astype(np.float32),
        azimuth_steps=azimuth_steps,
    )


def simulate_sweep(
    rays: LidarRays, ego_translation: np.ndarray, ego_yaw: float, boxes: Boxes | None, rng: np.random.Generator
) -> np.ndarray:
    """One sweep's points (M, 5) float32 in the sensor frame (fmt.LIDAR_POINT_DIMS columns) with the
    ego level at ego_translation (metres, map frame) heading ego_yaw (rad); boxes in the map frame."""
    n = rays.sensor.shape[1]
    distance = rays.ground.copy()
    hit_box = np.full(n, -1)
    face = np.zeros(n, dtype=np.int8)
    if boxes is not None and len(boxes):
        rotation = yaw_matrix(ego_yaw)
        centres = np.einsum("ni,ij->nj", boxes.centre - ego_translation, rotation)  # ego frame (no BLAS threads)
        yaws = boxes.yaw - ego_yaw
        ray, box = _candidate_rays(rays, centres, 0.5 * np.linalg.norm(boxes.size, axis=1))
        if len(ray):
            t, entered = ray_boxes(rays.origin, np.take(rays.ego, ray, axis=1), box, centres, yaws, boxes.size)
            nearer = t < np.take(distance, ray)
            ray, box, t, entered = ray[nearer], box[nearer], t[nearer], entered[nearer]
            np.minimum.at(distance, ray, t)
            first = t == distance[ray]
            hit_box[ray[first]], face[ray[first]] = box[first], entered[first]
    keep = (distance <= RANGE_M) & (distance >= MIN_RANGE_M)
    index = np.flatnonzero(keep)
    measured = distance[index] + rng.normal(0.0, RANGE_NOISE_M, len(index)).astype(np.float32)
    points = rays.sensor[:, index] * measured
    intensity = np.empty(len(index), dtype=np.float32)
    on_box = hit_box[index] >= 0
    if on_box.any():
        which = hit_box[index][on_box]
        level = _CLASS_INTENSITY[boxes.class_index[which]] * _FACE_GAIN[face[index][on_box]]
        intensity[on_box] = level * rng.uniform(0.85, 1.15, len(level)).astype(np.float32)
    ground = ~on_box
    if ground.any():
        # Where on the map each ground return lies: paint reflects more than asphalt.
        ego_points = rays.origin[:, None] + rays.ego[:, index[ground]] * distance[index[ground]]
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        map_x = ego_translation[0] + c * ego_points[0] - s * ego_points[1]
        map_y = ego_translation[1] + s * ego_points[0] + c * ego_points[1]
        paint = ground_pattern(map_x, map_y).astype(np.float32).mean(axis=1) > 180
        low = np.where(paint, PAINT_INTENSITY[0], ASPHALT_INTENSITY[0])
        high = np.where(paint, PAINT_INTENSITY[1], ASPHALT_INTENSITY[1])
        intensity[ground] = rng.uniform(low, high).astype(np.float32)
    return np.ascontiguousarray(np.stack([points[0], points[1], points[2], np.clip(intensity, 0, 255),
                                          rays.ring[index].astype(np.float32)], axis=1), dtype=np.float32)


def _candidate_rays(rays: LidarRays, centres_ego: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ray, box) pairs to hit-test: every beam of the columns within each box's azimuth span
    (seen from the sensor, in the sensor frame), for boxes within range."""
    local = np.einsum("ni,ij->nj", centres_ego - rays.origin, rays.rotation)  # sensor frame
    flat = np.hypot(local[:, 0], local[:, 1])
    near = np.flatnonzero(np.linalg.norm(local, axis=1) < RANGE_M + radius)
    rays_out, boxes_out = [], []
    step = 2 * np.pi / rays.azimuth_steps
    for b in near:
        if flat[b] <= radius[b]:
            columns = np.arange(rays.azimuth_steps)  # the sensor is above or inside the sphere
        else:
            centre = np.arctan2(local[b, 1], local[b, 0])
            spread = np.arcsin(radius[b] / flat[b]) + step
            columns = np.arange(int(np.floor((centre - spread) / step)), int(np.ceil((centre + spread) / step)) + 1)
            columns %= rays.azimuth_steps
        ray = (columns[:, None] * BEAMS + np.arange(BEAMS)[None]).ravel()
        rays_out.append(ray)
        boxes_out.append(np.full(len(ray), b))
    if not rays_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rays_out), np.concatenate(boxes_out)


def write_lidar(
    folder: Path, calib: fmt.LidarCalibration, sweep_us: np.ndarray, start_time_us: int,
    t_us: np.ndarray, x: np.ndarray, y: np.ndarray, yaw: np.ndarray, objects: Tracks | None,
    rng: np.random.Generator,
) -> int:
    """Simulate and write a log's sweeps (fmt.lidar_sweep_file, fmt.lidar_timestamps_file) under
    folder; returns the number of sweeps. sweep_us and t_us are µs from the log start; x, y, yaw the
    ego's level pose (metres, rad), interpolated linearly; objects on the log's clock."""
    rays = lidar_rays(calib)
    (folder / fmt.lidar_sweep_file(calib.channel, 0)).parent.mkdir(parents=True, exist_ok=True)
    xs, ys, yaws = (np.interp(sweep_us, t_us, values) for values in (x, y, yaw))
    for offset, xi, yi, yaw_i in zip(sweep_us, xs, ys, yaws):
        stamp = start_time_us + int(offset)
        boxes = objects.at(stamp) if objects is not None and len(objects) else None
        points = simulate_sweep(rays, np.array([xi, yi, 0.0]), yaw_i, boxes, rng)
        points.tofile(folder / fmt.lidar_sweep_file(calib.channel, stamp))
    stamps = pa.table({"timestamp_us": pa.array(sweep_us + start_time_us, pa.int64())})
    pq.write_table(stamps, folder / fmt.lidar_timestamps_file(calib.channel))
    return len(sweep_us)
