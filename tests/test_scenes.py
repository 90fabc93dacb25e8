import numpy as np
import pandas as pd
import pytest

from jadd_dagster.logs.format import LogManifest
from jadd_dagster.scenes import MAX_SCENES_PER_LOG, cut_scenes, scene_statistics

START = 1_780_000_000_000_000


def manifest(seconds: float) -> LogManifest:
    return LogManifest("log-x", "car-1", "tokyo-odaiba", START, int(seconds * 1e6), ("CAM_FRONT",))


def test_a_log_is_cut_into_whole_scenes_and_the_tail_is_dropped():
    windows, beyond = cut_scenes(manifest(65.0), scene_length_s=20)
    assert [(w.index, w.start_time_us - START, w.end_time_us - START) for w in windows] == [
        (0, 0, 20_000_000), (1, 20_000_000, 40_000_000), (2, 40_000_000, 60_000_000)]
    assert windows[1].scene_id == "log-x/0001" and beyond == 0


def test_scenes_past_the_static_partition_range_are_counted_not_registered():
    windows, beyond = cut_scenes(manifest(20.0 * (MAX_SCENES_PER_LOG + 3)), scene_length_s=20)
    assert len(windows) == MAX_SCENES_PER_LOG and beyond == 3


def test_statistics_of_constant_speed_then_braking():
    # Scene 0: 10 m/s straight. Scene 1: braking at 2 m/s² from 10 m/s, steering 90° left.
    t = np.arange(0, 40, 0.01)
    speed = np.where(t < 20, 10.0, np.maximum(0.0, 10.0 - 2.0 * (t - 20)))
    accel = np.where(t < 20, 0.0, np.where(speed > 0, -2.0, 0.0))
    can = pd.DataFrame({
        "timestamp_us": START + (t * 1e6).astype(np.int64), "speed_mps": speed,
        "steering_deg": np.where(t < 20, 0.0, 90.0), "accel_mps2": accel,
        "brake": np.where(accel < 0, 0.25, 0.0), "throttle": 0.0, "yaw_rate_rps": 0.0, "gear": 3, "turn_signal": 0,
    })
    tp = np.arange(0, 40, 0.02)
    x = 50 + np.where(tp < 20, 10 * tp, 200 + 25 - np.maximum(0, 5 - (tp - 20)) ** 2)
    pose = pd.DataFrame({"timestamp_us": START + (tp * 1e6).astype(np.int64), "x": x, "y": 50.0, "z": 0.0,
                         "qw": 1.0, "qx": 0.0, "qy": 0.0, "qz": 0.0})
    windows, _ = cut_scenes(manifest(40.0), scene_length_s=20)
    stats = scene_statistics(manifest(40.0), windows, can, pose).set_index("scene_index")
    assert stats.loc[0, "mean_speed_mps"] == pytest.approx(10.0)
    assert stats.loc[0, "max_decel_mps2"] == 0.0 and stats.loc[0, "brake_fraction"] == 0.0
    assert stats.loc[0, "distance_m"] == pytest.approx(200.0, abs=0.3)
    assert stats.loc[1, "max_decel_mps2"] == pytest.approx(2.0)
    assert stats.loc[1, "brake_fraction"] == pytest.approx(5 / 20, abs=0.01)
    assert stats.loc[1, "max_abs_steering_deg"] == 90.0
    assert stats.loc[1, "distance_m"] == pytest.approx(25.0, abs=0.3)
    assert stats.loc[1, "mean_speed_mps"] == pytest.approx(25.0 / 20, abs=0.01)
    assert stats.loc[1, "location"] == "tokyo-odaiba" and stats.loc[1, "date"] == "2026-05-28"


def test_a_gap_in_can_or_pose_is_in_the_catalog_and_the_filter_can_exclude_it():
    from jadd_dagster.curation import select_scenes
    from jadd_dagster.spec import DatasetSpec

    t = np.arange(0, 60, 0.01)
    t = t[(t < 25) | (t >= 30)]  # the second scene loses 5 s of CAN
    can = pd.DataFrame({"timestamp_us": START + (t * 1e6).astype(np.int64), "speed_mps": 5.0, "steering_deg": 0.0,
                        "accel_mps2": 0.0, "brake": 0.0, "throttle": 0.0, "yaw_rate_rps": 0.0, "gear": 3, "turn_signal": 0})
    tp = np.arange(0, 60, 0.02)
    tp = tp[(tp < 50) | (tp >= 50.5)]  # the third scene's pose stops for 0.5 s
    pose = pd.DataFrame({"timestamp_us": START + (tp * 1e6).astype(np.int64), "x": 5 * tp, "y": 0.0, "z": 0.0,
                         "qw": 1.0, "qx": 0.0, "qy": 0.0, "qz": 0.0})
    windows, _ = cut_scenes(manifest(60.0), scene_length_s=20)
    stats = scene_statistics(manifest(60.0), windows, can, pose)
    assert stats["max_can_gap_s"].round(2).tolist() == [0.01, 5.01, 0.01]
    assert stats["max_pose_gap_s"].round(2).tolist() == [0.02, 0.02, 0.52]
    assert stats["has_gap"].tolist() == [False, True, True]
    kept = select_scenes(stats, DatasetSpec(name="clean", scene_filter="not has_gap")).scenes
    assert kept["scene_index"].tolist() == [0]
