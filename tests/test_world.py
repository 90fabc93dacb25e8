"""Ground truth of the synthetic logs: the world's objects, how cameras show them, and LIDAR_TOP.

Expectations come from physics (speeds, accelerations, boxes that never overlap), from
camera.project_points (OpenCV's lens model), from flat-ground and box geometry written out here,
and from the published nuScenes classes and sizes, never from the generator's intermediate values.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from jadd_dagster.camera import (
    CameraCalibration,
    camera_to_ego_rotation,
    matrix_from_quaternion,
    pinhole_intrinsic,
    project_points,
    quaternion_from_matrix,
)
from jadd_dagster.categories import CLASS_INDEX
from jadd_dagster.geometry import count_points_in_boxes
from jadd_dagster.logs import (
    OBJECT_COLUMNS,
    LogFormatError,
    read_log,
    validate_log,
)
from jadd_dagster.logs.sweeps import lidar_points_per_object
from jadd_dagster.logs.tracks import Boxes
from jadd_dagster.sim import make_logs
from jadd_dagster.sim.drive import simulate_drive
from jadd_dagster.sim.lidar import lidar_calibration, lidar_rays, simulate_sweep
from jadd_dagster.sim.render import CLASS_RGB, camera_rays, render_frame
from jadd_dagster.sim.world import simulate_world

SEED = 21
# nuScenes detection classes: category name -> (detection class, mean [w, l, h] metres).
NUSCENES = {
    "vehicle.car": ("car", (1.95, 4.62, 1.73)),
    "vehicle.truck": ("truck", (2.51, 6.93, 2.84)),
    "vehicle.bus.rigid": ("bus", (2.94, 11.19, 3.47)),
    "vehicle.trailer": ("trailer", (2.90, 12.28, 3.87)),
    "vehicle.construction": ("construction_vehicle", (2.73, 6.37, 3.19)),
    "human.pedestrian.adult": ("pedestrian", (0.67, 0.73, 1.77)),
    "vehicle.motorcycle": ("motorcycle", (0.77, 2.11, 1.47)),
    "vehicle.bicycle": ("bicycle", (0.60, 1.70, 1.28)),
    "movable_object.trafficcone": ("traffic_cone", (0.41, 0.41, 1.07)),
    "movable_object.barrier": ("barrier", (2.53, 0.50, 0.98)),
}
# What a real object of each kind can do: top speed m/s, largest acceleration m/s² (braking and
# cornering included), and the attributes nuScenes allows.
LIMITS = {
    "vehicle": (30.0, 8.0, {"vehicle.moving", "vehicle.stopped", "vehicle.parked"}),
    "cycle": (30.0, 8.0, {"cycle.with_rider", "cycle.without_rider"}),
    "human": (2.5, 3.0, {"pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down"}),
    "movable_object": (0.0, 0.0, {""}),
}
# The ego car occupies at least this footprint in its own frame (metres): x forward, y left.
EGO_FOOTPRINT = ((0.0, 3.0), (-0.8, 0.8))


def _limits(category: str):
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return LIMITS["cycle"]
    return LIMITS[category.split(".")[0]]


@pytest.fixture(scope="module")
def worlds() -> list[tuple[pd.DataFrame, object]]:
    """Three one-minute drives and their worlds (the world alone is cheap to simulate)."""
    out = []
    for index in range(3):
        drive = simulate_drive(np.random.default_rng([SEED, index]), 60_000_000)
        world = simulate_world(np.random.default_rng([SEED, index, 1]), drive, 0).to_pandas()
        out.append((world, drive))
    return out


@pytest.fixture(scope="module")
def lidar_log_path(tmp_path_factory) -> Path:
    """Three seconds of one camera and LIDAR_TOP (60 sweeps, about 40 MB)."""
    folder = tmp_path_factory.mktemp("lidar")
    return make_logs(folder, 1, 0.05, SEED, ("CAM_FRONT",), (320, 180), workers=1, lidar=True)[0]


@pytest.fixture(scope="module")
def lidar_log(lidar_log_path):
    return read_log(lidar_log_path)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def _ego_pose_at(drive, t_us: np.ndarray):
    """The ego's map pose (x, y, yaw) at times t_us from the drive's own samples."""
    return tuple(np.interp(t_us, drive.t_us, values) for values in (drive.x, drive.y, drive.yaw))


def _corners_2d(x, y, yaw, length, width) -> np.ndarray:
    """(4, 2) footprint corners of a box."""
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
    return local @ np.array([[c, s], [-s, c]]) + [x, y]


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex polygons (N, 2) overlap: no separating axis among their edge normals."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for nx, ny in np.stack([-edges[:, 1], edges[:, 0]], axis=1):
            pa, pb = a @ (nx, ny), b @ (nx, ny)
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def _inside_box(points: np.ndarray, row, margin: float) -> np.ndarray:
    """Which map points (N, 3) lie in an object row's box grown by margin metres."""
    rel = points - (row.x, row.y, row.z)
    c, s = np.cos(row.yaw), np.sin(row.yaw)
    along, across = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
    return ((np.abs(along) <= row.length / 2 + margin) & (np.abs(across) <= row.width / 2 + margin)
            & (np.abs(rel[:, 2]) <= row.height / 2 + margin))


def _class_of_colour(rgb) -> str | None:
    """The detection class whose palette hue is nearest a pixel's, or None for a grey pixel."""
    hsv = cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0].astype(float)
    if hsv[1] < 60:
        return None
    hues = {name: cv2.cvtColor(np.uint8([[colour]]), cv2.COLOR_RGB2HSV)[0, 0, 0] for name, colour in CLASS_RGB.items()}
    distance = {name: min(abs(hsv[0] - h), 180 - abs(hsv[0] - h)) for name, h in hues.items()}
    return min(distance, key=distance.get)


# --- the world ----------------------------------------------------------------------------------


def test_objects_are_nuscenes_classes_with_their_sizes_and_attributes(worlds):
    everything = pd.concat([w for w, _ in worlds])
    assert list(everything.columns) == list(OBJECT_COLUMNS)
    assert set(everything["category"]) == set(NUSCENES)  # every class turns up in three minutes
    for category, rows in everything.groupby("category"):
        mean = np.array(NUSCENES[category][1])
        sizes = rows[["width", "length", "height"]].to_numpy()
        assert np.all(np.abs(sizes / mean - 1) <= 0.15), category
        assert np.allclose(rows["z"], rows["height"] / 2)
        assert set(rows["attribute"]) <= _limits(category)[2], category
    # Each instance keeps one class and one size.
    for world, _ in worlds:
        assert world.groupby("instance_id")[["category", "width", "length", "height"]].nunique().max().max() == 1


def test_a_twenty_second_scene_has_objects_all_around(worlds):
    for world, drive in worlds:
        counts = []
        for t in range(0, 60_000_000, 1_000_000):
            rows = world[world["timestamp_us"] == t]
            ex, ey, _ = _ego_pose_at(drive, np.array([t]))
            counts.append(int((np.hypot(rows["x"] - ex[0], rows["y"] - ey[0]) < 50).sum()))
        assert 10 <= np.median(counts) <= 40 and min(counts) >= 3, counts
        ahead = []
        for t in range(0, 60_000_000, 5_000_000):
            rows = world[world["timestamp_us"] == t]
            ex, ey, eyaw = (v[0] for v in _ego_pose_at(drive, np.array([t])))
            forward = (rows["x"] - ex) * np.cos(eyaw) + (rows["y"] - ey) * np.sin(eyaw)
            ahead.append(int(((forward > 3) & (np.hypot(rows["x"] - ex, rows["y"] - ey) < 40)).sum()))
        assert np.mean(ahead) >= 3, ahead


def test_trajectories_are_physically_plausible(worlds):
    checked_moving = 0
    for world, _ in worlds:
        for instance, rows in world.groupby("instance_id"):
            category = rows["category"].iloc[0]
            top_speed, top_accel, _ = _limits(category)
            t = rows["timestamp_us"].to_numpy()
            assert np.all(np.diff(t) == 100_000), f"{instance} has a gap or repeats"  # no teleporting
            xy = rows[["x", "y"]].to_numpy()
            velocity = np.diff(xy, axis=0) / 0.1
            speed = np.linalg.norm(velocity, axis=1)
            assert speed.max(initial=0) <= top_speed + 1e-6, (instance, category, speed.max())
            if len(speed) > 2:
                accel = np.linalg.norm(np.diff(velocity, axis=0), axis=1) / 0.1
                assert accel.max() <= top_accel + 1e-6, (instance, category, accel.max())
            # The stored velocity is the motion between samples.
            stored = rows[["vx", "vy"]].to_numpy()
            assert np.abs((stored[1:] + stored[:-1]) / 2 - velocity).max(initial=0) < 0.2, instance
            moving = speed > 1.0
            if category.startswith(("vehicle", "human")) and moving.any():
                checked_moving += 1
                heading = np.arctan2(velocity[:, 1], velocity[:, 0])
                yaw = rows["yaw"].to_numpy()
                mid_yaw = yaw[:-1] + _wrap(yaw[1:] - yaw[:-1]) / 2
                assert np.degrees(np.abs(_wrap(heading - mid_yaw))[moving]).max() < 3, instance
    assert checked_moving > 50


def test_objects_never_overlap_each_other_or_the_ego(worlds):
    for world, drive in worlds:
        for t, rows in world[world["timestamp_us"] % 500_000 == 0].groupby("timestamp_us"):
            polygons = [_corners_2d(r.x, r.y, r.yaw, r.length, r.width) for r in rows.itertuples()]
            ex, ey, eyaw = (v[0] for v in _ego_pose_at(drive, np.array([t])))
            (x0, x1), (y0, y1) = EGO_FOOTPRINT
            ego = _corners_2d(ex + (x0 + x1) / 2 * np.cos(eyaw), ey + (x0 + x1) / 2 * np.sin(eyaw), eyaw, x1 - x0, y1 - y0)
            centres = rows[["x", "y"]].to_numpy()
            reach = np.hypot(rows["length"], rows["width"]).to_numpy() / 2
            for i, poly in enumerate(polygons):
                assert not _overlap(poly, ego), (t, rows.iloc[i]["instance_id"])
                close = np.flatnonzero(np.hypot(*(centres[i + 1:] - centres[i]).T) < reach[i + 1:] + reach[i]) + i + 1
                for j in close:
                    assert not _overlap(poly, polygons[j]), (t, rows.iloc[i]["instance_id"], rows.iloc[j]["instance_id"])


def test_world_is_determined_by_the_seed(worlds):
    drive = simulate_drive(np.random.default_rng([SEED, 0]), 60_000_000)
    again = simulate_world(np.random.default_rng([SEED, 0, 1]), drive, 0).to_pandas()
    pd.testing.assert_frame_equal(again, worlds[0][0])
    other = simulate_world(np.random.default_rng([SEED + 1, 0, 1]), drive, 0).to_pandas()
    assert len(other) != len(again) or not np.allclose(other["x"], again["x"])


# --- reader -------------------------------------------------------------------------------------


def test_reader_interpolates_boxes_between_samples(lidar_log):
    objects = lidar_log.objects()
    assert list(objects.columns) == list(OBJECT_COLUMNS) and len(objects) > 0
    mover = objects[objects["attribute"] == "vehicle.moving"]["instance_id"].iloc[0]
    rows = objects[objects["instance_id"] == mover].reset_index(drop=True)
    t0, t1 = rows["timestamp_us"].iloc[3], rows["timestamp_us"].iloc[4]
    at_sample = lidar_log.objects_at(t0).set_index("instance_id").loc[mover]
    columns = ["x", "y", "z", "yaw", "vx"]
    assert np.allclose(at_sample[columns].to_numpy(float), rows.loc[3, columns].to_numpy(float))
    between = lidar_log.objects_at((t0 + t1) // 2).set_index("instance_id").loc[mover]
    expected = (rows.loc[3, ["x", "y"]].to_numpy(float) + rows.loc[4, ["x", "y"]].to_numpy(float)) / 2
    assert np.allclose(between[["x", "y"]].to_numpy(float), expected)
    assert abs(_wrap(between["yaw"] - (rows.loc[3, "yaw"] + _wrap(rows.loc[4, "yaw"] - rows.loc[3, "yaw"]) / 2))) < 1e-9
    # An object exists only between its first and last samples.
    first, last = rows["timestamp_us"].iloc[[0, -1]]
    if first > lidar_log.manifest.start_time_us:
        assert mover not in set(lidar_log.objects_at(first - 1)["instance_id"])
    assert mover in set(lidar_log.objects_at(last)["instance_id"])


def test_log_without_objects_or_lidar_is_still_valid(lidar_log_path, tmp_path):
    folder = tmp_path / lidar_log_path.name
    shutil.copytree(lidar_log_path, folder)
    (folder / "objects.parquet").unlink()
    shutil.rmtree(folder / "lidar")
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["lidar_channels"]  # a manifest written before lidars existed
    (folder / "manifest.json").write_text(json.dumps(manifest))
    calibration = json.loads((folder / "calibration.json").read_text())
    del calibration["LIDAR_TOP"]
    (folder / "calibration.json").write_text(json.dumps(calibration))
    assert validate_log(folder) == []
    log = read_log(folder)
    assert log.objects() is None and log.manifest.lidar_channels == () and log.lidar_calibration == {}
    empty = log.objects_at(log.manifest.start_time_us)
    assert empty.empty and list(empty.columns) == list(OBJECT_COLUMNS)


@pytest.mark.parametrize("breakage, expected", [
    ("sweep", "lidar/LIDAR_TOP/"),
    ("lidar calibration", "calibration.json: no calibration for listed lidar LIDAR_TOP"),
    ("objects column", "objects.parquet: missing columns ['yaw']"),
])
def test_reader_names_broken_lidar_and_object_files(lidar_log_path, tmp_path, breakage, expected):
    folder = tmp_path / lidar_log_path.name
    shutil.copytree(lidar_log_path, folder)
    if breakage == "sweep":
        max((folder / "lidar" / "LIDAR_TOP").iterdir()).unlink()
    elif breakage == "lidar calibration":
        calibration = json.loads((folder / "calibration.json").read_text())
        del calibration["LIDAR_TOP"]
        (folder / "calibration.json").write_text(json.dumps(calibration))
    else:
        pd.read_parquet(folder / "objects.parquet").drop(columns=["yaw"]).to_parquet(folder / "objects.parquet")
    with pytest.raises(LogFormatError) as raised:
        read_log(folder)
    assert expected in str(raised.value)


# --- cameras ------------------------------------------------------------------------------------


def _front_calibration(width=320, height=180) -> CameraCalibration:
    return CameraCalibration(
        channel="CAM_FRONT", width=width, height=height, intrinsic=pinhole_intrinsic(width, height, 70),
        distortion=(-0.28, 0.08, 0.0, 0.0, 0.0), translation=(1.6, 0.0, 1.6),
        rotation=quaternion_from_matrix(camera_to_ego_rotation(0.0, 5.0)),
    )


def _boxes(*objects) -> Boxes:
    """Boxes from (category, x, y, yaw, [w, l, h]) tuples standing on the ground."""
    n = len(objects)
    return Boxes(
        ids=np.array([f"t-{i}" for i in range(n)]), category=np.array([o[0] for o in objects]),
        attribute=np.full(n, ""), class_index=np.array([CLASS_INDEX[o[0]] for o in objects]),
        centre=np.array([(o[1], o[2], o[4][2] / 2) for o in objects], dtype=float),
        size=np.array([o[4] for o in objects], dtype=float), yaw=np.array([o[3] for o in objects], dtype=float),
        velocity=np.zeros((n, 2)),
    )


def _pixel_of(point_ego, calib) -> np.ndarray:
    cam = (np.asarray(point_ego, dtype=float) - np.asarray(calib.translation)) @ matrix_from_quaternion(calib.rotation)
    return np.round(project_points(cam[None], calib, distorted=True)[0]).astype(int)


def test_an_object_appears_where_the_lens_projects_it():
    calib = _front_calibration()
    rays = camera_rays(calib)
    # A traffic cone well off the optical axis: the lens moves it by more than its own width, so
    # its colour at the distorted projection (and not at the pinhole one) checks the lens model.
    cone = ("movable_object.trafficcone", 6.6, 3.5, 0.0, (0.41, 0.41, 1.07))
    image = render_frame(rays, np.zeros(3), np.eye(3), _boxes(cone))
    cam = (np.array([6.6, 3.5, 0.53]) - calib.translation) @ matrix_from_quaternion(calib.rotation)
    u, v = np.round(project_points(cam[None], calib, distorted=True)[0]).astype(int)
    pu, pv = np.round(project_points(cam[None], calib, distorted=False)[0]).astype(int)
    assert abs(pu - u) > 15 and 0 <= pu < calib.width
    assert _class_of_colour(image[v, u]) == "traffic_cone"
    assert _class_of_colour(image[pv, pu]) is None
    empty = render_frame(rays, np.zeros(3), np.eye(3))
    assert _class_of_colour(empty[v, u]) is None  # the ground and sky are grey, not a class


def test_box_faces_are_distinct_shades_of_the_class_colour():
    calib = _front_calibration()
    # A low car 10 m ahead and 3 m to the left, turned away: the camera sees its top and two sides.
    x, y, yaw, (w, l, h) = 10.0, 3.0, 0.8, (1.9, 4.6, 1.0)
    image = render_frame(camera_rays(calib), np.zeros(3), np.eye(3), _boxes(("vehicle.car", x, y, yaw, (w, l, h))))
    heading, left = np.array([np.cos(yaw), np.sin(yaw), 0]), np.array([-np.sin(yaw), np.cos(yaw), 0])
    centre, camera = np.array([x, y, h / 2]), np.asarray(calib.translation)
    faces = [heading * l / 2, -heading * l / 2, left * w / 2, -left * w / 2, np.array([0, 0, h / 2])]
    seen = []
    for offset in faces:
        if np.dot(offset, camera - (centre + offset)) > 0:  # the face looks towards the camera
            u, v = _pixel_of(centre + offset, calib)  # the middle of the face
            seen.append(image[v, u].astype(int))
    assert len(seen) == 3
    assert all(_class_of_colour(c) == "car" for c in seen)
    assert min(abs(a.max() - b.max()) for i, a in enumerate(seen) for b in seen[i + 1:]) > 10


def test_an_object_behind_a_nearer_one_is_hidden():
    calib = _front_calibration()
    bus = ("vehicle.bus.rigid", 15.0, 0.0, np.pi / 2, (2.9, 11.0, 3.4))  # across the view
    walker = ("human.pedestrian.adult", 25.0, 0.0, 0.0, (0.7, 0.7, 1.8))  # right behind it
    rays = camera_rays(calib)
    hidden = render_frame(rays, np.zeros(3), np.eye(3), _boxes(bus, walker))
    shown = render_frame(rays, np.zeros(3), np.eye(3), _boxes(walker))
    u, v = _pixel_of((25.0, 0.0, 0.9), calib)
    assert _class_of_colour(shown[v, u]) == "pedestrian"
    assert _class_of_colour(hidden[v, u]) == "bus"
    assert np.array_equal(hidden, render_frame(rays, np.zeros(3), np.eye(3), _boxes(bus)))


def _occluded(camera_map, target, rows, margin=0.05) -> bool:
    """Whether the segment from the camera to target (map frame) passes through another box."""
    points = camera_map + np.linspace(0.02, 0.95, 200)[:, None] * (target - camera_map)
    return any(_inside_box(points, row, margin).any() for row in rows.itertuples())


def test_video_shows_each_visible_object_at_its_projected_centre(lidar_log):
    """End to end: objects_at + pose_at + calibration -> distorted projection -> decoded pixel colour."""
    channel = "CAM_FRONT"
    calib = lidar_log.calibration[channel]
    stamps = lidar_log.frame_timestamps(channel)
    picks = list(range(0, len(stamps), 10))
    with av.open(str(lidar_log.video_path(channel))) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in picks]
    translations, rotations = lidar_log.pose_at(stamps[picks])
    cam_rot = matrix_from_quaternion(calib.rotation)
    checked = wrong = 0
    for image, stamp, t, q in zip(frames, stamps[picks], translations, rotations):
        ego_rot = matrix_from_quaternion(q)
        camera_map = t + ego_rot @ np.asarray(calib.translation)
        rows = lidar_log.objects_at(stamp)
        for i, row in enumerate(rows.itertuples()):
            centre = np.array([row.x, row.y, row.z])
            cam = ((centre - t) @ ego_rot - np.asarray(calib.translation)) @ cam_rot
            if not 3 < cam[2] < 30:
                continue
            u, v = np.round(project_points(cam[None], calib, distorted=True)[0]).astype(int)
            size_px = calib.camera_matrix[0, 0] * min(row.height, max(row.width, 0.6)) / cam[2]
            if not (4 <= u < calib.width - 4 and 4 <= v < calib.height - 4) or size_px < 8:
                continue
            if _occluded(camera_map, centre, rows.drop(index=rows.index[i])):
                continue
            checked += 1
            colours = [_class_of_colour(image[v + dv, u + du]) for dv in (-1, 0, 1) for du in (-1, 0, 1)]
            wrong += NUSCENES[row.category][0] not in colours
    assert checked >= 10 and wrong == 0, (checked, wrong)


# --- lidar --------------------------------------------------------------------------------------


def _sweep_in_map(log, stamp):
    points = log.lidar_sweep("LIDAR_TOP", stamp)
    calib = log.lidar_calibration["LIDAR_TOP"]
    ego = points[:, :3].astype(float) @ matrix_from_quaternion(calib.rotation).T + calib.translation
    t, q = log.pose_at(np.array([stamp]))
    return points, ego @ matrix_from_quaternion(q[0]).T + t[0]


def test_lidar_sweeps_are_nuscenes_pcd_bin_files_at_20_hz(lidar_log, lidar_log_path):
    assert lidar_log.manifest.lidar_channels == ("LIDAR_TOP",)
    assert json.loads((lidar_log_path / "manifest.json").read_text())["lidar_channels"] == ["LIDAR_TOP"]
    stamps = lidar_log.lidar_timestamps("LIDAR_TOP")
    assert stamps[0] == lidar_log.manifest.start_time_us and set(np.diff(stamps)) == {50_000}
    assert len(stamps) == 60 and stamps[-1] < lidar_log.manifest.end_time_us
    files = sorted((lidar_log_path / "lidar" / "LIDAR_TOP").iterdir())
    assert [f.name for f in files] == sorted(f"{s}.pcd.bin" for s in stamps)
    points = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)
    assert 15_000 < len(points) < 40_000
    assert set(np.unique(points[:, 4])) <= set(range(32)) and len(np.unique(points[:, 4])) > 20
    assert points[:, 3].min() >= 0 and points[:, 3].max() <= 255
    assert np.linalg.norm(points[:, :3], axis=1).max() <= 70.1
    calib = lidar_log.lidar_calibration["LIDAR_TOP"]
    assert calib.translation[2] > 1.5
    # nuScenes LIDAR_TOP axes: x points right, y forward (ego frame).
    rotation = matrix_from_quaternion(calib.rotation)
    assert np.allclose(rotation @ (1, 0, 0), (0, -1, 0), atol=0.02) and np.allclose(rotation @ (0, 1, 0), (1, 0, 0), atol=0.02)


def test_lidar_points_lie_on_the_ground_or_on_an_object(lidar_log):
    stamps = lidar_log.lidar_timestamps("LIDAR_TOP")
    on_objects = 0
    for stamp in stamps[::12]:
        _, world = _sweep_in_map(lidar_log, stamp)
        ground = np.abs(world[:, 2]) < 0.08
        rows = lidar_log.objects_at(stamp)
        inside = np.zeros(len(world), dtype=bool)
        for row in rows.itertuples():
            inside |= _inside_box(world, row, margin=0.08)
        assert np.all(ground | inside), world[~(ground | inside)][:5]
        on_objects += int((inside & ~ground).sum())
    assert on_objects > 500


def test_a_box_hit_by_the_lidar_holds_its_points_and_shadows_the_ground():
    calib = lidar_calibration(np.random.default_rng(0))
    rays = lidar_rays(calib, azimuth_steps=720)
    ego = np.array([50.0, 50.0, 0.0])
    car = _boxes(("vehicle.car", 60.0, 50.0, 0.3, (1.9, 4.6, 1.7)))  # 10 m ahead
    points = simulate_sweep(rays, ego, 0.0, car, np.random.default_rng(1))
    ego_points = points[:, :3].astype(float) @ matrix_from_quaternion(calib.rotation).T + calib.translation
    lifted = ego_points[:, 2] > 0.1  # not the ground
    box_centre = car.centre[0] - ego
    row = pd.Series({"x": box_centre[0], "y": box_centre[1], "z": box_centre[2], "yaw": 0.3,
                     "width": 1.9, "length": 4.6, "height": 1.7})
    inside = _inside_box(ego_points, row, margin=0.08)
    assert lifted.sum() > 200 and inside[lifted].all()
    assert count_points_in_boxes(ego_points, box_centre[None], car.size, car.yaw, margin=0.08)[0] == inside.sum()
    # Behind the car, seen from the sensor, no ground is hit (without the car, plenty is).
    car_angle = np.arctan2(box_centre[1], box_centre[0] - calib.translation[0])

    def behind(points_ego):
        angle = np.arctan2(points_ego[:, 1] - calib.translation[1], points_ego[:, 0] - calib.translation[0])
        return (np.abs(angle - car_angle) < 0.05) & (np.hypot(points_ego[:, 0], points_ego[:, 1]) > 13)

    assert not behind(ego_points).any()
    open_view = simulate_sweep(rays, ego, 0.0, None, np.random.default_rng(1))
    assert behind(open_view[:, :3].astype(float) @ matrix_from_quaternion(calib.rotation).T + calib.translation).sum() > 20
    assert np.abs(ego_points[~inside, 2]).max() < 0.08  # the rest is ground


def test_lidar_points_per_object_counts_what_the_sweep_hit(lidar_log):
    stamp = lidar_log.lidar_timestamps("LIDAR_TOP")[30]
    counts = lidar_points_per_object(lidar_log, stamp)
    _, world = _sweep_in_map(lidar_log, stamp)
    rows = lidar_log.objects_at(stamp).set_index("instance_id")
    assert set(counts.index) == set(rows.index)
    for instance, count in counts.items():
        assert count == int(_inside_box(world, rows.loc[instance], margin=0.1).sum())
    assert (counts > 0).sum() >= 3


def test_same_seed_writes_identical_objects_and_sweeps(lidar_log_path, tmp_path):
    (again,) = make_logs(tmp_path, 1, 0.05, SEED, ("CAM_FRONT",), (320, 180), workers=2, lidar=True)
    assert _files(again) == _files(lidar_log_path)


def test_ground_of_a_large_image_is_sampled_like_small_pieces_of_it():
    """cv2.remap refuses maps 32,767 or more wide: a frame of 640x360 asks for more ground points
    than that at once (the renderer failed at that size)."""
    from jadd_dagster.sim.render import _ground_textures, ground_texture

    rng = np.random.default_rng(3)
    count, levels = 80_000, len(_ground_textures())
    x, y = rng.uniform(-500, 500, count).astype(np.float32), rng.uniform(-500, 500, count).astype(np.float32)
    starts = np.array([0, 50_000] + [count] * levels)[: levels + 1]  # two levels used, the first past 32,767
    whole = ground_texture(x, y, starts)
    pieces = np.concatenate([
        ground_texture(x[lo:lo + 1000], y[lo:lo + 1000], np.clip(starts - lo, 0, min(1000, count - lo)))
        for lo in range(0, count, 1000)
    ])
    assert whole.shape == (count, 3) and np.array_equal(whole, pieces)
