"""The merge step of a build on its own: scene outputs in a local store to a checked dataroot."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from jadd_dagster import build
from jadd_dagster.camera import matrix_from_quaternion
from jadd_dagster.logs.generator import make_logs
from jadd_dagster.logs.reader import read_log
from jadd_dagster.registry import SceneOutput
from jadd_dagster.sampling import sample_scene
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.scenes import cut_scenes
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import LocalStore


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Both scenes of a 45 s log (in the store, as ingest leaves it) sampled into the store."""
    root = tmp_path_factory.mktemp("build")
    (path,) = make_logs(root / "store" / "logs", 1, 0.75, seed=8, channels=("CAM_FRONT",), image_size=(96, 54))
    log = read_log(path)
    spec = DatasetSpec(name="merged", channels=["CAM_FRONT"], keyframe_hz=2, sweep_hz=10)
    profile = build.sampling_profile(spec)
    store = LocalStore(root / "store")
    outputs = []
    for window in cut_scenes(log.manifest)[0]:
        key = build.scene_output_key(build.STAGE_SAMPLED, profile.key(), window.log_id, window.index)
        record = sample_scene(log, window.index, window.start_time_us, window.end_time_us, profile,
                              store.local_path(key), window.scene_id)
        outputs.append(SceneOutput(window.scene_id, build.STAGE_SAMPLED, profile.key(), key, len(record.frames), 1.0))
    return spec, store, outputs


def test_a_complete_build_passes_every_check(sampled):
    spec, store, outputs = sampled
    summary, checks = build.assemble_dataset(spec, outputs, store, "run-ok", scene_length_s=20.0)
    assert summary.scenes == 2 and summary.failed_scenes == {}
    assert checks.frame_counts == [] and checks.nuscenes_invariants == [] and checks.devkit == []


def test_a_scene_missing_a_frame_fails_the_frame_count_check(sampled):
    spec, store, outputs = sampled
    folder = store.local_path(outputs[1].path)
    record = SceneRecord.load(folder)
    sweep = next(f for f in record.frames if not f.is_key_frame)
    dataclasses.replace(record, frames=[f for f in record.frames if f is not sweep]).save(folder)
    try:
        _, checks = build.assemble_dataset(spec, outputs, store, "run-short", scene_length_s=20.0)
    finally:
        record.save(folder)
    # 20 s at 2 Hz: 40 keyframes, and 4 sweeps in each of the 39 gaps at 10 Hz.
    assert checks.frame_counts == [f"{outputs[1].scene_id} CAM_FRONT: 195 frames, expected 196"]


def _write_labels(store, outputs, boxes: dict[str, list[dict]]) -> dict[str, str]:
    """labels.json of each scene (its boxes, none if not given) as the autolabel stage leaves it;
    their keys by scene id."""
    labels = {}
    for output in outputs:
        labels[output.scene_id] = f"labels/{output.scene_id.replace('/', '__')}.json"
        store.write_json(labels[output.scene_id], {"annotations": boxes.get(output.scene_id, [])})
    return labels


def _preview(store, summary) -> np.ndarray:
    assert summary.preview == "datasets/merged/preview.jpg"
    image = cv2.imdecode(np.frombuffer(store.get_bytes(summary.preview), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.int16)


def test_the_preview_shows_a_keyframe_with_the_boxes_the_devkit_projects(sampled):
    spec, store, outputs = sampled
    plain = _preview(store, build.assemble_dataset(spec, outputs, store, "run-plain", scene_length_s=20.0)[0])
    # One car 12 m straight ahead of the camera at the keyframe the preview shows (the middle one).
    record = SceneRecord.load(store.local_path(outputs[0].path))
    frame = next(f for f in record.frames if f.channel == "CAM_FRONT" and f.keyframe_index == 20)
    heading = matrix_from_quaternion(frame.ego_pose.rotation)
    centre = np.asarray(frame.ego_pose.translation) + heading @ np.array([13.6, 0.0, 0.0])
    box = {"instance_id": "car-1", "keyframe_index": 20, "category": "vehicle.car", "translation": list(centre[:2]) + [0.87],
           "size": [1.95, 4.62, 1.73], "rotation": list(frame.ego_pose.rotation), "attributes": ["vehicle.parked"]}
    labels = _write_labels(store, outputs, {outputs[0].scene_id: [box]})
    boxed = _preview(store, build.assemble_dataset(spec, outputs, store, "run-boxed", scene_length_s=20.0, labels=labels)[0])
    rows, cols = np.nonzero(np.abs(boxed - plain).max(axis=2) > 60)
    assert len(rows) > 50  # the box's edges
    height, width = plain.shape[:2]
    assert width / 3 < cols.mean() < 2 * width / 3 and rows.mean() > height / 3  # ahead, on the road


def test_labels_are_scored_only_when_the_logs_carry_ground_truth(sampled, tmp_path):
    spec, store, outputs = sampled
    labels = _write_labels(store, outputs, {})
    scored = build.autolabel_quality(spec, outputs, labels, store)
    assert scored is not None and scored["scenes"] == 1 and scored["mAP"] == 0.0  # no boxes: nothing found
    objects = store.local_path(f"logs/{outputs[0].scene_id.split('/')[0]}/objects.parquet")
    assert objects.is_file()
    objects.rename(tmp_path / "objects.parquet")  # a real log: no ground truth
    try:
        assert build.autolabel_quality(spec, outputs, labels, store) is None
    finally:
        (tmp_path / "objects.parquet").rename(objects)


def test_a_republished_dataroot_loses_exactly_what_the_new_build_does_not_use():
    root = "datasets/d/nuscenes"
    keys = [f"{root}/{name}" for name in (
        "v1.0-d-part001/sample.json",  # uploaded again
        "v1.0-d-part002/sample.json",  # the old build had two parts
        "can_bus/scene-0002_meta.json",  # a scene the new build has no more
        "samples/CAM_FRONT/log-1__CAM_FRONT__1000000.jpg",  # in scene 1's span
        "sweeps/CAM_FRONT/log-1__CAM_FRONT__1020000.jpg",  # 20 ms past it (lidar-like slack)
        "samples/CAM_FRONT/log-1__CAM_FRONT__30000000.jpg",  # in a dropped scene of the same log
        "samples/CAM_FRONT/log-2__CAM_FRONT__1000000.jpg",  # a log the new build does not use
        "samples/CAM_FRONT/not-our-name.jpg",  # not a name we write: kept
    )]
    uploaded = {f"{root}/v1.0-d-part001/sample.json"}
    spans = {"log-1": [(40_000_000, 60_000_000), (0, 1_000_000)]}
    assert build.stale_dataroot_keys(keys, root, uploaded, spans) == [f"{root}/{name}" for name in (
        "v1.0-d-part002/sample.json", "can_bus/scene-0002_meta.json",
        "samples/CAM_FRONT/log-1__CAM_FRONT__30000000.jpg", "samples/CAM_FRONT/log-2__CAM_FRONT__1000000.jpg")]
