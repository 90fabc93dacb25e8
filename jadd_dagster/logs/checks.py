"""Data-quality checks on a drive log that go beyond format validation."""

from __future__ import annotations

import numpy as np


def calibration_problems(log) -> list[str]:
    """Camera calibrations that cannot be right: bad focal length, principal point off the image."""
    problems = []
    for channel, calib in log.calibration.items():
        k = calib.camera_matrix
        if k[0, 0] <= 0 or k[1, 1] <= 0:
            problems.append(f"{channel}: focal length must be positive, got fx={k[0, 0]}, fy={k[1, 1]}")
        if not (0 < k[0, 2] < calib.width and 0 < k[1, 2] < calib.height):
            problems.append(f"{channel}: principal point ({k[0, 2]}, {k[1, 2]}) is outside the image")
        q = np.asarray(calib.rotation, dtype=float)
        if abs(np.linalg.norm(q) - 1) > 1e-6:
            problems.append(f"{channel}: rotation is not a unit quaternion (norm {np.linalg.norm(q):.6f})")
    return problems


def timing_problems(log, rate_tolerance: float = 0.05) -> list[str]:
    """Timestamps that go backwards, and cameras whose frame rate is off the manifest's."""
    problems = []
    for name, ts in (("can", log.can()["timestamp_us"].to_numpy()), ("pose", log.pose()["timestamp_us"].to_numpy())):
        if np.any(np.diff(ts) <= 0):
            problems.append(f"{name}: timestamps are not strictly increasing")
    for channel in log.manifest.channels:
        ts = log.frame_timestamps(channel)
        steps = np.diff(ts)
        if np.any(steps <= 0):
            problems.append(f"{channel}: frame timestamps are not strictly increasing")
        elif steps.size:
            rate, nominal = 1e6 / float(np.median(steps)), log.manifest.rate_hz(channel)
            if abs(rate - nominal) > rate_tolerance * nominal:
                problems.append(f"{channel}: frame rate {rate:.2f} Hz, manifest says {nominal} Hz")
    return problems
