"""The ego vehicle's ground-truth motion for the synthetic logs, and the CAN and pose tables it yields.

A kinematic bicycle model is integrated at CAN_HZ through a random sequence of driving segments
(cruising, accelerating, hard braking, turning, stopping); CAN, pose, camera videos, the world's
objects and the lidar are all derived from that one trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jadd_dagster.logs import format as fmt

CAN_HZ = 100
POSE_HZ = 50
WHEELBASE_M = 2.8
STEERING_RATIO = 15.0  # steering-wheel degrees per road-wheel degree
MAX_CURVATURE = 0.1  # 1/m, full steering lock
MAX_LATERAL_ACCEL = 3.0  # m/s²
STEER_RATE = 0.08  # how fast curvature can change, 1/m per second
MAX_JERK = 10.0  # m/s³
MAX_SPEED = 30.0  # m/s
MAP_MARGIN_M = 50.0  # min x and min y of every pose: nuScenes map masks need x, y >= 0
COAST_DECEL = 0.3  # m/s²: slowing down more than this needs the brake
# The ego vehicle's footprint in its own frame (x forward from the pose origin, y left), metres:
# no object of the world may touch it.
EGO_BOX_X = (-1.0, 3.8)
EGO_BOX_HALF_WIDTH = 1.0


@dataclass(frozen=True)
class Drive:
    """Ground-truth ego motion sampled at CAN_HZ from the log start (t = 0).

    t_us: µs from the log start; speed m/s (>= 0); accel m/s² (= dspeed/dt); curvature 1/m
    (positive left); x, y metres in the map frame; yaw rad (unwrapped, 0 = map +x);
    turn_signal -1 right, 0 off, 1 left.
    """

    t_us: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    curvature: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    turn_signal: np.ndarray


@dataclass(frozen=True)
class _Segment:
    """One driving behaviour: speed target (m/s), its accel/decel limits (m/s²) and P gain (1/s)."""

    kind: str
    max_s: float
    speed: float
    accel: float
    decel: float
    gain: float
    curvature: float = 0.0  # target, 1/m; for turns the curvature held during the turn
    heading: float = 0.0  # turns: how far to turn, rad
    dwell_s: float = 0.0  # stops: how long to stand still


def _draw_segment(rng: np.random.Generator, v: float) -> _Segment:
    """The next behaviour, chosen from what makes sense at the current speed v (m/s)."""
    weights = {"cruise": 2.5, "accelerate": 1.5 if v < 22 else 0.0, "hard_brake": 2.5 if v >= 6 else 0.0,
               "turn": 2.0, "stop": 1.5 if v > 3 else 0.0}
    if v < 1:
        weights.update(accelerate=3.0, cruise=2.0, turn=1.0)
    kinds = sorted(weights)
    p = np.array([weights[k] for k in kinds])
    kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
    u = rng.uniform
    if kind == "cruise":
        bend = u(-0.004, 0.004) if u() < 0.5 else 0.0  # a gently curving road half of the time
        return _Segment(kind, u(5, 15), u(3 if v >= 1 else 5, MAX_SPEED), u(1, 2), u(1, 2), 0.5, bend)
    if kind == "accelerate":
        return _Segment(kind, u(4, 10), min(MAX_SPEED, v + u(8, 20)), u(2, 3.5), 1.0, 1.5)
    if kind == "hard_brake":
        return _Segment(kind, u(3, 8), max(0.0, v - u(5, 20)), 1.0, u(3, 6), 3.0)
    if kind == "turn":
        turn_speed = u(3, 7)
        curvature = min(MAX_CURVATURE, MAX_LATERAL_ACCEL / turn_speed**2) * rng.choice([-1.0, 1.0])
        return _Segment(kind, 20.0, turn_speed, 1.5, 2.5, 1.0, curvature, np.radians(u(60, 100)))
    return _Segment("stop", 25.0, 0.0, 1.0, u(1.5, 3), 1.0, dwell_s=u(2, 6))


def simulate_drive(rng: np.random.Generator, duration_us: int) -> Drive:
    """Integrate the kinematic bicycle model at CAN_HZ over [0, duration_us] (both ends sampled)."""
    dt = 1.0 / CAN_HZ
    n = duration_us * CAN_HZ // 1_000_000 + 1
    speed, curvature = np.zeros(n), np.zeros(n)
    signal = np.zeros(n, dtype=np.int8)
    v, a, k = float(rng.uniform(0, 20)), 0.0, 0.0
    i = 0
    while i < n:
        seg = _draw_segment(rng, v)
        end = i + int(seg.max_s * CAN_HZ)
        phase, turned, stopped_at = "approach", 0.0, None
        while i < min(end, n):
            speed[i], curvature[i] = v, k
            target_k = 0.0 if seg.kind == "turn" else seg.curvature
            if seg.kind == "turn":
                signal[i] = 1 if seg.curvature > 0 else -1
                if phase == "approach" and v <= seg.speed + 0.5:
                    phase = "steer"
                # Start unwinding early enough to end on the wanted heading.
                if phase == "steer" and abs(turned) + v * k * k / (2 * STEER_RATE) >= seg.heading:
                    phase = "unwind"
                if phase == "steer":
                    target_k = seg.curvature
                elif phase == "unwind" and k == 0.0:
                    i += 1
                    break
            if seg.kind == "stop" and v == 0.0:
                stopped_at = i if stopped_at is None else stopped_at
                if (i - stopped_at) * dt >= seg.dwell_s:
                    i += 1
                    break
            # Longitudinal: P control towards the target speed, accel limits, jerk-limited.
            a_cmd = _clamp(seg.gain * (seg.speed - v), seg.decel, seg.accel)
            if seg.speed == 0.0 and v > 0.0:
                a_cmd = min(a_cmd, -0.5)  # creep to a real standstill instead of decaying forever
            a += _clamp(a_cmd - a, MAX_JERK * dt, MAX_JERK * dt)
            v_next = max(0.0, v + a * dt)
            a = (v_next - v) / dt
            # Lateral: steering rate limit, full lock and lateral acceleration limit.
            limit = min(MAX_CURVATURE, MAX_LATERAL_ACCEL / max(v_next, 0.1) ** 2)
            target_k = _clamp(target_k, limit, limit)
            k_next = k + _clamp(target_k - k, STEER_RATE * dt, STEER_RATE * dt)
            turned += 0.5 * (v * k + v_next * k_next) * dt
            v, k = v_next, k_next
            i += 1
    # dv/dt between samples is what the model used; the last sample keeps the previous value.
    accel = np.append(np.diff(speed) / dt, 0.0)
    accel[-1] = accel[-2] if n > 1 else 0.0
    yaw_rate = speed * curvature
    yaw = np.concatenate([[0.0], np.cumsum(0.5 * (yaw_rate[1:] + yaw_rate[:-1]) * dt)])
    yaw += rng.uniform(-np.pi, np.pi)
    vx, vy = speed * np.cos(yaw), speed * np.sin(yaw)
    x = np.concatenate([[0.0], np.cumsum(0.5 * (vx[1:] + vx[:-1]) * dt)])
    y = np.concatenate([[0.0], np.cumsum(0.5 * (vy[1:] + vy[:-1]) * dt)])
    t_us = np.arange(n, dtype=np.int64) * (1_000_000 // CAN_HZ)
    x, y = x - x.min() + MAP_MARGIN_M, y - y.min() + MAP_MARGIN_M
    return Drive(t_us, speed, accel, curvature, x, y, yaw, signal)


def _clamp(value: float, below: float, above: float) -> float:
    """value limited to [-below, above] (plain floats: np.clip is slow on scalars)."""
    return min(max(value, -below), above)


def can_table(drive: Drive, start_time_us: int, rng: np.random.Generator) -> pa.Table:
    """CAN rows (fmt.CAN_COLUMNS) at CAN_HZ, with sensor noise of a few hundredths of a unit."""
    n = len(drive.t_us)
    moving = drive.speed > 0
    steering = np.degrees(np.arctan(WHEELBASE_M * drive.curvature)) * STEERING_RATIO
    brake = np.where(drive.accel < -COAST_DECEL, np.clip(-drive.accel / 8.0, 0.0, 1.0), 0.0)
    # Holding speed takes throttle against drag; slowing within COAST_DECEL is coasting.
    throttle = np.where(moving & (drive.accel >= 0), np.clip(0.08 + 0.0005 * drive.speed**2 + drive.accel / 4, 0, 1), 0.0)
    columns = {
        "timestamp_us": drive.t_us + start_time_us,
        "speed_mps": np.where(moving, np.maximum(drive.speed + rng.normal(0, 0.02, n), 0.0), 0.0),
        "steering_deg": steering + rng.normal(0, 0.05, n),
        "accel_mps2": drive.accel + rng.normal(0, 0.02, n),
        "brake": brake,
        "throttle": throttle,
        "yaw_rate_rps": drive.speed * drive.curvature + rng.normal(0, 0.001, n),
        "gear": np.full(n, 3, dtype=np.int8),
        "turn_signal": drive.turn_signal.astype(np.int8),
    }
    return pa.table({name: columns[name] for name in fmt.CAN_COLUMNS})


def pose_table(drive: Drive, start_time_us: int) -> pa.Table:
    """Pose rows (fmt.POSE_COLUMNS) at POSE_HZ: flat ground (z = 0) and yaw-only orientation."""
    every = CAN_HZ // POSE_HZ
    yaw = drive.yaw[::every]
    zeros = np.zeros(len(yaw))
    columns = [drive.t_us[::every] + start_time_us, drive.x[::every], drive.y[::every], zeros,
               np.cos(yaw / 2), zeros, zeros, np.sin(yaw / 2)]
    return pa.table(dict(zip(fmt.POSE_COLUMNS, columns)))
