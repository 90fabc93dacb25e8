"""The nuScenes merge: the official devkit reads what merge_scenes writes, and the invariants hold.

Ground truth comes from tests/nuscenes_fixtures.py (the synthetic scenes), never from the writer.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import nuscenes_fixtures as fx  # noqa: E402
from nuscenes.can_bus.can_bus_api import NuScenesCanBus  # noqa: E402
from nuscenes.nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.splits import get_scenes_of_custom_split  # noqa: E402

from jadd_dagster.merge import MergeResult, assign_splits, merge_scenes  # noqa: E402
from jadd_dagster.nuscenes import writer  # noqa: E402
from jadd_dagster.nuscenes.splits import TRAIN, VAL  # noqa: E402
from jadd_dagster.nuscenes.tables import MAX_SCENES, SCENE_NUMBER_BLACKLIST, TABLE_NAMES, scene_numbers  # noqa: E402
from jadd_dagster.nuscenes.tokens import is_token, make_token  # noqa: E402
from jadd_dagster.nuscenes.validate import validate_dataset  # noqa: E402
from jadd_dagster.scene_record import SceneRecord  # noqa: E402

N_SCENES = 4
N_CHANNELS = len(fx.CHANNELS)


@pytest.fixture(scope="module")
def scene_dirs(tmp_path_factory) -> list[Path]:
    return fx.write_scenes(tmp_path_factory.mktemp("scenes"), logs=2, scenes_per_log=2)


@pytest.fixture(scope="module")
def merged(scene_dirs, tmp_path_factory) -> MergeResult:
    return merge_scenes(scene_dirs, tmp_path_factory.mktemp("dataroot"), "jadd-test", val_fraction=0.25)


@pytest.fixture(scope="module")
def nusc(merged) -> NuScenes:
    return NuScenes(version=merged.versions[0], dataroot=str(merged.dataroot), verbose=False)


def _table(root: Path, version: str, table: str) -> list[dict]:
    return json.loads((root / version / f"{table}.json").read_text())


def test_merge_result_counts_what_was_written(merged):
    assert merged.versions == ["v1.0-jadd-test"]
    assert merged.parts == 1 and merged.failed == []
    assert merged.scenes == N_SCENES
    assert merged.samples == N_SCENES * fx.N_SAMPLES
    assert merged.sample_data == merged.images == N_SCENES * N_CHANNELS * fx.N_FRAMES
    assert sorted(merged.scene_names) == ["log-0000/0000", "log-0000/0001", "log-0001/0000", "log-0001/0001"]
    assert sorted(merged.scene_names.values()) == ["scene-0001", "scene-0002", "scene-0003", "scene-0004"]
    assert merged.splits[TRAIN] + merged.splits[VAL] == N_SCENES
    assert {p.name for p in (merged.dataroot / merged.versions[0]).glob("*.json")} == {
        *(f"{t}.json" for t in TABLE_NAMES),
        "splits.json",
    }


def test_devkit_loads_and_lists_the_scenes(nusc, capsys):
    assert len(nusc.scene) == N_SCENES and len(nusc.sample) == N_SCENES * fx.N_SAMPLES
    nusc.list_scenes()
    listing = capsys.readouterr().out
    assert "scene-0001, log-0000/0000" in listing and listing.count("test-town") == N_SCENES
    for sample in nusc.sample:
        assert set(sample["data"]) == set(fx.CHANNELS)


def test_get_sample_data_returns_the_image_and_intrinsic(nusc):
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    path, boxes, intrinsic = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    assert Path(path).is_file() and boxes == []
    assert Path(path).name.startswith("log-0000__CAM_FRONT__") and "/samples/CAM_FRONT/" in path
    np.testing.assert_allclose(intrinsic, fx.calibration("CAM_FRONT").camera_matrix)
    record = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    assert (record["width"], record["height"]) == (fx.WIDTH, fx.HEIGHT)
    assert record["timestamp"] == fx.scene_start_us(0, 0) + fx.CHANNELS["CAM_FRONT"][1]


def test_images_are_hard_links_to_the_scene_frames(merged, scene_dirs, nusc):
    record = SceneRecord.load(scene_dirs[0])
    sweep = next(f for f in record.frames if not f.is_key_frame)
    target = merged.dataroot / "sweeps" / sweep.channel / f"log-0000__{sweep.channel}__{sweep.timestamp_us}.jpg"
    assert os.path.samefile(target, scene_dirs[0] / sweep.path)
    assert merged.copied_images == 0


def test_render_sample_data_writes_a_png(nusc, tmp_path):
    token = nusc.sample[3]["data"]["CAM_BACK"]
    nusc.render_sample_data(token, out_path=str(tmp_path / "x.png"), verbose=False)
    assert (tmp_path / "x.png").stat().st_size > 0


def test_render_scene_channel_writes_a_video(nusc, tmp_path, monkeypatch):
    import cv2

    # render_scene_channel opens a window (namedWindow, moveWindow, imshow, waitKey, destroyAllWindows);
    # the headless OpenCV build that the devkit depends on has no GUI backend, so stub those out.
    for name, stub in {
        "namedWindow": lambda *a, **k: None,
        "moveWindow": lambda *a, **k: None,
        "imshow": lambda *a, **k: None,
        "waitKey": lambda *a, **k: -1,
        "destroyAllWindows": lambda *a, **k: None,
    }.items():
        monkeypatch.setattr(cv2, name, stub)
    out = tmp_path / "v.avi"
    nusc.render_scene_channel(nusc.scene[1]["token"], "CAM_FRONT", out_path=str(out))
    assert out.stat().st_size > 0
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == fx.N_FRAMES  # the chain ends at the scene's end
    video.release()


def test_can_bus_api_reads_every_scene(merged, scene_dirs):
    can_bus = NuScenesCanBus(dataroot=str(merged.dataroot / merged.versions[0]))
    assert SCENE_NUMBER_BLACKLIST >= set(can_bus.can_blacklist) | set(can_bus.route_blacklist)
    for scene_dir in scene_dirs:
        record = SceneRecord.load(scene_dir)
        name = merged.scene_names[record.scene_id]
        assert int(name[-4:]) not in can_bus.can_blacklist + can_bus.route_blacklist
        can = pd.read_parquet(scene_dir / "can.parquet").set_index("timestamp_us")
        pose = pd.read_parquet(scene_dir / "pose.parquet")

        poses = can_bus.get_messages(name, "pose")
        assert len(poses) == fx.DURATION_US // fx.POSE_US + 1 == len(pose)  # 50 Hz
        assert [p["utime"] for p in poses] == pose["timestamp_us"].tolist()
        np.testing.assert_allclose([p["pos"] for p in poses], pose[["x", "y", "z"]].to_numpy())
        np.testing.assert_allclose([p["orientation"] for p in poses], pose[["qw", "qx", "qy", "qz"]].to_numpy())
        t_s = (pose["timestamp_us"].to_numpy() - record.log_start_time_us) / 1e6
        np.testing.assert_allclose([p["vel"][0] for p in poses], fx.speed_mps(t_s), rtol=1e-6)
        assert all(len(p["accel"]) == 3 and len(p["rotation_rate"]) == 3 for p in poses)

        monitor = can_bus.get_messages(name, "vehicle_monitor")
        assert len(monitor) == fx.DURATION_US // 500_000 + 1  # 2 Hz
        assert [m["utime"] for m in monitor] == [record.start_time_us + k * 500_000 for k in range(len(monitor))]
        for m in monitor:
            assert m["vehicle_speed"] == pytest.approx(can.loc[m["utime"], "speed_mps"] * 3.6, abs=0.006)
            assert m["steering"] == pytest.approx(can.loc[m["utime"], "steering_deg"], abs=0.06)

        steering = can_bus.get_messages(name, "steeranglefeedback")
        assert len(steering) == len(can) == fx.DURATION_US // fx.CAN_US + 1  # 100 Hz
        np.testing.assert_allclose([s["value"] for s in steering], np.radians(can["steering_deg"].to_numpy()))
        assert len(can_bus.get_messages(name, "ms_imu")) == len(can)
        assert len(can_bus.get_messages(name, "zoe_veh_info")) == len(can)
        meta = can_bus.get_messages(name, "meta")
        assert meta["vehicle_monitor"]["message_count"] == len(monitor)
        assert meta["pose"]["message_freq"] == pytest.approx(50.0)
        route, ego = can_bus.get_pose_and_route(name)
        assert route.shape[1] == 2 and np.abs(route - ego[:1]).sum(axis=1).min() < 1e-9


def test_invariants_hold_on_the_output(merged):
    assert validate_dataset(merged.dataroot, merged.versions[0]) == []


def test_sweeps_point_to_the_following_sample(merged, nusc):
    first_sample = {s["token"]: s for s in nusc.sample}
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"]]
    assert len(sweeps) == N_SCENES * N_CHANNELS * (fx.N_FRAMES - fx.N_SAMPLES)
    for sd in sweeps:
        sample = first_sample[sd["sample_token"]]
        assert 0 < sample["timestamp"] - sd["timestamp"] < fx.KEYFRAME_US
    for scene in nusc.scene:
        sample = nusc.get("sample", scene["first_sample_token"])
        count = 1
        while sample["next"]:
            sample = nusc.get("sample", sample["next"])
            count += 1
        assert count == scene["nbr_samples"] == fx.N_SAMPLES and sample["token"] == scene["last_sample_token"]


def test_map_mask_covers_the_ego_poses(nusc):
    for log in nusc.log:
        mask = nusc.get("map", log["map_token"])["mask"]
        scene_tokens = {s["token"] for s in nusc.scene if s["log_token"] == log["token"]}
        sample_tokens = {s["token"] for s in nusc.sample if s["scene_token"] in scene_tokens}
        poses = [
            nusc.get("ego_pose", sd["ego_pose_token"])["translation"]
            for sd in nusc.sample_data
            if sd["sample_token"] in sample_tokens
        ]
        x, y = np.array(poses)[:, 0], np.array(poses)[:, 1]
        assert mask.is_on_mask(x, y).all()
        _, _, heading = fx.origin(int(log["logfile"][-4:]))
        # 30 m to the side of the path is outside the 10 m corridor.
        assert not mask.is_on_mask(x - 30 * math.sin(heading), y + 30 * math.cos(heading)).any()
        height, width = mask.mask().shape
        assert width <= (x.max() + 25) / 0.1 and height <= (y.max() + 25) / 0.1


def test_custom_splits_are_read_by_the_devkit(merged, nusc):
    train = get_scenes_of_custom_split(TRAIN, nusc)
    val = get_scenes_of_custom_split(VAL, nusc)
    assert val and train and sorted(train + val) == sorted(s["name"] for s in nusc.scene)
    assert len(val) == merged.splits[VAL]


def test_assign_splits_keeps_both_splits_non_empty():
    ids = [f"log-0000/{i:04d}" for i in range(2)]
    assert sorted(assign_splits(ids, 0.01).values()) == [TRAIN, VAL]
    assert sorted(assign_splits(ids, 0.99).values()) == [TRAIN, VAL]
    assert set(assign_splits(ids, 0.0).values()) == {TRAIN}
    assert set(assign_splits(ids, 1.0).values()) == {VAL}
    assert assign_splits(["only"], 0.5) == {"only": TRAIN}
    many = [f"log-0001/{i:04d}" for i in range(400)]
    splits = assign_splits(many, 0.2, seed=3)
    assert splits == assign_splits(list(reversed(many)), 0.2, seed=3)
    assert 50 < sum(v == VAL for v in splits.values()) < 110
    assert splits != assign_splits(many, 0.2, seed=4)


def test_merging_twice_gives_identical_files(merged, scene_dirs, tmp_path):
    again = merge_scenes(scene_dirs, tmp_path / "again", "jadd-test", val_fraction=0.25)
    assert again.scene_names == merged.scene_names
    version = merged.versions[0]
    for folder in (version, f"{version}/can_bus", f"{version}/maps"):
        names = sorted(p.name for p in (merged.dataroot / folder).iterdir() if p.is_file())
        assert names == sorted(p.name for p in (again.dataroot / folder).iterdir() if p.is_file())
        match, mismatch, errors = filecmp.cmpfiles(
            merged.dataroot / folder, again.dataroot / folder, names, shallow=False
        )
        assert mismatch == [] and errors == [] and len(match) == len(names)


def test_tokens_are_stable_32_hex_digits():
    assert make_token("log", "log-0001") == make_token("log", "log-0001")
    assert make_token("log", "a:b", "c") != make_token("log", "a", "b:c")
    assert is_token(make_token("sample", "x", 1)) and len(make_token("sample", "x", 1)) == 32


def test_each_part_is_a_loadable_version_with_unique_scene_names(scene_dirs, tmp_path):
    result = merge_scenes(scene_dirs, tmp_path / "parts", "jadd-test", scenes_per_part=1, val_fraction=0.5)
    assert result.parts == N_SCENES
    assert result.versions == [f"v1.0-jadd-test-part{i:03d}" for i in range(N_SCENES)]
    names = []
    for version in result.versions:
        nusc = NuScenes(version=version, dataroot=str(result.dataroot), verbose=False)
        assert len(nusc.scene) == 1 and len(nusc.log) == len(nusc.map) == 1
        names += [s["name"] for s in nusc.scene]
        assert validate_dataset(result.dataroot, version) == []
        splits = json.loads((result.dataroot / version / "splits.json").read_text())
        assert sum(splits.values(), []) == [nusc.scene[0]["name"]]
        # Each part has its own CAN bus files and map masks: any number of parts fit one dataroot.
        can_bus = NuScenesCanBus(dataroot=str(result.dataroot / version))
        assert can_bus.get_messages(nusc.scene[0]["name"], "vehicle_monitor")
        assert nusc.map[0]["filename"].startswith(f"{version}/maps/")
    assert names == ["scene-0001"] * N_SCENES


def test_bad_scene_folders_are_reported_and_the_rest_merges(scene_dirs, tmp_path):
    empty = tmp_path / "no-scene-json"
    empty.mkdir()
    broken = tmp_path / "missing-frame"
    shutil.copytree(scene_dirs[1], broken)
    record = SceneRecord.load(broken)
    (broken / record.frames[5].path).unlink()
    result = merge_scenes([scene_dirs[0], empty, broken, scene_dirs[2]], tmp_path / "root", "jadd-test")
    assert result.scenes == 2 and result.versions == ["v1.0-jadd-test"]
    failed = dict(result.failed)
    assert set(failed) == {str(empty), record.scene_id}
    assert "scene.json" in failed[str(empty)] and "missing" in failed[record.scene_id]
    assert validate_dataset(result.dataroot, result.versions[0]) == []


def test_a_scene_without_can_data_fails_only_when_can_bus_files_are_wanted(scene_dirs, tmp_path):
    no_can = tmp_path / "no-can"
    shutil.copytree(scene_dirs[0], no_can)
    (no_can / "can.parquet").unlink()
    with_can = merge_scenes([no_can, scene_dirs[1]], tmp_path / "a", "jadd-test")
    assert with_can.scenes == 1 and "can.parquet" in dict(with_can.failed)["log-0000/0000"]
    without = merge_scenes([no_can, scene_dirs[1]], tmp_path / "b", "jadd-test", include_can_bus=False)
    assert without.scenes == 2 and without.failed == [] and not (tmp_path / "b" / "can_bus").exists()


def test_a_new_merge_replaces_the_old_version_folders(scene_dirs, tmp_path):
    merge_scenes(scene_dirs, tmp_path, "jadd-test", scenes_per_part=2)
    assert sorted(p.name for p in tmp_path.glob("v1.0-*")) == ["v1.0-jadd-test-part000", "v1.0-jadd-test-part001"]
    result = merge_scenes(scene_dirs[:1], tmp_path, "jadd-test")
    assert sorted(p.name for p in tmp_path.glob("v1.0-*")) == result.versions == ["v1.0-jadd-test"]
    assert not list(tmp_path.glob(".merge-*"))


def test_scene_numbers_skip_the_can_bus_blacklists():
    numbers = list(scene_numbers())
    assert numbers[:3] == [1, 2, 3] and 71 not in numbers and 161 not in numbers and 419 not in numbers
    assert len(numbers) == MAX_SCENES and numbers[-1] == 9999


def test_map_mask_drawn_in_strips_matches_one_piece(tmp_path, monkeypatch):
    import cv2
    from PIL import Image

    path = np.array([[100, 100], [400, 250], [420, 700], [60, 780]])
    writer.write_mask_png(tmp_path / "one.png", 500, 900, [path, path[:1] + 5], 40)
    monkeypatch.setattr(writer, "MAP_STRIP_BYTES", 500 * 37)
    writer.write_mask_png(tmp_path / "strips.png", 500, 900, [path, path[:1] + 5], 40)
    one, strips = np.array(Image.open(tmp_path / "one.png")), np.array(Image.open(tmp_path / "strips.png"))
    assert one.shape == (900, 500) and one[100, 100] == 255 and one[0, 499] == 0
    # OpenCV rasterises a clipped thick line's edges with its own rounding: at most one pixel apart.
    grow = np.ones((3, 3), np.uint8)
    assert (strips <= cv2.dilate(one, grow)).all() and (one <= cv2.dilate(strips, grow)).all()
    assert abs(int((one == 255).sum()) - int((strips == 255).sum())) < 0.01 * (one == 255).sum()


def test_a_part_larger_than_the_scene_names_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="4-digit scene names"):
        merge_scenes([], tmp_path / "root", "big", scenes_per_part=MAX_SCENES + 1)
    assert not (tmp_path / "root").exists()


def test_annotations_are_written_and_read_back_as_boxes(scene_dirs, tmp_path):
    def boxes(record: SceneRecord, _folder: Path) -> list[dict]:
        if record.scene_index != 0:
            return []
        return [
            {
                "instance_id": "car-1",
                "keyframe_index": i,
                "category": "vehicle.car",
                "translation": [120.0 + i, 61.0, 0.8],
                "size": [1.9, 4.5, 1.6],
                "rotation": [1.0, 0.0, 0.0, 0.0],
                "attributes": ["vehicle.moving"],
                "visibility": "v80-100",
                "num_lidar_pts": 1,
            }
            for i in range(3)
        ]

    result = merge_scenes(scene_dirs[:2], tmp_path / "root", "jadd-test", annotations=boxes)
    assert result.sample_annotations == 3 and validate_dataset(result.dataroot, result.versions[0]) == []
    nusc = NuScenes(version=result.versions[0], dataroot=str(result.dataroot), verbose=False)
    assert len(nusc.instance) == 1 and nusc.instance[0]["nbr_annotations"] == 3
    ann = nusc.get("sample_annotation", nusc.instance[0]["last_annotation_token"])
    assert ann["category_name"] == "vehicle.car" and ann["prev"] and not ann["next"]
    assert nusc.get("visibility", ann["visibility_token"])["level"] == "v80-100"
    sweep = next(sd for sd in nusc.sample_data if not sd["is_key_frame"] and sd["sample_token"] == ann["sample_token"])
    assert len(nusc.get_boxes(sweep["token"])) == 1  # interpolated between the previous and this sample


# Each breaker damages a copy of the output in one way; the check must report it.
def _break_prev_link(root, version):
    sd = _table(root, version, "sample_data")
    sd[3]["prev"] = sd[10]["token"]
    return "sample_data", sd


def _break_sweep_to_previous_sample(root, version):
    sd = _table(root, version, "sample_data")
    samples = {s["token"]: s for s in _table(root, version, "sample")}
    sweep = next(x for x in sd if not x["is_key_frame"] and samples[x["sample_token"]]["prev"])
    sweep["sample_token"] = samples[sweep["sample_token"]]["prev"]
    return "sample_data", sd


def _break_float_timestamp(root, version):
    sd = _table(root, version, "sample_data")
    sd[0]["timestamp"] = sd[0]["timestamp"] + 0.5
    return "sample_data", sd


def _break_missing_file(root, version):
    sd = _table(root, version, "sample_data")
    (root / sd[7]["filename"]).unlink()
    return "sample_data", sd


def _break_chain_across_scenes(root, version):
    sd = _table(root, version, "sample_data")
    samples = {s["token"]: s for s in _table(root, version, "sample")}
    channel_of = {r["token"]: r["calibrated_sensor_token"] for r in sd}
    tail = next(x for x in sd if x["next"] == "")
    head = next(x for x in sd if x["prev"] == "" and channel_of[x["token"]] != tail["calibrated_sensor_token"]
                and samples[x["sample_token"]]["scene_token"] != samples[tail["sample_token"]]["scene_token"])
    tail["next"], head["prev"] = head["token"], tail["token"]
    return "sample_data", sd


def _break_quaternion(root, version):
    poses = _table(root, version, "ego_pose")
    poses[2]["rotation"] = [1.0, 0.2, 0.0, 0.0]
    return "ego_pose", poses


def _break_second_keyframe(root, version):
    sd = _table(root, version, "sample_data")
    samples = {s["token"]: s for s in _table(root, version, "sample")}
    sweep = next(x for x in sd if not x["is_key_frame"])
    sweep["is_key_frame"] = True
    assert samples[sweep["sample_token"]]
    return "sample_data", sd


def _break_scene_count(root, version):
    scenes = _table(root, version, "scene")
    scenes[0]["nbr_samples"] += 1
    return "scene", scenes


def _break_dangling_reference(root, version):
    sd = _table(root, version, "sample_data")
    sd[4]["ego_pose_token"] = make_token("ego_pose", "nowhere")
    return "sample_data", sd


def _break_split(root, version):
    (root / version / "splits.json").write_text(json.dumps({TRAIN: ["scene-9999"], VAL: []}))
    return None, None


def _break_split_name(root, version):
    """The old names: the devkit takes train and val for its official scene lists."""
    splits = json.loads((root / version / "splits.json").read_text())
    (root / version / "splits.json").write_text(json.dumps({"train": splits[TRAIN], "val": splits[VAL]}))
    return None, None


def _break_absolute_filename(root, version):
    sd = _table(root, version, "sample_data")
    sd[1]["filename"] = str(root / sd[1]["filename"])
    return "sample_data", sd


@pytest.mark.parametrize(
    "breaker, kind",
    [
        (_break_prev_link, "chain"),
        (_break_sweep_to_previous_sample, "sweep"),
        (_break_float_timestamp, "timestamp"),
        (_break_missing_file, "file"),
        (_break_chain_across_scenes, "chain"),
        (_break_quaternion, "quaternion"),
        (_break_second_keyframe, "keyframe"),
        (_break_scene_count, "scene"),
        (_break_dangling_reference, "reference"),
        (_break_split, "splits"),
        (_break_split_name, "splits"),
        (_break_absolute_filename, "file"),
    ],
)
def test_invariant_check_catches_a_broken_copy(merged, tmp_path, breaker, kind):
    root = tmp_path / "broken"
    shutil.copytree(merged.dataroot, root, copy_function=os.link, ignore=shutil.ignore_patterns("can_bus"))
    version = merged.versions[0]
    for table in TABLE_NAMES:  # the JSON files are rewritten, so they must not share inodes with the original
        path = root / version / f"{table}.json"
        path.unlink()
        shutil.copyfile(merged.dataroot / version / f"{table}.json", path)
    splits = root / version / "splits.json"
    splits.unlink()
    shutil.copyfile(merged.dataroot / version / "splits.json", splits)
    table, records = breaker(root, version)
    if table is not None:
        (root / version / f"{table}.json").write_text(json.dumps(records))
    problems = validate_dataset(root, version)
    assert problems, "the broken copy passed the checks"
    assert any(p.startswith(kind + ":") for p in problems), problems
    assert validate_dataset(merged.dataroot, version) == []
