"""End to end: `jadd build` materializes the whole Dagster graph and the devkit opens the output."""

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from jadd_dagster.cli import main as jadd
from jadd_dagster.logs.format import MANIFEST
from jadd_dagster.sim import make_logs

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "e2e",
    "channels": ["CAM_FRONT", "CAM_FRONT_LEFT"],
    "keyframe_hz": 2,
    "sweep_hz": 10,
    "image_width": 128,
    "image_height": 72,
    "val_fraction": 0.5,
    "include_scenes": ["log-nowhere/0000"],  # not in the catalog: named, never silently dropped
}
LOGS = 2  # good logs of two 20 s scenes each; the last one's manifest also claims a third scene
GOOD_SCENES = 2 * LOGS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Good logs (2 scenes each), the last one's manifest claiming a third scene the video lacks, and one broken log."""
    root = tmp_path_factory.mktemp("e2e")
    logs = root / "logs"
    good = make_logs(logs, n_logs=LOGS, minutes=0.75, seed=7, channels=("CAM_FRONT", "CAM_FRONT_LEFT"), image_size=(160, 90))
    overlong = good[-1] / MANIFEST
    manifest = json.loads(overlong.read_text())
    manifest["duration_us"] += 20_000_000  # a third scene past the end of the recording
    overlong.write_text(json.dumps(manifest))
    broken = logs / "log-broken"
    shutil.copytree(good[0], broken)
    (broken / "can.parquet").unlink()
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    workdir = root / "work"
    env = {k: os.environ.get(k) for k in ("JADD_HOME", "DAGSTER_HOME")}
    code = jadd(["build", "--spec", str(spec), "--logs", str(logs), "--workdir", str(workdir)])
    summary = json.loads((workdir / "summary.json").read_text())
    yield {"code": code, "summary": summary, "workdir": workdir, "spec": spec, "logs": logs, "bad_scene": f"{good[-1].name}/0002",
           "good_scenes": [(g.name, i) for g in good for i in (0, 1)]}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_failed_scenes_and_logs_are_listed_apart_and_the_exit_status_is_non_zero(built):
    summary = built["summary"]
    assert built["code"] == 1
    assert list(summary["failed_scenes"]) == [built["bad_scene"]]
    assert "CAM_FRONT" in summary["failed_scenes"][built["bad_scene"]]
    assert list(summary["failed_logs"]) == ["log-broken"]
    assert "can.parquet" in summary["failed_logs"]["log-broken"]
    assert summary["missing_includes"] == ["log-nowhere/0000"]
    # The scene past the end of the recording has no CAN or pose either: it is named as a gap.
    assert summary["scenes_with_gaps"] == [built["bad_scene"]]


def test_the_good_scenes_become_a_dataset_the_devkit_opens(built):
    from nuscenes.nuscenes import NuScenes

    summary = built["summary"]
    assert summary["scenes"] == GOOD_SCENES and len(summary["versions"]) == 1
    assert summary["versions"][0].startswith("v1.0-e2e-part0001-")
    nusc = NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False)
    assert len(nusc.scene) == GOOD_SCENES
    # 20 s at 2 Hz keyframes; every sample has both cameras.
    assert len(nusc.sample) == summary["samples"] == GOOD_SCENES * 40
    assert all(set(s["data"]) == {"CAM_FRONT", "CAM_FRONT_LEFT"} for s in nusc.sample)
    path, _, intrinsic = nusc.get_sample_data(nusc.sample[0]["data"]["CAM_FRONT"])
    assert Path(path).exists() and intrinsic.shape == (3, 3)
    cam = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    assert (cam["width"], cam["height"]) == (128, 72)


def test_every_scene_partition_has_a_materialization(built):
    instance = dg.DagsterInstance.from_config(str(built["workdir"] / "dagster_home"))
    keys = instance.get_materialized_partitions(dg.AssetKey("sampled_frames"))
    assert len(keys) == GOOD_SCENES
    assert instance.get_latest_materialization_event(dg.AssetKey("dataset_registry")) is not None


def test_the_registry_lists_the_dataset(built, capsys):
    assert jadd(["datasets", "list", "--workdir", str(built["workdir"]), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["status"], e["scenes"], e["failed_scenes"]) for e in entries] == [("e2e", "partial", GOOD_SCENES, 1)]


def test_a_rebuild_takes_every_good_scene_from_the_cache(built):
    code = jadd(["build", "--spec", str(built["spec"]), "--logs", str(built["logs"]), "--workdir", str(built["workdir"])])
    summary = json.loads((built["workdir"] / "summary.json").read_text())
    assert code == 1
    assert summary["cached_scenes"] == GOOD_SCENES and summary["computed_scenes"] == 0
    assert list(summary["failed_scenes"]) == [built["bad_scene"]]
    # Nothing changed: no part is merged again, and the published parts are the first build's.
    assert summary["rewritten_parts"] == 0 and summary["versions"] == built["summary"]["versions"]


def test_the_dataset_index_lists_its_parts_and_every_scene(built, capsys):
    from jadd_dagster.datasets import iter_parts, part_can_bus

    capsys.readouterr()
    assert jadd(["datasets", "show", "e2e", "--workdir", str(built["workdir"]), "--scenes", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    summary = built["summary"]
    assert [p["version"] for p in shown["parts"]] == summary["versions"]
    assert shown["dataroot"] == summary["dataroot"] and shown["scenes"] == GOOD_SCENES
    assert sorted(row["scene_id"] for row in shown["scene_map"]) == sorted(
        f"{log}/{i:04d}" for log, i in built["good_scenes"])
    index = built["workdir"] / "store" / "datasets" / "e2e" / "index.json"
    parts = list(iter_parts(index))
    assert [part.version for part, _ in parts] == summary["versions"]
    part, nusc = parts[0]
    assert len(nusc.scene) == part.scenes == GOOD_SCENES
    row = shown["scene_map"][0]
    scene = next(s for s in nusc.scene if s["name"] == row["scene_name"])
    assert scene["description"].startswith(row["scene_id"])
    assert part_can_bus(nusc.dataroot, part.version).get_messages(scene["name"], "pose")
    assert jadd(["datasets", "show", "nope", "--workdir", str(built["workdir"])]) == 1


def test_a_bad_spec_is_refused_before_any_work(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "sweep_hz": 7}))
    code = jadd(["build", "--spec", str(spec), "--logs", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert code == 2
    assert "sweep_hz" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_an_auto_label_model_the_profile_does_not_offer_is_refused_before_any_work(tmp_path, capsys):
    spec = tmp_path / "nope.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "autolabel": True, "autolabel_model": "nope"}))
    code = jadd(["build", "--spec", str(spec), "--logs", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert code == 2
    assert "autolabel_model: unknown model 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_the_devkit_renders_and_reads_can_bus_of_the_built_dataset(built, tmp_path, monkeypatch, capsys):
    import cv2
    from nuscenes.can_bus.can_bus_api import NuScenesCanBus
    from nuscenes.nuscenes import NuScenes

    summary = built["summary"]
    nusc = NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False)
    nusc.list_scenes()
    assert capsys.readouterr().out.count("scene-") == GOOD_SCENES
    cam = nusc.sample[3]["data"]["CAM_FRONT_LEFT"]
    nusc.render_sample_data(cam, out_path=str(tmp_path / "cam.png"))
    assert (tmp_path / "cam.png").stat().st_size > 1000
    # render_scene_channel opens a window; the headless OpenCV build has none, so stub the GUI calls.
    for name in ("namedWindow", "moveWindow", "imshow", "destroyAllWindows"):
        monkeypatch.setattr(cv2, name, lambda *a, **k: None)
    monkeypatch.setattr(cv2, "waitKey", lambda *a, **k: -1)
    nusc.render_scene_channel(nusc.scene[0]["token"], "CAM_FRONT", out_path=str(tmp_path / "scene.avi"))
    assert (tmp_path / "scene.avi").stat().st_size > 1000
    can = NuScenesCanBus(dataroot=summary["parts"][0]["can_bus_dataroot"])
    for scene in nusc.scene:
        monitor = can.get_messages(scene["name"], "vehicle_monitor")
        pose = can.get_messages(scene["name"], "pose")
        assert len(monitor) >= 39 and len(pose) >= 999  # 2 Hz and 50 Hz over 20 s
        assert all(m["vehicle_speed"] >= 0 for m in monitor)


def test_sampled_frames_can_be_materialized_directly_for_chosen_scenes(built):
    """What a UI backfill of the per-scene asset does: the chosen scene partitions, one run."""
    import dagster as dg

    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.definitions import defs
    from jadd_dagster.profile import load_profile

    log_id = built["bad_scene"].split("/")[0]  # its scene 1 is good
    instance = dg.DagsterInstance.from_config(str(built["workdir"] / "dagster_home"))
    config = {"ops": {"sampled_frames": {"config": {"channels": ["CAM_FRONT"], "sweep_hz": "2"}}}}
    result = dg.materialize(
        list(defs.assets), selection=["sampled_frames"], instance=instance, resources=resources_for(load_profile()),
        partition_key=f"{log_id}|0001", run_config=config,
    )
    assert result.success
    [event] = result.asset_materializations_for_node("sampled_frames")
    assert event.partition == f"{log_id}|0001"
    assert event.metadata["computed"].value == 1 and event.metadata["cached"].value == 0


def test_the_split_plan_is_in_the_run_metadata(built):
    instance = dg.DagsterInstance.from_config(str(built["workdir"] / "dagster_home"))
    # The first build computed every scene: the good ones and the one that fails later, one chunk a log, 20 s each.
    events = instance.fetch_materializations(dg.AssetKey("dataset_frames"), limit=10, ascending=True).records
    metadata = events[0].asset_materialization.metadata
    assert metadata["scenes_computed_in_chunks"].value == GOOD_SCENES + 1 and metadata["chunks"].value == LOGS
    # The scenes × 20 s × the plan's CPU s a scene second (its frames of 2 channels at 10 Hz, by
    # cost.py's model at these logs' 160x90 cameras; resources/local.yaml's 10 Hz figure is for 1600x900).
    work = built["summary"]["estimate"]["work"]
    per_frame = work["sampling_s"] / work["frames"]
    assert per_frame < 0.035 / 10 and work["frames"] / work["sampled_scene_s"] == pytest.approx(10 * 2, rel=0.03)
    assert metadata["expected_cpu_s_per_frame"].value == pytest.approx(per_frame, abs=1e-5)
    assert metadata["expected_cpu_s"].value == pytest.approx((GOOD_SCENES + 1) * 20 * work["sampling_s"] / work["sampled_scene_s"], abs=0.05)
    assert "| sampled-00000 |" in metadata["split_plan"].value
