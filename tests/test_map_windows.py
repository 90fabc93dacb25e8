"""Map rasters stay bounded whatever a drive's extent (nuscenes.writer.MapWindows): a log whose
scenes lie kilometres apart, or at negative coordinates, gets one map window per place, and the
devkit's map, boxes and CAN bus agree in each window."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nuscenes.can_bus.can_bus_api import NuScenesCanBus
from nuscenes.nuscenes import NuScenes

import nuscenes_fixtures as fx
from jadd_dagster.merge import merge_scenes
from jadd_dagster.nuscenes.tables import MAP_WINDOW_M, checked_trajectory
from jadd_dagster.nuscenes.validate import validate_dataset
from jadd_dagster.scene_record import SCENE_POSE, EgoPose, SceneRecord

MOVES = {0: (0.0, 0.0), 1: (10_000.0, 10_000.0), 2: (-5_000.0, -7_000.0)}  # metres, per scene index


def move_scene(folder: Path, dx: float, dy: float) -> None:
    """Move a scene folder's whole drive by (dx, dy) metres: frame poses and pose.parquet."""
    record = SceneRecord.load(folder)
    frames = [
        dataclasses.replace(f, ego_pose=EgoPose((f.ego_pose.translation[0] + dx, f.ego_pose.translation[1] + dy,
                                                 f.ego_pose.translation[2]), f.ego_pose.rotation))
        for f in record.frames
    ]
    dataclasses.replace(record, frames=frames).save(folder)
    pose = pd.read_parquet(folder / SCENE_POSE)
    pose["x"] += dx
    pose["y"] += dy
    pose.to_parquet(folder / SCENE_POSE)


def boxes(record: SceneRecord, _folder: Path) -> list[dict]:
    """One parked car 5 m left of the ego path's start, in the scene's (moved) map frame."""
    first = record.frames[0].ego_pose.translation
    return [{"instance_id": "car", "keyframe_index": i, "category": "vehicle.car",
             "translation": [first[0], first[1] + 5.0, 0.8], "size": [1.9, 4.5, 1.6],
             "rotation": [1.0, 0.0, 0.0, 0.0], "num_lidar_pts": 1} for i in range(2)]


@pytest.fixture(scope="module")
def far_apart(tmp_path_factory):
    root = tmp_path_factory.mktemp("far")
    folders = [fx.write_scene(root / "scenes", 0, index) for index in MOVES]
    for index, folder in zip(MOVES, folders):
        move_scene(folder, *MOVES[index])
    result = merge_scenes(folders, root / "data", "far", annotations=boxes)
    return result, NuScenes(version=result.versions[0], dataroot=str(result.dataroot), verbose=False)


def test_a_drive_kilometres_wide_gets_small_maps_that_cover_each_scene(far_apart):
    result, nusc = far_apart
    assert result.scenes == 3 and not result.failed
    assert validate_dataset(result.dataroot, result.versions[0]) == []
    assert len(nusc.log) == len(nusc.map) == 3 and {log["logfile"] for log in nusc.log} == {"log-0000"}
    for scene in nusc.scene:
        log = nusc.get("log", scene["log_token"])
        mask = nusc.get("map", log["map_token"])["mask"]
        height, width = mask.mask().shape
        assert width * 0.1 <= MAP_WINDOW_M and height * 0.1 <= MAP_WINDOW_M
        sample_data = [sd for sd in nusc.sample_data if nusc.get("sample", sd["sample_token"])["scene_token"] == scene["token"]]
        xy = np.array([nusc.get("ego_pose", sd["ego_pose_token"])["translation"][:2] for sd in sample_data])
        assert mask.is_on_mask(xy[:, 0], xy[:, 1]).all()
        # The box keeps its place next to the ego path: both moved by the window's origin.
        sample = nusc.get("sample", scene["first_sample_token"])
        box = nusc.get("sample_annotation", sample["anns"][0])["translation"]
        start = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["CAM_FRONT"])["ego_pose_token"])["translation"]
        assert abs(box[0] - start[0]) < 1.0 and abs(box[1] - start[1] - 5.0) < 1.0


def test_the_first_scene_keeps_its_recorded_poses_and_the_can_bus_follows_each_window(far_apart):
    result, nusc = far_apart
    can_bus = NuScenesCanBus(dataroot=str(result.dataroot / result.versions[0]))
    recorded = {i: pd.read_parquet(p / SCENE_POSE) for i, p in enumerate(
        sorted((Path(result.dataroot).parent / "scenes").iterdir()))}
    for scene in nusc.scene:
        index = int(scene["description"].split(";")[0].rsplit("/", 1)[-1])
        positions = np.array([m["pos"][:2] for m in can_bus.get_messages(scene["name"], "pose")])
        shift = positions[0] - recorded[index][["x", "y"]].to_numpy()[0]
        assert np.allclose(positions - shift, recorded[index][["x", "y"]].to_numpy()[: len(positions)])
        if index == 0:
            assert np.allclose(shift, 0.0)  # fits the log's window at (0, 0): as recorded
        log = nusc.get("log", scene["log_token"])
        mask = nusc.get("map", log["map_token"])["mask"]
        assert mask.is_on_mask(positions[:, 0], positions[:, 1]).all()
        route = np.array(can_bus.get_messages(scene["name"], "route"))
        assert mask.is_on_mask(route[:, 0], route[:, 1]).all()


def test_a_scene_whose_pose_jumps_further_than_a_window_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="spans 25,000 m"):
        checked_trajectory([(0.0, 0.0), (25_000.0, 3.0)])
