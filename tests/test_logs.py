"""The synthetic log generator and the log reader, checked against physics and the lens model.

Expectations come from kinematics (pose derivatives vs CAN), from camera.project_points (OpenCV's
lens model) and from the raw log format, never from the generator's own intermediate values.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jadd_dagster.camera import (
    CameraCalibration,
    camera_to_ego_rotation,
    matrix_from_quaternion,
    pinhole_intrinsic,
    project_points,
    quaternion_from_matrix,
)
from jadd_dagster.logs import (
    CAN_COLUMNS,
    CAN_DTYPES,
    POSE_COLUMNS,
    POSE_DTYPES,
    LogFormatError,
    read_log,
    timestamps_file,
    validate_log,
    video_file,
)
from jadd_dagster.sim import make_logs
from jadd_dagster.sim.generator import LOCATIONS, STEERING_RATIO, WHEELBASE_M
from jadd_dagster.sim.render import LANE_SPACING_M, LANE_WIDTH_M, camera_rays, render_frame

SEED = 5
CHANNELS = ("CAM_FRONT", "CAM_FRONT_LEFT")
SIZE = (160, 90)
MINUTES = 0.25


@pytest.fixture(scope="module")
def log_paths(tmp_path_factory) -> list[Path]:
    return make_logs(tmp_path_factory.mktemp("logs"), 2, MINUTES, SEED, CHANNELS, SIZE, workers=1)


@pytest.fixture(scope="module")
def log(log_paths):
    return read_log(log_paths[0])


@pytest.fixture(scope="module")
def long_log(tmp_path_factory):
    """Four minutes with one tiny camera and no objects: enough driving to see every behaviour."""
    (path,) = make_logs(tmp_path_factory.mktemp("long"), 1, 4.0, 9, ("CAM_FRONT",), (64, 36), workers=1, objects=False)
    return read_log(path)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _yaw(pose: pd.DataFrame) -> np.ndarray:
    # Yaw-only quaternions on flat ground: the heading is 2 atan2(qz, qw).
    return np.unwrap(2 * np.arctan2(pose["qz"].to_numpy(), pose["qw"].to_numpy()))


# --- determinism and identity -------------------------------------------------------------------


def test_same_seed_writes_identical_bytes_whatever_the_worker_count(log_paths, tmp_path):
    (again,) = make_logs(tmp_path, 1, MINUTES, SEED, CHANNELS, SIZE, workers=2)
    assert again.name == log_paths[0].name
    assert _files(again) == _files(log_paths[0])


def test_other_seed_drives_differently(log, tmp_path):
    (other,) = make_logs(tmp_path, 1, MINUTES, SEED + 1, ("CAM_FRONT",), SIZE, start_time_us=1_800_000_000_000_000)
    other_log = read_log(other)
    assert other_log.manifest.log_id == f"log-{SEED + 1}-0001"
    assert other_log.manifest.start_time_us == 1_800_000_000_000_000
    assert not np.allclose(other_log.can()["speed_mps"], log.can()["speed_mps"])


def test_manifests_name_distinct_logs_in_known_places(log_paths):
    manifests = [read_log(p).manifest for p in log_paths]
    assert [m.log_id for m in manifests] == [f"log-{SEED}-0001", f"log-{SEED}-0002"]
    assert all(re.fullmatch(r"[a-z0-9-]+", m.log_id) and Path(p).name == m.log_id for m, p in zip(manifests, log_paths))
    assert all(m.location in LOCATIONS and m.vehicle for m in manifests)
    assert manifests[0].start_time_us < manifests[1].start_time_us
    assert manifests[0].date_captured.startswith("2026-")
    assert all(m.duration_us == 15_000_000 and m.channels == CHANNELS for m in manifests)
    assert sorted(p.name for p in log_paths[0].parent.iterdir()) == [p.name for p in log_paths]  # no staging left


# --- CAN and pose against kinematics ------------------------------------------------------------


def test_tables_cover_the_log_at_their_rates(log):
    can, pose = log.can(), log.pose()
    start, end = log.manifest.start_time_us, log.manifest.end_time_us
    assert list(can.columns) == list(CAN_COLUMNS) and can.dtypes.astype(str).to_dict() == CAN_DTYPES
    assert list(pose.columns) == list(POSE_COLUMNS) and pose.dtypes.astype(str).to_dict() == POSE_DTYPES
    assert set(np.diff(can["timestamp_us"])) == {10_000} and set(np.diff(pose["timestamp_us"])) == {20_000}
    for table in (can, pose):
        assert table["timestamp_us"].iloc[0] == start and table["timestamp_us"].iloc[-1] == end


def test_pose_speed_matches_can_speed(log):
    can, pose = log.can(), log.pose()
    t = pose["timestamp_us"].to_numpy()
    step = np.hypot(np.diff(pose["x"]), np.diff(pose["y"])) / (np.diff(t) / 1e6)
    mid = (t[1:] + t[:-1]) // 2
    can_speed = np.interp(mid, can["timestamp_us"], can["speed_mps"])
    assert np.sqrt(np.mean((step - can_speed) ** 2)) < 0.2


def test_pose_yaw_rate_matches_can_yaw_rate(long_log):
    can, pose = long_log.can(), long_log.pose()
    t = pose["timestamp_us"].to_numpy()
    yaw_rate = np.diff(_yaw(pose)) / (np.diff(t) / 1e6)
    can_rate = np.interp((t[1:] + t[:-1]) // 2, can["timestamp_us"], can["yaw_rate_rps"])
    assert np.sqrt(np.mean((yaw_rate - can_rate) ** 2)) < 0.01
    assert np.abs(can_rate).max() > 0.2  # it did turn


def test_steering_is_the_bicycle_model_of_the_yaw_rate(long_log):
    can = long_log.can()
    moving = (can["speed_mps"] > 2).to_numpy()
    curvature = np.tan(np.radians(can["steering_deg"] / STEERING_RATIO)) / WHEELBASE_M
    turning = moving & (np.abs(can["yaw_rate_rps"]) > 0.02).to_numpy()
    assert turning.sum() > 100
    assert np.all(np.sign(can["steering_deg"][turning]) == np.sign(can["yaw_rate_rps"][turning]))
    predicted = can["speed_mps"][moving] * curvature[moving]
    assert np.sqrt(np.mean((predicted - can["yaw_rate_rps"][moving]) ** 2)) < 0.01


def test_braking_shows_as_deceleration(long_log):
    can = long_log.can()
    speed, accel, brake = (can[c].to_numpy() for c in ("speed_mps", "accel_mps2", "brake"))
    assert np.all(accel[brake > 0] < 0)
    assert np.all(brake[accel < -0.5] > 0)
    assert np.all(can["throttle"][brake > 0] == 0)
    # Over half a second the speed change is the integral of the acceleration (noise averages out).
    window = 50
    dv = (speed[window:] - speed[:-window]) / (window / 100)
    mean_accel = np.convolve(accel, np.ones(window) / window, mode="valid")[:-1]
    assert np.sqrt(np.mean((dv - mean_accel) ** 2)) < 0.1
    assert accel.min() < -3.0 and speed.min() >= 0


def test_twenty_second_windows_drive_differently(long_log):
    """Curation filters scenes on these statistics, so they must spread."""
    can = long_log.can()
    window = (can["timestamp_us"] - can["timestamp_us"].iloc[0]) // 20_000_000
    stats = can.groupby(window).agg(
        mean_speed=("speed_mps", "mean"),
        max_steer=("steering_deg", lambda s: s.abs().max()),
        max_decel=("accel_mps2", lambda a: -a.min()),
    )
    assert stats["mean_speed"].max() - stats["mean_speed"].min() > 8
    assert stats["max_steer"].max() > 90 and stats["max_steer"].min() < 30
    assert stats["max_decel"].max() > 3 and stats["max_decel"].min() < 2


def test_signals_gear_and_turn_indicator_are_plausible(long_log):
    can = long_log.can()
    assert set(can["turn_signal"]) <= {-1, 0, 1} and set(can["gear"]) == {3}
    sharp = (can["steering_deg"].abs() > 90).to_numpy()
    assert sharp.any()
    assert np.all(can["turn_signal"][sharp] == np.sign(can["steering_deg"][sharp]))
    assert can[["brake", "throttle"]].stack().between(0, 1).all()


def test_a_log_made_without_objects_or_lidar_has_neither(long_log, log):
    assert validate_log(long_log.path) == []
    assert long_log.objects() is None and long_log.objects_at(long_log.manifest.start_time_us).empty
    assert log.objects() is not None and long_log.manifest.lidar_channels == log.manifest.lidar_channels == ()


def test_pose_lives_in_a_positive_map_frame(log_paths):
    for path in log_paths:
        pose = read_log(path).pose()
        assert pose["x"].min() == pytest.approx(50.0) and pose["y"].min() == pytest.approx(50.0)
        assert (pose["z"] == 0).all()
        norms = np.linalg.norm(pose[["qw", "qx", "qy", "qz"]], axis=1)
        assert np.allclose(norms, 1) and (pose[["qx", "qy"]] == 0).all().all()


# --- cameras and video --------------------------------------------------------------------------


def test_videos_decode_to_one_frame_per_timestamp(log):
    start, end = log.manifest.start_time_us, log.manifest.end_time_us
    for index, channel in enumerate(CHANNELS):
        stamps = log.frame_timestamps(channel)
        assert stamps.dtype == np.int64 and len(stamps) == 450
        assert stamps[0] == start + 1000 * index and stamps[-1] < end
        assert set(np.diff(stamps)) <= {33_333, 33_334}
        with av.open(str(log.video_path(channel))) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == len(stamps)
        assert {f.shape for f in frames} == {(SIZE[1], SIZE[0], 3)}


def test_calibrations_are_distorted_roof_cameras(log):
    yaws = {"CAM_FRONT": 0.0, "CAM_FRONT_LEFT": 55.0}
    for channel, calib in log.calibration.items():
        assert (calib.width, calib.height) == SIZE
        k1, k2, p1, p2, k3 = calib.distortion
        assert -0.31 < k1 < -0.2 and 0.0 < k2 < 0.15 and abs(p1) < 0.01 and abs(p2) < 0.01 and k3 == 0
        optical_axis = matrix_from_quaternion(calib.rotation) @ np.array([0.0, 0.0, 1.0])
        assert math.degrees(math.atan2(optical_axis[1], optical_axis[0])) == pytest.approx(yaws[channel], abs=1)
        assert -math.degrees(math.asin(optical_axis[2])) == pytest.approx(5, abs=1)  # looks down
        assert calib.translation[2] > 1.2


def test_video_shows_the_lane_grid_where_pose_and_calibration_put_it(log):
    """End to end: frame timestamps -> pose_at -> calibration -> distorted projection of paint."""
    channel = "CAM_FRONT"
    calib = log.calibration[channel]
    stamps = log.frame_timestamps(channel)
    picks = [0, 150, 300, 449]
    with av.open(str(log.video_path(channel))) as container:
        frames = [f.to_ndarray(format="gray") for i, f in enumerate(container.decode(video=0)) if i in picks]
    translations, rotations = log.pose_at(stamps[picks])
    cam_rot = matrix_from_quaternion(calib.rotation)
    on_line, off_line = [], []
    for image, t, q in zip(frames, translations, rotations):
        ego_rot = matrix_from_quaternion(q)
        for offset, out in ((0.0, on_line), (LANE_SPACING_M / 2, off_line)):
            # White lines are painted over y in [k * 3.5, k * 3.5 + 0.25) metres of the map frame.
            ys = np.floor(t[1] / LANE_SPACING_M) * LANE_SPACING_M + np.arange(-3, 4) * LANE_SPACING_M
            xs = t[0] + np.linspace(-12, 12, 97)
            gx, gy = np.meshgrid(xs, ys + LANE_WIDTH_M / 2 + offset)
            world = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
            cam = ((world - t) @ ego_rot - np.asarray(calib.translation)) @ cam_rot
            near = (cam[:, 2] > 2) & (np.linalg.norm(cam, axis=1) < 9)
            px = project_points(cam[near], calib, distorted=True)
            inside = (px[:, 0] > 2) & (px[:, 0] < SIZE[0] - 3) & (px[:, 1] > 2) & (px[:, 1] < SIZE[1] - 3)
            px = np.round(px[inside]).astype(int)
            out.extend(image[px[:, 1], px[:, 0]])
    assert len(on_line) > 30 and len(off_line) > 30
    assert np.median(on_line) > 180 and np.median(off_line) < 140


def _calibration(width=320, height=180) -> CameraCalibration:
    return CameraCalibration(
        channel="CAM_FRONT", width=width, height=height, intrinsic=pinhole_intrinsic(width, height, 70),
        distortion=(-0.28, 0.08, 0.0, 0.0, 0.0), translation=(1.6, 0.0, 1.6),
        rotation=quaternion_from_matrix(camera_to_ego_rotation(0.0, 5.0)),
    )


def _yellow_band_rows(image: np.ndarray, rows: slice) -> np.ndarray:
    """(column, row) centres of yellow paint within the given rows, for every column that has some."""
    r, g, b = (image[rows, :, c].astype(int) for c in range(3))
    yellow = (r > 150) & (g > 110) & (b < 110)
    columns = np.flatnonzero(yellow.any(axis=0))
    centres = [np.flatnonzero(yellow[:, c]).mean() for c in columns]
    return np.stack([columns, np.array(centres) + rows.start], axis=1)


def test_lens_distortion_bends_straight_lane_lines():
    """A straight painted line is curved in the raw frame and straight once OpenCV undistorts it."""
    calib = _calibration()
    # Looking along +x with the camera 4.4 m before the yellow line painted at x in [56, 56.25):
    # its image is a row across the whole frame, well below the principal point (160, 90), where
    # barrel distortion bends it most. Rows 125.. hold only this line (the next one is ~30 px up).
    image = render_frame(camera_rays(calib), np.array([50.0, 50.875, 0.0]), np.eye(3))
    raw = _yellow_band_rows(image, slice(125, 180))
    undistorted = _yellow_band_rows(cv2.undistort(image, calib.camera_matrix, calib.dist_coeffs), slice(125, 180))

    def straightness(points):
        """Distance (px) from the best straight line that 90 % of the points stay within; the
        rest are columns where white paint crosses and blends with the yellow."""
        fit = np.polyfit(points[:, 0], points[:, 1], 1)
        return np.percentile(np.abs(np.polyval(fit, points[:, 0]) - points[:, 1]), 90)

    assert len(raw) > 300 and len(undistorted) > 250
    assert straightness(raw) > 3.0
    assert straightness(undistorted) < 1.0
    # Barrel distortion pulls the ends of the line towards the image centre (smaller rows).
    assert raw[:, 1][[0, -1]].max() < raw[:, 1][len(raw) // 2] - 4


def test_rendered_paint_sits_at_the_distorted_projection():
    calib = _calibration()
    image = render_frame(camera_rays(calib), np.array([50.0, 50.875, 0.0]), np.eye(3))
    # Points along the yellow line across the road at map x = 56.125 (paint x in [56, 56.25)),
    # away from the white lines that cross it at map y = 49.125 and 52.625.
    lateral = np.linspace(-5.0, 5.0, 81)
    lateral = lateral[np.min(np.abs(lateral[:, None] - np.array([-1.75, 1.75, -5.25, 5.25])), axis=1) > 0.4]
    ego = np.stack([np.full_like(lateral, 6.125), lateral, np.zeros_like(lateral)], axis=1)
    cam = (ego - np.asarray(calib.translation)) @ matrix_from_quaternion(calib.rotation)
    distorted = np.round(project_points(cam, calib, distorted=True)).astype(int)
    pinhole = np.round(project_points(cam, calib, distorted=False)).astype(int)

    def inside(px):
        return (px[:, 0] >= 0) & (px[:, 0] < calib.width) & (px[:, 1] >= 0) & (px[:, 1] < calib.height)

    def is_yellow(px):
        r, g, b = (image[px[:, 1], px[:, 0], c].astype(int) for c in range(3))
        return (r > 150) & (g > 110) & (b < 110)

    seen = inside(distorted)
    # Where the lens moves the point by more than the paint is thick (about 5 px here).
    shifted = seen & inside(pinhole) & (np.linalg.norm(distorted - pinhole, axis=1) > 6)
    assert seen.sum() > 40 and shifted.sum() > 10
    assert is_yellow(distorted[seen]).mean() > 0.95
    assert is_yellow(pinhole[shifted]).mean() < 0.1


# --- reader ------------------------------------------------------------------------------------


def test_reader_gives_typed_tables_and_interpolated_poses(log):
    assert validate_log(log.path) == []
    assert log.video_path("CAM_FRONT") == log.path / video_file("CAM_FRONT")
    pose = log.pose()
    t = pose["timestamp_us"].to_numpy()
    translations, rotations = log.pose_at(t[:5])
    assert np.allclose(translations, pose[["x", "y", "z"]].to_numpy()[:5])
    assert np.allclose(np.abs(np.sum(rotations * pose[["qw", "qx", "qy", "qz"]].to_numpy()[:5], axis=1)), 1)
    mid, mid_rot = log.pose_at((t[10:20] + t[11:21]) // 2)
    expected = (pose[["x", "y", "z"]].to_numpy()[10:20] + pose[["x", "y", "z"]].to_numpy()[11:21]) / 2
    assert np.allclose(mid, expected)
    yaw = _yaw(pose)
    mid_yaw = 2 * np.arctan2(mid_rot[:, 3], mid_rot[:, 0])
    assert np.allclose(np.angle(np.exp(1j * (mid_yaw - (yaw[10:20] + yaw[11:21]) / 2))), 0, atol=1e-4)
    before, _ = log.pose_at(np.array([t[0] - 1_000_000]))
    assert np.allclose(before[0], translations[0])  # held, not extrapolated
    with pytest.raises(KeyError, match="CAM_BACK"):
        log.frame_timestamps("CAM_BACK")


def _edit_json(name):
    def edit(folder: Path, change):
        data = json.loads((folder / name).read_text())
        change(data)
        (folder / name).write_text(json.dumps(data))

    return edit


def _rewrite(name, change):
    def apply(folder: Path):
        table = pq.read_table(folder / name)
        pq.write_table(change(table), folder / name)

    return apply


BREAKAGES = {
    "missing can": (lambda f: (f / "can.parquet").unlink(), "can.parquet: missing"),
    "corrupt manifest": (lambda f: (f / "manifest.json").write_text("{not json"), "manifest.json: not valid JSON"),
    "manifest without channels": (
        lambda f: _edit_json("manifest.json")(f, lambda d: d.pop("channels")), "manifest.json: missing keys ['channels']"),
    "calibration lacks a channel": (
        lambda f: _edit_json("calibration.json")(f, lambda d: d.pop("CAM_FRONT_LEFT")),
        "calibration.json: no calibration for listed channel CAM_FRONT_LEFT"),
    "calibration with a 2x3 matrix": (
        lambda f: _edit_json("calibration.json")(f, lambda d: d["CAM_FRONT"].update(intrinsic=[[1, 0, 0], [0, 1, 0]])),
        "calibration.json: CAM_FRONT: malformed calibration"),
    "calibration with negative focal length": (
        lambda f: _edit_json("calibration.json")(f, lambda d: d["CAM_FRONT"]["intrinsic"][0].__setitem__(0, -5.0)),
        "calibration.json: CAM_FRONT: intrinsic"),
    "missing video": (lambda f: (f / video_file("CAM_FRONT_LEFT")).unlink(), "cameras/CAM_FRONT_LEFT.mp4: missing"),
    "missing frame timestamps": (
        lambda f: (f / timestamps_file("CAM_FRONT")).unlink(), "cameras/CAM_FRONT.timestamps.parquet: missing"),
    "frame timestamps out of order": (
        _rewrite(timestamps_file("CAM_FRONT"), lambda t: t.take(pa.array([1, 0] + list(range(2, t.num_rows))))),
        "cameras/CAM_FRONT.timestamps.parquet: timestamp_us not strictly increasing"),
    "frame timestamps in nanoseconds": (
        _rewrite(timestamps_file("CAM_FRONT"),
                 lambda t: pa.table({"timestamp_us": pc.multiply(t.column("timestamp_us"), 1000)})),
        "cameras/CAM_FRONT.timestamps.parquet: timestamps"),
    "pose without qz": (_rewrite("pose.parquet", lambda t: t.drop(["qz"])), "pose.parquet: missing columns ['qz']"),
    "empty can": (_rewrite("can.parquet", lambda t: t.slice(0, 0)), "can.parquet: no rows"),
    "can timestamps as text": (
        _rewrite("can.parquet", lambda t: t.set_column(0, "timestamp_us", t.column(0).cast(pa.string()))),
        "can.parquet: column timestamp_us has type string"),
    "corrupt pose file": (lambda f: (f / "pose.parquet").write_bytes(b"nonsense"), "pose.parquet: unreadable parquet"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_reader_names_the_broken_file(log_paths, tmp_path, breakage):
    folder = tmp_path / log_paths[0].name
    shutil.copytree(log_paths[0], folder)
    damage, expected = BREAKAGES[breakage]
    damage(folder)
    with pytest.raises(LogFormatError) as raised:
        read_log(folder)
    message = str(raised.value)
    assert message.startswith(f"{folder}: ") and expected in message
    assert isinstance(raised.value, ValueError)
    assert any(expected in problem for problem in validate_log(folder))


def test_reader_rejects_a_folder_that_is_not_a_log(tmp_path):
    with pytest.raises(LogFormatError, match="manifest.json: missing"):
        read_log(tmp_path)
    with pytest.raises(LogFormatError, match="not a log folder"):
        read_log(tmp_path / "nowhere")


def test_generator_refuses_sizes_the_encoder_cannot_take(tmp_path):
    with pytest.raises(ValueError, match="even"):
        make_logs(tmp_path, 1, 0.1, 1, image_size=(161, 90))
    with pytest.raises(ValueError, match="CAM_SIDEWAYS"):
        make_logs(tmp_path, 1, 0.1, 1, channels=("CAM_SIDEWAYS",))


def test_make_logs_command_writes_readable_logs(tmp_path):
    from jadd_dagster.cli import main as jadd

    code = jadd(["make-logs", "--out", str(tmp_path), "--logs", "2", "--minutes", "0.1", "--seed", "3",
                 "--channels", "CAM_BACK", "--width", "64", "--height", "36"])
    assert code == 0
    logs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name for p in logs] == ["log-3-0001", "log-3-0002"]
    log = read_log(logs[0])
    assert log.manifest.channels == ("CAM_BACK",)
    assert (log.calibration["CAM_BACK"].width, log.calibration["CAM_BACK"].height) == (64, 36)
