"""A dataset build with auto-labelling: boxes in the dataset, labels cached per model version."""

import json
import re

import cv2
import dagster as dg
import pytest
import yaml

from jadd_dagster.cli import main as jadd

pytestmark = pytest.mark.e2e


def label_metadata(workdir):
    instance = dg.DagsterInstance.from_config(str(workdir / "dagster_home"))
    records = instance.fetch_materializations(dg.AssetKey("dataset_labels"), limit=10, ascending=True).records
    return [{k: r.asset_materialization.metadata[k].value for k in ("labels_cached", "labels_computed")} for r in records]


def test_autolabelled_dataset_has_boxes_and_a_rebuild_reuses_the_labels(lidar_log, tmp_path, monkeypatch):
    from nuscenes.nuscenes import NuScenes

    for name in ("JADD_HOME", "DAGSTER_HOME", "JADD_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(
        {"name": "labelled", "channels": ["CAM_FRONT", "LIDAR_TOP"], "sweep_hz": 2, "autolabel": True}))
    args = ["build", "--spec", str(spec), "--logs", str(lidar_log.parent), "--workdir", str(tmp_path / "work")]

    assert jadd(args) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    nusc = NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False)
    assert len(nusc.scene) == 2
    assert len(nusc.sample_annotation) > 50 and len(nusc.instance) > 5
    categories = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    assert "vehicle.car" in categories
    # Boxes come back through the devkit and project into the camera.
    sample = nusc.sample[10]
    _, boxes, _ = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    assert boxes and all(len(b.corners()[0]) == 8 for b in boxes)
    # The lidar sweep nearest each keyframe is in the dataset, as nuScenes has it.
    lidar_path, _, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    assert lidar_path.endswith(".pcd.bin") and len(nusc.sample_data) == 2 * 40 * 2
    instance = dg.DagsterInstance.from_config(str(tmp_path / "work" / "dagster_home"))
    assert len(instance.get_materialized_partitions(dg.AssetKey("autolabels"))) == 2
    assert summary["check_problems"] == {"frame_counts": [], "nuscenes_invariants": [], "devkit": []}
    assert summary["autolabel"]["computed"] == 2 and summary["autolabel"]["cached"] == 0
    assert summary["autolabel"]["quality"]["scenes"] == 1  # the val scene of two (val_fraction 0.2)

    # The labels were scored against the generator's ground truth by the devkit.
    first = instance.fetch_materializations(dg.AssetKey("dataset_labels"), limit=1).records[0].asset_materialization
    assert 0.0 < first.metadata["autolabel_mAP_classes_present"].value <= 1.0
    assert "| car |" in first.metadata["autolabel_AP_per_class"].value
    assert 0.0 < first.metadata["autolabel_mATE"].value < 2.0  # metres, over the matched boxes
    assert first.metadata["label_s_per_scene"].value > 0  # the measured cost of labelling a scene
    merged = instance.fetch_materializations(dg.AssetKey("jadd_dataset"), limit=1).records[0].asset_materialization
    # Under 1,000 characters, so the UI shows it in place; the webserver serves the file at that URL.
    assert re.fullmatch(r"!\[a keyframe with its boxes\]\(/logs/jadd-preview/[\w-]+/[\w-]+/jpg\)", merged.metadata["preview"].value)
    preview = cv2.imread(merged.metadata["preview_file"].value)
    assert preview.shape[1] == 960  # wide enough to see the boxes

    nusc.render_sample_data(sample["data"]["CAM_FRONT"], out_path=str(tmp_path / "boxes.png"))
    assert (tmp_path / "boxes.png").stat().st_size > 1000

    assert jadd(args) == 0  # the same spec again: frames and labels come from the cache
    assert label_metadata(tmp_path / "work") == [
        {"labels_cached": 0, "labels_computed": 2}, {"labels_cached": 2, "labels_computed": 0}]
    rebuilt = instance.fetch_materializations(dg.AssetKey("dataset_labels"), limit=1).records[0].asset_materialization
    assert "label_s_per_scene" not in rebuilt.metadata  # nothing was labelled
    # Nothing changed: the score is the stored one and no part was merged again.
    assert rebuilt.metadata["autolabel_mAP"].value == first.metadata["autolabel_mAP"].value
    remerged = instance.fetch_materializations(dg.AssetKey("jadd_dataset"), limit=1).records[0].asset_materialization
    assert remerged.metadata["rewritten_parts"].value == 0 and merged.metadata["rewritten_parts"].value == 1

    # A UI backfill of the per-scene asset with the same model and inputs finds the labels cached.
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.definitions import defs
    from jadd_dagster.profile import load_profile

    config = {"channels": ["CAM_FRONT", "LIDAR_TOP"], "sweep_hz": "2", "autolabel_model": "baseline"}
    result = dg.materialize(
        list(defs.assets), selection=["autolabels"], instance=instance, resources=resources_for(load_profile()),
        partition_key="log-3-0001|0001", run_config={"ops": {"autolabels": {"config": config}}},
    )
    [event] = result.asset_materializations_for_node("autolabels")
    assert (event.metadata["cached"].value, event.metadata["computed"].value) == (1, 0)

    # A new labeller version relabels lazily: the next build labels every scene again, while its
    # sampled frames stay cached.
    from jadd_dagster.autolabel import models

    monkeypatch.setattr(models, "LABELLER_VERSION", "next")
    assert jadd(args) == 0
    assert label_metadata(tmp_path / "work")[-1] == {"labels_cached": 0, "labels_computed": 2}
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert (summary["cached_scenes"], summary["computed_scenes"]) == (2, 0)
