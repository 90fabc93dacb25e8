"""The build's domain steps on their own: frames placed once, stable parts, part merges that write
tables only, checks per part, the preview and the label score."""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import pytest

from jadd_dagster import build
from jadd_dagster.camera import matrix_from_quaternion
from jadd_dagster.compute.chunks import ChunkManifest
from jadd_dagster.compute.worker import result_key, run_chunk
from jadd_dagster.layout import PART_RECORD, STAGE_SAMPLED, part_key, preview_key, sampled_root_key
from jadd_dagster.logs.reader import read_log
from jadd_dagster.nuscenes.splits import VAL
from jadd_dagster.part_merge import merge_stored_part, part_version
from jadd_dagster.planning import assign_parts, forced_splits, sampling_profile
from jadd_dagster.records import DatasetPlan, PartPlan
from jadd_dagster.registry import SceneOutput
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.scenes import cut_scenes
from jadd_dagster.sim import make_logs
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import LocalStore


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """Both scenes of a 45 s log (in the store, as ingest leaves it) sampled by the real worker."""
    root = tmp_path_factory.mktemp("build")
    (path,) = make_logs(root / "store" / "logs", 1, 0.75, seed=8, channels=("CAM_FRONT",), image_size=(96, 54))
    log = read_log(path)
    spec = DatasetSpec(name="merged", channels=["CAM_FRONT"], keyframe_hz=2, sweep_hz=10)
    profile = sampling_profile(spec)
    store = LocalStore(root / "store")
    windows = cut_scenes(log.manifest)[0]
    import pandas as pd

    rows = pd.DataFrame([{"scene_id": w.scene_id, "log_id": w.log_id, "scene_index": w.index,
                          "start_time_us": w.start_time_us, "end_time_us": w.end_time_us} for w in windows])
    tasks = build.sampling_tasks(rows, profile.key())
    manifest = ChunkManifest("c0", STAGE_SAMPLED, profile.to_json(), store.url, "runs/r/results", tasks)
    assert run_chunk(manifest, store) == {"ok": 2, "failed": 0}
    outputs = [SceneOutput(t.scene_id, STAGE_SAMPLED, profile.key(), t.output_key,
                           store.read_json(result_key("runs/r/results", t.scene_id))["frames"], 1.0) for t in tasks]
    return spec, store, outputs


def merge_settings(spec, store, outputs, part=1, labels=None) -> tuple[dict, list]:
    plan_like = {"scenes": [o.scene_id for o in outputs], "labels": labels}
    version = part_version(spec.name, part, plan_like)
    settings = {"name": spec.name, "part": part, "version": version, "profile_key": outputs[0].profile,
                "val_fraction": 0.5, "forced_splits": {}, "include_can_bus": True, "scene_length_s": 20.0,
                "labelled": labels is not None, "preview": True}
    from jadd_dagster.compute.chunks import SceneTask
    from jadd_dagster.scene_record import parse_scene_id

    tasks = [SceneTask(o.scene_id, *parse_scene_id(o.scene_id), 0, 0, input_key=o.path,
                       output_key=(labels or {}).get(o.scene_id, "")) for o in outputs]
    return settings, tasks


def test_frames_are_written_once_under_their_nuscenes_names_in_the_profiles_dataroot(sampled):
    spec, store, outputs = sampled
    root = store.local_path(sampled_root_key(outputs[0].profile))
    record = SceneRecord.load(store.local_path(outputs[0].path))
    assert {f.path.split("/")[0] for f in record.frames} == {"samples", "sweeps"}
    assert all((root / f.path).is_file() for f in record.frames)
    # The scene folder keeps only its record, CAN and pose: no frame lies there.
    assert sorted(p.name for p in store.local_path(outputs[0].path).iterdir()) == ["can.parquet", "pose.parquet", "scene.json"]


def test_a_part_merge_writes_tables_only_and_passes_every_check(sampled, tmp_path):
    spec, store, outputs = sampled
    settings, tasks = merge_settings(spec, store, outputs)
    root = store.local_path(sampled_root_key(outputs[0].profile))
    frames = sorted(root.glob("s*/CAM_FRONT/*.jpg"))
    before = {p: (p.stat().st_ino, p.stat().st_nlink) for p in frames}
    record = merge_stored_part(store, settings, tasks, tmp_path)
    assert record.scenes == 2 and record.failed == {}
    assert record.checks == {"frame_counts": [], "nuscenes_invariants": [], "devkit": []}
    # No frame was copied, linked or rewritten: same inodes, same link counts.
    assert {p: (p.stat().st_ino, p.stat().st_nlink) for p in frames} == before
    folder = store.local_path(part_key(outputs[0].profile, settings["version"]))
    assert (folder / PART_RECORD).is_file() and (folder / "can_bus").is_dir() and (folder / "maps").is_dir()
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=settings["version"], dataroot=str(root), verbose=False)
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    assert os.path.samefile(nusc.get_sample_data_path(sd["token"]), root / sd["filename"])
    assert sd["filename"].startswith("samples/CAM_FRONT/")


def test_a_scene_missing_a_frame_fails_the_frame_count_check(sampled, tmp_path):
    spec, store, outputs = sampled
    folder = store.local_path(outputs[1].path)
    record = SceneRecord.load(folder)
    sweep = next(f for f in record.frames if not f.is_key_frame)
    dataclasses.replace(record, frames=[f for f in record.frames if f is not sweep]).save(folder)
    try:
        settings, tasks = merge_settings(spec, store, outputs, part=2)
        checks = merge_stored_part(store, settings, tasks, tmp_path).checks
    finally:
        record.save(folder)
    # 20 s at 2 Hz: 40 keyframes, and 4 sweeps in each of the 39 gaps at 10 Hz.
    assert checks["frame_counts"] == [f"{outputs[1].scene_id} CAM_FRONT: 195 frames, expected 196"]


def test_parts_keep_their_scenes_when_scenes_are_added_or_dropped():
    first = assign_parts([f"s{i:02d}" for i in range(7)], 3)
    assert [p.scene_ids for p in first] == [["s00", "s01", "s02"], ["s03", "s04", "s05"], ["s06"]]
    grown = assign_parts([f"s{i:02d}" for i in range(10)] + ["a-new"], 3, first)
    # Old scenes stay where they were, new ones (sorted) fill the last part and then new parts.
    assert [(p.part, p.scene_ids) for p in grown] == [
        (1, ["s00", "s01", "s02"]), (2, ["s03", "s04", "s05"]), (3, ["s06", "a-new", "s07"]), (4, ["s08", "s09"])]
    shrunk = assign_parts(["s00", "s02", "s06", "s07", "s09"], 3, grown)
    assert [(p.part, p.scene_ids) for p in shrunk] == [(1, ["s00", "s02"]), (3, ["s06", "s07"]), (4, ["s09"])]
    assert assign_parts(["x"], 3, [PartPlan(1, ["x", "y", "z", "w"])]) == [PartPlan(1, ["x"])]


def test_a_part_keeps_its_version_until_its_content_changes():
    content = {"scenes": ["a/0000", "a/0001"], "labels": None}
    assert part_version("d", 1, content) == part_version("d", 1, dict(content))
    assert part_version("d", 1, content) != part_version("d", 1, {**content, "scenes": ["a/0000"]})
    assert part_version("d", 1, content) != part_version("d", 1, {**content, "labels": "m@p"})
    assert part_version("d", 3, content).startswith("v1.0-d-part0003-")


def test_a_forced_split_stored_under_an_old_name_is_written_under_the_new_one():
    from jadd_dagster.nuscenes.splits import TRAIN
    from jadd_dagster.part_merge import split_of

    assert split_of(0.0, {"a/0000": "val", "a/0001": VAL})("a/0000") == VAL
    assert split_of(1.0, {"a/0000": "train"})("a/0000") == TRAIN
    assert {split_of(0.5, {})(f"a/{i:04d}") for i in range(50)} == {TRAIN, VAL}


def test_only_the_scenes_that_keep_both_splits_non_empty_are_forced():
    assert forced_splits([f"s{i}" for i in range(2000)], 0.2) == {}
    forced = forced_splits(["only-one", "and-two"], 0.0001)  # hashing puts both in train
    assert list(forced.values()) == [VAL]


def _write_labels(store, outputs, boxes: dict[str, list[dict]]) -> dict[str, str]:
    """labels.json of each scene (its boxes, none if not given) as the autolabel stage leaves it;
    their keys by scene id."""
    labels = {}
    for output in outputs:
        labels[output.scene_id] = f"labels/{output.scene_id.replace('/', '__')}.json"
        store.write_json(labels[output.scene_id], {"annotations": boxes.get(output.scene_id, [])})
    return labels


def _preview(store, spec, outputs, tmp_path, labels=None) -> np.ndarray:
    settings, tasks = merge_settings(spec, store, outputs, part=5, labels=labels)
    store.delete_prefix(preview_key(spec.name))
    merge_stored_part(store, settings, tasks, tmp_path)
    image = cv2.imdecode(np.frombuffer(store.get_bytes(preview_key(spec.name)), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image.astype(np.int16)


def test_the_preview_shows_a_keyframe_with_the_boxes_the_devkit_projects(sampled, tmp_path):
    spec, store, outputs = sampled
    plain = _preview(store, spec, outputs, tmp_path)
    # One car 12 m straight ahead of the camera at the keyframe the preview shows (the middle one).
    record = SceneRecord.load(store.local_path(outputs[0].path))
    frame = next(f for f in record.frames if f.channel == "CAM_FRONT" and f.keyframe_index == 20)
    heading = matrix_from_quaternion(frame.ego_pose.rotation)
    centre = np.asarray(frame.ego_pose.translation) + heading @ np.array([13.6, 0.0, 0.0])
    box = {"instance_id": "car-1", "keyframe_index": 20, "category": "vehicle.car", "translation": list(centre[:2]) + [0.87],
           "size": [1.95, 4.62, 1.73], "rotation": list(frame.ego_pose.rotation), "attributes": ["vehicle.parked"]}
    labels = _write_labels(store, outputs, {outputs[0].scene_id: [box]})
    boxed = _preview(store, spec, outputs, tmp_path, labels)
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


def test_publishing_keeps_the_previous_index_parts_and_deletes_older_ones(tmp_path):
    from jadd_dagster.layout import index_key
    from jadd_dagster.records import DatasetIndex, DatasetPlan, IndexPart, PartRecord, write_record

    store = LocalStore(tmp_path)
    plan = DatasetPlan("d", {}, "h", "0123456789ab", [PartPlan(1, ["a/0000"])], 10, 0.0, {})
    root = tmp_path / sampled_root_key(plan.profile_key)
    for version in ("v1.0-d-part0001-aaaaaaaa", "v1.0-d-part0001-bbbbbbbb", "v1.0-d-part0001-cccccccc",
                    "v1.0-dx-part0001-dddddddd"):  # the last is another dataset's
        (root / version).mkdir(parents=True)
    previous = DatasetIndex("d", "h", "", "", [IndexPart(1, "v1.0-d-part0001-bbbbbbbb", 1, 1, 1, {})], 1, 1, 1, {},
                            "", "r0", "")
    write_record(store, index_key("d"), previous)
    part = PartRecord(1, "v1.0-d-part0001-cccccccc", 1, 40, 40, 40, 0, {"a/0000": "scene-0001"}, {"a/0000": VAL}, {},
                      {"frame_counts": [], "nuscenes_invariants": [], "devkit": []}, 1.0)
    index = build.publish_index(store, plan, [part], [], "r1", 1, 1.0)
    assert index.versions == ["v1.0-d-part0001-cccccccc"] and index.splits == {VAL: 1}
    # Readers of the previous index keep its parts until the next build; older ones go.
    assert sorted(p.name for p in root.iterdir()) == [
        "v1.0-d-part0001-bbbbbbbb", "v1.0-d-part0001-cccccccc", "v1.0-dx-part0001-dddddddd"]


def test_a_part_whose_every_scene_fails_reports_each_and_is_left_out_of_the_index(sampled, tmp_path):
    spec, store, outputs = sampled
    settings, tasks = merge_settings(spec, store, outputs, part=7)
    root = store.local_path(sampled_root_key(outputs[0].profile))
    hidden = tmp_path / "hidden"
    (root / "samples").rename(hidden)  # every keyframe is missing
    try:
        record = merge_stored_part(store, settings, tasks, tmp_path)
    finally:
        hidden.rename(root / "samples")
    assert record.scenes == 0 and sorted(record.failed) == sorted(o.scene_id for o in outputs)
    assert all("is missing" in reason for reason in record.failed.values())
    plan = DatasetPlan(spec.name, {}, "h", outputs[0].profile, [PartPlan(7, [o.scene_id for o in outputs])], 10, 0.0, {})
    index = build.publish_index(store, plan, [record], [], "r", 1, 1.0)
    assert index.parts == [] and sorted(index.failed) == sorted(record.failed)
