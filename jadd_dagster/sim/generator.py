"""Synthetic drive logs in the raw log format (logs/format.py), with known ground truth.

The ego drives a simulated trajectory (sim/drive.py); the world's objects move around it
(sim/world.py, written as objects.parquet); CAN, pose, camera videos with the objects drawn in,
and optionally the LIDAR_TOP sweeps (sim/lidar.py) are all derived from those, so later stages
can be checked against them. Everything is drawn from numpy generators seeded by (seed, log
index[, stream]): a log does not depend on how many other logs are generated with it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jadd_dagster.camera import (
    CameraCalibration,
    camera_to_ego_rotation,
    pinhole_intrinsic,
    quaternion_from_matrix,
)
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.tracks import Tracks
from jadd_dagster.sim.drive import (  # noqa: F401  (re-exported: the generator's constants)
    CAN_HZ,
    POSE_HZ,
    STEERING_RATIO,
    WHEELBASE_M,
    Drive,
    can_table,
    pose_table,
    simulate_drive,
)
from jadd_dagster.sim.lidar import lidar_calibration, sweep_offsets_us, write_lidar
from jadd_dagster.sim.render import render_video
from jadd_dagster.sim.world import simulate_world

WORLD_STREAM, LIDAR_STREAM = 1, 2  # the world and the lidar draw from their own generators

LOCATIONS = ("boston-seaport", "singapore-onenorth", "tokyo-odaiba", "las-vegas-strip")
VEHICLES = ("jadd-car-01", "jadd-car-02", "jadd-car-03", "jadd-car-04")
FIRST_START = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)
LOG_SPACING_US = 3_600_000_000  # consecutive logs start an hour apart (or a log length, if longer)
STAGING = ".staging"  # under out_dir: logs being written
CHANNEL_OFFSET_US = 1000  # the n-th channel triggers n ms after the first, like rolling triggers
# Mounting of each camera: yaw in degrees (0 forward, 90 left) and position on the roof in metres.
CAMERA_MOUNTS = {
    "CAM_FRONT": (0.0, (1.6, 0.0, 1.6)),
    "CAM_FRONT_LEFT": (55.0, (1.5, 0.5, 1.6)),
    "CAM_FRONT_RIGHT": (-55.0, (1.5, -0.5, 1.6)),
    "CAM_BACK": (180.0, (0.0, 0.0, 1.6)),
    "CAM_BACK_LEFT": (110.0, (1.0, 0.5, 1.6)),
    "CAM_BACK_RIGHT": (-110.0, (1.0, -0.5, 1.6)),
}
CAMERA_HFOV_DEG = 70.0
CAMERA_PITCH_DEG = 5.0  # looking down


def camera_calibrations(
    rng: np.random.Generator, channels: Sequence[str], image_size: tuple[int, int]
) -> dict[str, CameraCalibration]:
    """Roof cameras with barrel distortion, each lens and mounting varied slightly."""
    width, height = image_size
    calibs = {}
    for channel in channels:
        yaw_deg, translation = CAMERA_MOUNTS[channel]
        distortion = (rng.uniform(-0.30, -0.25), rng.uniform(0.07, 0.10),
                      rng.uniform(-1e-3, 1e-3), rng.uniform(-1e-3, 1e-3), 0.0)
        rotation = camera_to_ego_rotation(yaw_deg + rng.uniform(-0.5, 0.5), CAMERA_PITCH_DEG + rng.uniform(-0.5, 0.5))
        calibs[channel] = CameraCalibration(
            channel=channel, width=width, height=height,
            intrinsic=pinhole_intrinsic(width, height, CAMERA_HFOV_DEG),
            distortion=tuple(float(c) for c in distortion), translation=translation,
            rotation=quaternion_from_matrix(rotation),
        )
    return calibs


def frame_offsets_us(duration_us: int, channel_index: int, hz: int = fmt.CAMERA_HZ) -> np.ndarray:
    """Frame times (µs from the log start) of a camera: every 1/hz s, shifted per channel, < duration."""
    i = np.arange(duration_us * hz // 1_000_000 + 2, dtype=np.int64)
    # i * 1e6 / hz rounded to the nearest µs, exactly in integers.
    t = (2 * i * 1_000_000 + hz) // (2 * hz) + channel_index * CHANNEL_OFFSET_US
    return t[t < duration_us]


def _render_job(job: tuple) -> int:
    """Render one camera video or one lidar's sweeps of a staged log (in a worker process)."""
    kind, staging, sensor_calib, times_us, drive, start_time_us, seed_key = job
    objects = _read_tracks(staging)
    if kind == "lidar":
        rng = np.random.default_rng([*seed_key, LIDAR_STREAM])
        return write_lidar(staging, sensor_calib, times_us, start_time_us, drive.t_us, drive.x, drive.y, drive.yaw,
                           objects, rng)
    return render_video(staging / fmt.video_file(sensor_calib.channel), sensor_calib, times_us + start_time_us,
                        drive.t_us + start_time_us, drive.x, drive.y, drive.yaw, objects)


def _read_tracks(staging: Path) -> Tracks | None:
    path = staging / fmt.OBJECTS
    return Tracks(pd.read_parquet(path)) if path.is_file() else None


def make_logs(
    out_dir: Path,
    n_logs: int,
    minutes: float,
    seed: int,
    channels: Sequence[str] = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"),
    image_size: tuple[int, int] = (320, 180),
    start_time_us: int | None = None,
    workers: int | None = None,
    lidar: bool = False,
    objects: bool = True,
) -> list[Path]:
    """Write n_logs synthetic logs of `minutes` each under out_dir/<log_id>/; returns their folders.

    Log ids are log-<seed>-0001, ...; log k starts LOG_SPACING_US after log k-1 (from FIRST_START
    or start_time_us, µs since the epoch). image_size is (width, height), both even. With objects
    (the default), a log has ground-truth objects (objects.parquet), drawn into its videos and seen
    by its lidar; without, the world is empty road. With lidar, a log also has LIDAR_TOP sweeps at
    20 Hz (about 0.6 MB each, 12 MB per second of log). Videos and sweeps are rendered by `workers`
    processes (default: all CPUs; spawned, so a calling script needs the `if __name__ ==
    "__main__"` guard). Each log is written under out_dir/.staging/ first and
    renamed into place when complete, so a watcher of out_dir never sees half a log (the manifest
    is written last, too); an existing log folder of the same id is replaced.
    """
    width, height = image_size
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"image_size {image_size}: width and height must be positive and even (yuv420p)")
    unknown = [c for c in channels if c not in CAMERA_MOUNTS]
    if unknown or not channels:
        raise ValueError(f"channels {list(channels)}: unknown {unknown}; choose from {list(CAMERA_MOUNTS)}")
    if seed < 0 or n_logs < 0:
        raise ValueError("seed and n_logs must be >= 0")
    # A 20 ms grid keeps the last CAN and pose samples exactly at the log end.
    duration_us = int(round(minutes * 60 * POSE_HZ)) * (1_000_000 // POSE_HZ)
    if duration_us <= 0:
        raise ValueError(f"minutes={minutes}: a log must last at least one pose interval")
    first_start = start_time_us if start_time_us is not None else int(FIRST_START.timestamp() * 1_000_000)
    spacing = max(LOG_SPACING_US, -(-duration_us // LOG_SPACING_US) * LOG_SPACING_US)
    out_dir = Path(out_dir)
    staged = [
        _stage_log(out_dir / STAGING, seed, index, first_start + (index - 1) * spacing, duration_us, channels,
                   image_size, lidar, objects)
        for index in range(1, n_logs + 1)
    ]
    # Lidar jobs are the longest: start them first.
    jobs = sorted((job for _, _, log_jobs in staged for job in log_jobs), key=lambda job: job[0] != "lidar")
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        for job in jobs:
            _render_job(job)
    else:
        # spawn, not fork: the caller may be a threaded process (Dagster), where fork is unsafe.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_render_job, jobs))
    finals = []
    for staging, manifest, _ in staged:
        _write_json(staging / fmt.MANIFEST, manifest.to_json())
        final = out_dir / manifest.log_id
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        finals.append(final)
    try:
        (out_dir / STAGING).rmdir()
    except OSError:
        pass  # not there (no logs) or still in use by another generator
    return finals


def _stage_log(
    staging_root: Path, seed: int, index: int, start_time_us: int, duration_us: int,
    channels: Sequence[str], image_size: tuple[int, int], lidar: bool = False, objects: bool = True,
) -> tuple[Path, fmt.LogManifest, list[tuple]]:
    """Write a log's tables and calibration under staging_root; returns its folder, its manifest
    (not written yet: it marks the log complete) and the video and lidar jobs still to run."""
    rng = np.random.default_rng([seed, index])
    manifest = fmt.LogManifest(
        log_id=f"log-{seed}-{index:04d}",
        vehicle=str(rng.choice(VEHICLES)),
        location=str(rng.choice(LOCATIONS)),
        start_time_us=start_time_us,
        duration_us=duration_us,
        channels=tuple(channels),
        lidar_channels=(fmt.LIDAR_CHANNELS[0],) if lidar else (),
    )
    staging = staging_root / manifest.log_id
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "cameras").mkdir(parents=True)
    calibs = camera_calibrations(rng, channels, image_size)
    drive = simulate_drive(rng, duration_us)
    calibration = {c: calibs[c].to_json() for c in channels}
    lidar_calib = lidar_calibration(np.random.default_rng([seed, index, LIDAR_STREAM])) if lidar else None
    if lidar_calib is not None:
        calibration[lidar_calib.channel] = lidar_calib.to_json()
    _write_json(staging / fmt.CALIBRATION, calibration)
    pq.write_table(can_table(drive, start_time_us, rng), staging / fmt.CAN)
    pq.write_table(pose_table(drive, start_time_us), staging / fmt.POSE)
    if objects:
        world = simulate_world(np.random.default_rng([seed, index, WORLD_STREAM]), drive, start_time_us)
        pq.write_table(world, staging / fmt.OBJECTS)
    jobs = []
    for ch_index, channel in enumerate(channels):
        offsets = frame_offsets_us(duration_us, ch_index, manifest.camera_hz)
        stamps = pa.table({"timestamp_us": pa.array(offsets + start_time_us, pa.int64())})
        pq.write_table(stamps, staging / fmt.timestamps_file(channel))
        jobs.append(("camera", staging, calibs[channel], offsets, drive, start_time_us, (seed, index)))
    if lidar_calib is not None:
        jobs.append(("lidar", staging, lidar_calib, sweep_offsets_us(duration_us), drive, start_time_us, (seed, index)))
    return staging, manifest, jobs


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
