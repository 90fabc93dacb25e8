"""LIDAR_TOP in datasets, ground-truth annotations from the log, and the devkit's detection and
tracking evaluation, run on the dataset as it is.

One tiny synthetic log with lidar (45 s: 2 scenes of 20 s, 41 keyframes each) is sampled, given its
LIDAR_TOP keyframes and merged with the log's ground truth as sample_annotations, half the scenes in
jadd-val.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from nuscenes import NuScenes

from jadd_dagster.autolabel.evaluate import (
    detection_name,
    evaluate_detections,
    predictions_from_annotations,
)
from jadd_dagster.autolabel.groundtruth import ground_truth_annotations, yaw_quaternion
from jadd_dagster.camera import matrix_from_quaternion, project_points
from jadd_dagster.logs.reader import read_log
from jadd_dagster.logs.sweeps import lidar_points_per_object, read_sweep
from jadd_dagster.merge import merge_scenes
from jadd_dagster.nuscenes.splits import RESERVED, SPLITS, TRAIN, VAL
from jadd_dagster.nuscenes.tables import calibrated_sensor_record, sample_data_filename
from jadd_dagster.nuscenes.validate import validate_dataset
from jadd_dagster.sampling import SamplingProfile, sample_scene
from jadd_dagster.sampling.lidar import MAX_OFFSET_US, add_lidar_frames, nearest_sweeps
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.scenes import cut_scenes

PROFILE = SamplingProfile(keyframe_hz=2, sweep_hz=2, channels=("CAM_FRONT",))


@pytest.fixture(scope="module")
def built(tmp_path_factory, lidar_log):
    """The session's log with lidar, its scene folders and records (with lidar), the merge result and the devkit."""
    root = tmp_path_factory.mktemp("evaluate")
    log = read_log(lidar_log)
    windows, _ = cut_scenes(log.manifest)
    dirs, records = [], []
    for window in windows:
        folder = root / "scenes" / f"{window.index:04d}"
        record = sample_scene(log, window.index, window.start_time_us, window.end_time_us, PROFILE, folder, window.scene_id)
        records.append(add_lidar_frames(log, record, folder))
        dirs.append(folder)
    result = merge_scenes(
        dirs, root / "dataset", "eval", val_fraction=0.5, include_can_bus=False,
        annotations=lambda record, scene_dir: ground_truth_annotations(log, record),
    )
    nusc = NuScenes(version=result.versions[0], dataroot=str(result.dataroot), verbose=False)
    return {"log": log, "dirs": dirs, "records": records, "result": result, "nusc": nusc, "root": root}


def val_tokens(nusc, result) -> list[str]:
    val = set(json.loads((result.dataroot / result.versions[0] / "splits.json").read_text())[VAL])
    return [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in val]


def test_nearest_sweeps_pick_the_closest_within_25_ms():
    sweeps = np.array([0, 50_000, 100_000])
    assert nearest_sweeps(sweeps, [10_000, 30_000, 100_000]) == [0, 50_000, 100_000]
    with pytest.raises(ValueError):
        nearest_sweeps(sweeps, [100_000 + MAX_OFFSET_US + 1])


def test_lidar_keyframes_are_the_nearest_sweeps_and_saved_with_the_scene(built):
    log = built["log"]
    sweeps = log.lidar_timestamps("LIDAR_TOP")
    for folder, record in zip(built["dirs"], built["records"]):
        lidar = [f for f in record.frames if f.channel == "LIDAR_TOP"]
        assert [f.keyframe_index for f in lidar] == list(range(len(record.keyframe_times_us)))
        for frame, t in zip(lidar, record.keyframe_times_us):
            assert frame.timestamp_us == sweeps[np.argmin(np.abs(sweeps - t))]
            assert abs(frame.timestamp_us - t) <= 25_000 and (frame.width, frame.height) == (0, 0)
            np.testing.assert_array_equal(read_sweep(folder / frame.path), log.lidar_sweep("LIDAR_TOP", frame.timestamp_us))
        assert record.cameras["LIDAR_TOP"] == log.lidar_calibration["LIDAR_TOP"].to_json()
        assert SceneRecord.load(folder) == record


def test_devkit_loads_lidar_top_and_annotations(built):
    nusc, result = built["nusc"], built["result"]
    assert result.failed == [] and result.scenes == 2 and result.splits == {TRAIN: 1, VAL: 1}
    assert validate_dataset(result.dataroot, result.versions[0]) == []
    assert len(nusc.sample_annotation) == result.sample_annotations > 0
    sensor = next(s for s in nusc.sensor if s["channel"] == "LIDAR_TOP")
    assert sensor["modality"] == "lidar"
    sample = nusc.sample[0]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert lidar["fileformat"] == "pcd" and lidar["filename"].startswith("samples/LIDAR_TOP/")
    assert lidar["filename"].endswith(".pcd.bin") and lidar["is_key_frame"]
    assert nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])["camera_intrinsic"] == []
    path, boxes, intrinsic = nusc.get_sample_data(lidar["token"])
    assert os.path.isfile(path) and intrinsic is None and len(boxes) > 0
    # The boxes, moved into the sensor frame by the devkit, enclose the sweep's object points.
    points = read_sweep(path)
    inside = sum(int(np.sum(_in_box(b, points[:, :3]))) for b in boxes)
    counted = sum(nusc.get("sample_annotation", a)["num_lidar_pts"] for a in sample["anns"])
    assert counted > 0 and 0.9 * counted <= inside <= 1.1 * counted


def _in_box(box, xyz):
    from nuscenes.utils.geometry_utils import points_in_box

    return points_in_box(box, xyz.T, wlh_factor=1.05)  # surface points, with range noise


def test_ground_truth_annotations_are_the_log_objects_near_the_ego(built):
    log, record = built["log"], built["records"][0]
    annotations = ground_truth_annotations(log, record)
    index = 3
    t = record.keyframe_times_us[index]
    ego, _ = log.pose_at(np.array([t]))
    objects = log.objects_at(t)
    near = objects[np.hypot(objects["x"] - ego[0, 0], objects["y"] - ego[0, 1]) <= 60.0]
    mine = {a["instance_id"]: a for a in annotations if a["keyframe_index"] == index}
    assert set(mine) == set(near["instance_id"]) and len(mine) > 0
    sweep = next(f.timestamp_us for f in record.frames if f.channel == "LIDAR_TOP" and f.keyframe_index == index)
    points = lidar_points_per_object(log, sweep)
    for row in near.itertuples():
        ann = mine[row.instance_id]
        assert ann["category"] == row.category and ann["translation"] == [row.x, row.y, row.z]
        assert ann["size"] == [row.width, row.length, row.height]
        assert ann["rotation"] == pytest.approx([math.cos(row.yaw / 2), 0, 0, math.sin(row.yaw / 2)])
        assert ann["attributes"] == ([row.attribute] if row.attribute else [])
        assert ann["num_lidar_pts"] == int(points.get(row.instance_id, 0)) and ann["num_radar_pts"] == 0
        assert ann["velocity"] == [row.vx, row.vy]
        assert ann["visibility"] in ("v0-40", "v40-60", "v60-80", "v80-100")
    assert yaw_quaternion(math.pi) == pytest.approx([0, 0, 0, 1])


def test_category_names_map_to_detection_classes():
    assert detection_name("vehicle.car") == "car"
    assert detection_name("human.pedestrian.adult") == "pedestrian"
    assert detection_name("vehicle.bus.rigid") == "bus"
    assert detection_name("movable_object.trafficcone") == "traffic_cone"
    assert detection_name("barrier") == "barrier"
    assert detection_name("animal") is None


def test_ground_truth_as_predictions_scores_perfectly(built, tmp_path):
    nusc, result = built["nusc"], built["result"]
    tokens = val_tokens(nusc, result)
    metrics = evaluate_detections(
        result.dataroot, result.versions[0], predictions_from_annotations(nusc, tokens), VAL, tmp_path
    )
    assert metrics["samples"] == len(tokens) and metrics["classes_present"]
    assert all(metrics["per_class_AP"][c] >= 0.99 for c in metrics["classes_present"])
    assert metrics["mAP_present"] >= 0.99
    assert (tmp_path / "metrics_summary.json").is_file() and (tmp_path / "results.json").is_file()


def test_shifted_boxes_score_clearly_lower(built, tmp_path):
    nusc, result = built["nusc"], built["result"]
    tokens = val_tokens(nusc, result)
    predictions = predictions_from_annotations(nusc, tokens)
    shifted = {
        token: [{**box, "translation": [box["translation"][0] + 3.0, *box["translation"][1:]]} for box in boxes]
        for token, boxes in predictions.items()
    }
    degraded = evaluate_detections(result.dataroot, result.versions[0], shifted, VAL, tmp_path)
    assert degraded["mAP_present"] < 0.5
    assert degraded["mAP"] < evaluate_detections(result.dataroot, result.versions[0], predictions, VAL)["mAP"] - 0.1


def test_dropping_half_the_boxes_scores_clearly_lower(built, tmp_path):
    nusc, result = built["nusc"], built["result"]
    predictions = predictions_from_annotations(nusc, val_tokens(nusc, result))
    halved = {token: boxes[::2] for token, boxes in predictions.items()}
    assert evaluate_detections(result.dataroot, result.versions[0], halved, VAL, tmp_path)["mAP_present"] < 0.8


def _cameras_only(log, record):
    no_lidar = dataclasses.replace(log, manifest=dataclasses.replace(log.manifest, lidar_channels=()))
    cameras_only = dataclasses.replace(
        record,
        cameras={c: v for c, v in record.cameras.items() if c != "LIDAR_TOP"},
        frames=[f for f in record.frames if f.channel != "LIDAR_TOP"],
    )
    return no_lidar, cameras_only


def test_without_lidar_the_boxes_the_cameras_see_count_one_point(built):
    log, record = built["log"], built["records"][0]
    no_lidar, cameras_only = _cameras_only(log, record)
    annotations = ground_truth_annotations(no_lidar, cameras_only)
    assert {a["num_lidar_pts"] for a in annotations} == {0, 1}
    calib = log.calibration["CAM_FRONT"]
    for ann in annotations:
        t = record.keyframe_times_us[ann["keyframe_index"]]
        ego_t, ego_q = log.pose_at(np.array([t]))
        ego = matrix_from_quaternion(ego_q[0]).T @ (np.array(ann["translation"]) - ego_t[0])
        if ego[0] + np.hypot(*ann["size"][:2]) / 2 < calib.translation[0]:
            assert ann["num_lidar_pts"] == 0  # wholly behind the front camera
    lidar_points = {(a["instance_id"], a["keyframe_index"]): a["num_lidar_pts"] for a in ground_truth_annotations(log, record)}
    ahead = [a for a in annotations if lidar_points[(a["instance_id"], a["keyframe_index"])] >= 50
             and _in_front_image(log, record, a)]
    assert len(ahead) >= 10 and np.mean([a["num_lidar_pts"] for a in ahead]) >= 0.9
    with_lidar = ground_truth_annotations(log, cameras_only)  # sweeps found in the log itself
    assert with_lidar == ground_truth_annotations(log, record)


def _in_front_image(log, record, ann) -> bool:
    """Whether the box's centre projects into CAM_FRONT's raw image, in front of it."""
    calib = log.calibration["CAM_FRONT"]
    ego_t, ego_q = log.pose_at(np.array([record.keyframe_times_us[ann["keyframe_index"]]]))
    ego = matrix_from_quaternion(ego_q[0]).T @ (np.array(ann["translation"]) - ego_t[0])
    cam = matrix_from_quaternion(calib.rotation).T @ (ego - np.array(calib.translation))
    if cam[2] <= 1.0:
        return False
    u, v = project_points(cam[None], calib)[0]
    return 0 <= u < calib.width and 0 <= v < calib.height


def test_a_camera_only_dataset_is_evaluated_from_its_camera_poses(built, tmp_path):
    log = built["log"]
    no_lidar = dataclasses.replace(log, manifest=dataclasses.replace(log.manifest, lidar_channels=()))
    dirs = []
    for folder, record in zip(built["dirs"], built["records"]):
        copy = tmp_path / "scenes" / folder.name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("LIDAR_TOP"))
        _, cameras_only = _cameras_only(log, record)
        cameras_only.save(copy)
        dirs.append(copy)
    result = merge_scenes(
        dirs, tmp_path / "dataset", "cameras", val_fraction=0.5, include_can_bus=False,
        annotations=lambda record, _: ground_truth_annotations(no_lidar, record),
    )
    nusc = NuScenes(version=result.versions[0], dataroot=str(result.dataroot), verbose=False)
    assert all("LIDAR_TOP" not in s["data"] for s in nusc.sample)
    tokens = val_tokens(nusc, result)
    metrics = evaluate_detections(
        result.dataroot, result.versions[0], predictions_from_annotations(nusc, tokens), VAL, tmp_path / "eval")
    assert metrics["classes_present"] and metrics["mAP_present"] >= 0.99
    assert metrics["errors"]["mATE"] == pytest.approx(0.0, abs=1e-6)
    # The dataset itself still has no LIDAR_TOP: the stand-in lived in the evaluation's devkit object.
    assert all("LIDAR_TOP" not in s["data"] for s in NuScenes(
        version=result.versions[0], dataroot=str(result.dataroot), verbose=False).sample)


def test_lidar_calibration_has_no_intrinsic_and_point_clouds_no_size():
    calibration = {"channel": "LIDAR_TOP", "translation": [0.94, 0.0, 1.84], "rotation": [1.0, 0.0, 0.0, 0.0]}
    record = calibrated_sensor_record("log-1", calibration)
    assert record["camera_intrinsic"] == [] and record["rotation"] == [1.0, 0.0, 0.0, 0.0]
    assert sample_data_filename("log-1", "LIDAR_TOP", 5, False) == "sweeps/LIDAR_TOP/log-1__LIDAR_TOP__5.pcd.bin"
    assert sample_data_filename("log-1", "CAM_FRONT", 5, True) == "samples/CAM_FRONT/log-1__CAM_FRONT__5.jpg"


def test_validation_flags_a_lidar_with_an_intrinsic_or_jpg_format(built, tmp_path):
    result = built["result"]
    version = result.versions[0]
    copy = tmp_path / "copy"
    shutil.copytree(result.dataroot / version, copy / version)
    for child in result.dataroot.iterdir():
        if child.is_dir() and child.name != version and not child.name.startswith("."):
            os.symlink(child.resolve(), copy / child.name)
    folder = copy / version
    sensors = json.loads((folder / "sensor.json").read_text())
    lidar_sensor = next(s["token"] for s in sensors if s["channel"] == "LIDAR_TOP")
    calibrated = json.loads((folder / "calibrated_sensor.json").read_text())
    lidar_cs = {c["token"] for c in calibrated if c["sensor_token"] == lidar_sensor}
    for c in calibrated:
        if c["token"] in lidar_cs:
            c["camera_intrinsic"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    (folder / "calibrated_sensor.json").write_text(json.dumps(calibrated))
    sample_data = json.loads((folder / "sample_data.json").read_text())
    for sd in sample_data:
        if sd["calibrated_sensor_token"] in lidar_cs:
            sd["fileformat"] = "jpg"
    (folder / "sample_data.json").write_text(json.dumps(sample_data))
    problems = validate_dataset(copy, version)
    assert any(p.startswith("intrinsic") for p in problems) and any("fileformat" in p for p in problems)


def test_scored_scenes_are_the_datasets_val_scenes_capped_evenly():
    from jadd_dagster.autolabel.quality import scenes_to_score
    from jadd_dagster.merge import assign_splits

    ids = [f"log-{i % 7}/{i:04d}" for i in range(1000)]
    val = sorted(s for s, split in assign_splits(ids, 0.2).items() if split == VAL)
    assert scenes_to_score(reversed(ids), 0.2, max_scenes=10_000) == val and 150 < len(val) < 250
    capped = scenes_to_score(ids, 0.2, max_scenes=25)
    assert len(capped) == 25 and set(capped) <= set(val) and capped == sorted(capped)
    assert capped[0] == val[0] and val.index(capped[-1]) >= len(val) - len(val) / 25 - 1  # spread to the end


def test_predicting_nothing_scores_zero_over_the_classes_present(built, tmp_path):
    nusc, result = built["nusc"], built["result"]
    tokens = val_tokens(nusc, result)
    perfect = evaluate_detections(result.dataroot, result.versions[0], predictions_from_annotations(nusc, tokens), VAL)
    empty = evaluate_detections(result.dataroot, result.versions[0], {}, VAL, tmp_path)
    assert empty["mAP"] == 0.0 and empty["NDS"] == 0.0 and empty["samples"] == len(tokens)
    assert empty["classes_present"] == perfect["classes_present"] != []


def test_sample_tokens_are_known_without_the_tables(built):
    from jadd_dagster.nuscenes.tables import sample_tokens

    nusc, result = built["nusc"], built["result"]
    for record in built["records"]:
        scene = next(s for s in nusc.scene if s["name"] == result.scene_names[record.scene_id])
        chain, token = [], scene["first_sample_token"]
        while token:
            chain.append(token)
            token = nusc.get("sample", token)["next"]
        assert sample_tokens(record) == chain and len(chain) == len(record.keyframe_times_us)


# --- the devkit's own evaluation, run on the dataset as written (README "Evaluating with the devkit") ---


def test_our_split_names_are_custom_splits_for_the_devkit(built):
    from nuscenes.utils.splits import create_splits_scenes, is_predefined_split

    assert RESERVED == set(create_splits_scenes())  # the devkit's reserved names, as this devkit has them
    assert not any(is_predefined_split(split_name=s) for s in SPLITS)
    result = built["result"]
    splits = json.loads((result.dataroot / result.versions[0] / "splits.json").read_text())
    assert sorted(splits) == sorted(SPLITS) and not RESERVED & set(splits)


def _results_file(nusc, tokens, path, tracking: bool = False) -> str:
    """A results file in the devkit's format: every observable annotation of the samples as a box
    with score 1, as a detector (or tracker, with the annotation's instance as its track) would write."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.eval.tracking.utils import category_to_tracking_name

    results = {}
    for token in tokens:
        boxes = []
        for ann in (nusc.get("sample_annotation", a) for a in nusc.get("sample", token)["anns"]):
            name = (category_to_tracking_name if tracking else category_to_detection_name)(ann["category_name"])
            if name is None or ann["num_lidar_pts"] == 0:
                continue
            velocity = [0.0 if math.isnan(v) else float(v) for v in nusc.box_velocity(ann["token"])[:2]]
            box = {"sample_token": token, "translation": ann["translation"], "size": ann["size"],
                   "rotation": ann["rotation"], "velocity": velocity}
            if tracking:
                box.update(tracking_id=ann["instance_token"], tracking_name=name, tracking_score=1.0)
            else:
                attribute = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
                box.update(detection_name=name, detection_score=1.0, attribute_name=(attribute or [""])[0])
            boxes.append(box)
        results[token] = boxes
    meta = {"use_camera": True, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
    Path(path).write_text(json.dumps({"meta": meta, "results": results}))
    return str(path)


def test_the_devkits_detection_eval_runs_on_the_dataset_with_our_val_split(built, tmp_path):
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    result = built["result"]
    dataroot, version = str(result.dataroot), result.versions[0]
    nusc = NuScenes(version=version, dataroot=dataroot, verbose=False)
    tokens = val_tokens(nusc, result)
    results = _results_file(nusc, tokens, tmp_path / "results.json")
    evaluation = DetectionEval(nusc, config=config_factory("detection_cvpr_2019"), result_path=results,
                               eval_set="jadd-val", output_dir=str(tmp_path / "detection"), verbose=False)
    assert set(evaluation.gt_boxes.sample_tokens) == set(tokens)
    present = {box.detection_name for box in evaluation.gt_boxes.all}
    metrics = evaluation.main(render_curves=False)
    assert present and all(metrics["mean_dist_aps"][c] >= 0.99 for c in present)
    assert all(metrics["label_tp_errors"][c]["trans_err"] == pytest.approx(0.0, abs=1e-6) for c in present)
    # The devkit's reserved name is the official val list, which this version cannot have.
    with pytest.raises(AssertionError, match="not compatible with NuScenes version"):
        DetectionEval(nusc, config=config_factory("detection_cvpr_2019"), result_path=results, eval_set="val",
                      output_dir=str(tmp_path / "official"), verbose=False)


def test_the_devkits_tracking_eval_runs_on_the_dataset_with_our_val_split(built, tmp_path):
    import motmetrics  # noqa: F401  (a dependency: the devkit's TrackingEval needs it)
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.tracking.evaluate import TrackingEval

    result = built["result"]
    dataroot, version = str(result.dataroot), result.versions[0]
    nusc = NuScenes(version=version, dataroot=dataroot, verbose=False)
    results = _results_file(nusc, val_tokens(nusc, result), tmp_path / "tracks.json", tracking=True)
    evaluation = TrackingEval(config=config_factory("tracking_nips_2019"), result_path=results, eval_set="jadd-val",
                              output_dir=str(tmp_path / "tracking"), nusc_version=version, nusc_dataroot=dataroot,
                              verbose=False)
    metrics = evaluation.main(render_curves=False)
    scored = [name for name, amota in metrics["label_metrics"]["amota"].items() if not math.isnan(amota)]
    assert scored and all(metrics["label_metrics"]["amota"][name] >= 0.99 for name in scored)
    assert metrics["ids"] == 0 and metrics["fp"] == 0


def test_our_scoring_refuses_a_reserved_split_name(built):
    result = built["result"]
    with pytest.raises(ValueError, match="reserves"):
        evaluate_detections(result.dataroot, result.versions[0], {}, "val")
