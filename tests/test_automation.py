"""The standard-datasets schedule as the daemon runs it: a tick evaluated against a real instance,
then the runs it requests, executed; the next night's rebuild computes nothing again."""

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from jadd_dagster.defs import automation
from jadd_dagster.definitions import defs

SPEC = {"name": "nightly", "description": "a standard dataset of the test", "channels": ["CAM_FRONT"],
        "keyframe_hz": 2, "sweep_hz": 10, "image_width": 96, "image_height": 54}
NIGHT = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def drive_log(tmp_path_factory) -> Path:
    """One small log (two 20 s scenes), written once for the module; each test copies it."""
    from jadd_dagster.sim import make_logs

    (path,) = make_logs(tmp_path_factory.mktemp("automation-log"), n_logs=1, minutes=0.7, seed=5,
                        channels=("CAM_FRONT",), image_size=(96, 54))
    return path


@pytest.fixture
def world(tmp_path: Path, monkeypatch, drive_log: Path):
    """A store with one small log, a folder of standard specs, and the profile's resources."""
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile

    monkeypatch.setenv("JADD_HOME", str(tmp_path))
    specs = tmp_path / "datasets"
    specs.mkdir()
    monkeypatch.setattr(automation, "STANDARD_DATASETS_DIR", specs)
    shutil.copytree(drive_log, tmp_path / "store" / "logs" / drive_log.name)
    return specs, resources_for(load_profile())


def tick(schedule, instance, resources, when):
    repo = defs.get_repository_def()
    # As a context manager: the context's own instance is closed, and so it does not stay Dagster's
    # current state storage for the tests that follow.
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=repo,
                                   resources=resources, instance_ref=instance.get_ref()) as context:
        return schedule.evaluate_tick(context)


def run(request, instance, resources):
    job = defs.get_repository_def().get_job(automation.standard_datasets_schedule.job_name)
    result = job.execute_in_process(run_config=request.run_config, partition_key=request.partition_key,
                                    tags=request.tags, instance=instance, resources=resources)
    return {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events() if e.materialization.partition == request.partition_key}


def ingest(instance, resources):
    from jadd_dagster.logs.stored import list_log_ids

    (log_id,) = list_log_ids(resources["store"].store())
    instance.add_dynamic_partitions("logs", [log_id])
    assets = list(defs.assets)
    assert dg.materialize(assets, selection=["drive_logs", "scene_index"], partition_key=log_id, instance=instance,
                          resources=resources).success
    assert dg.materialize(assets, selection=["scene_catalog"], instance=instance, resources=resources).success


@pytest.mark.e2e
def test_a_standard_spec_is_built_by_its_schedule_and_rebuilt_incrementally(world):
    specs, resources = world
    (specs / "nightly.yaml").write_text(yaml.safe_dump(SPEC))
    (specs / "broken.yaml").write_text(yaml.safe_dump({"name": "broken", "keyframe_hz": 7}))
    schedule = defs.get_repository_def().get_schedule_def("standard_datasets_schedule")
    with dg.instance_for_test() as instance:
        before = tick(schedule, instance, resources, NIGHT)
        assert not before.run_requests and "no scene catalog yet" in before.skip_message
        ingest(instance, resources)

        first = tick(schedule, instance, resources, NIGHT)
        assert [r.partition_key for r in first.run_requests] == ["nightly"]  # the broken spec is left out
        assert "nightly" in instance.get_dynamic_partitions("datasets")
        built = run(first.run_requests[0], instance, resources)
        assert built["dataset_registry"]["status"].value == "complete"
        assert built["dataset_frames"]["computed_scenes"].value == built["jadd_dataset"]["scenes"].value >= 2

        second = tick(schedule, instance, resources, NIGHT + timedelta(days=1))
        assert second.run_requests[0].run_key != first.run_requests[0].run_key
        rebuilt = run(second.run_requests[0], instance, resources)
        assert rebuilt["dataset_frames"]["computed_scenes"].value == 0
        assert rebuilt["dataset_frames"]["cached_scenes"].value == built["dataset_frames"]["computed_scenes"].value
        assert rebuilt["jadd_dataset"]["rewritten_parts"].value == 0
        assert rebuilt["jadd_dataset"]["scenes"].value == built["jadd_dataset"]["scenes"].value


def test_the_nightly_schedule_runs_by_default_and_a_test_instance_can_stop_it(monkeypatch):
    # As production loads it: the default suite runs without JADD_NIGHTLY_SCHEDULE.
    assert automation.NIGHTLY_SCHEDULE_ENV not in os.environ
    schedule = defs.get_repository_def().get_schedule_def("standard_datasets_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    for value, status in [("", dg.DefaultScheduleStatus.RUNNING), ("running", dg.DefaultScheduleStatus.RUNNING),
                          ("stopped", dg.DefaultScheduleStatus.STOPPED)]:
        monkeypatch.setenv(automation.NIGHTLY_SCHEDULE_ENV, value)
        assert automation.nightly_schedule_status() == status
    monkeypatch.setenv(automation.NIGHTLY_SCHEDULE_ENV, "off")
    with pytest.raises(ValueError, match="JADD_NIGHTLY_SCHEDULE='off': must be 'running' or 'stopped'"):
        automation.nightly_schedule_status()


def test_the_schedule_skips_when_no_spec_is_valid(world):
    specs, resources = world
    (specs / "broken.yaml").write_text("name: [unclosed")
    schedule = defs.get_repository_def().get_schedule_def("standard_datasets_schedule")
    with dg.instance_for_test() as instance:
        result = tick(schedule, instance, resources, NIGHT)
    assert not result.run_requests and "no valid dataset spec" in result.skip_message


@pytest.mark.e2e
def test_backfilling_autolabels_alone_samples_the_scenes_it_needs_first(world):
    """A UI backfill of the per-scene autolabels with nothing sampled yet: no other selection is needed."""
    _, resources = world
    with dg.instance_for_test() as instance:
        ingest(instance, resources)
        (log_id,) = instance.get_dynamic_partitions("logs")
        key = f"{log_id}|0000"
        config = {"channels": ["CAM_FRONT"], "keyframe_hz": "2", "sweep_hz": "2", "image_width": 96, "image_height": 54}
        result = dg.materialize(list(defs.assets), selection=["autolabels"], partition_key=key, instance=instance,
                                resources=resources, run_config={"ops": {"autolabels": {"config": config}}})
        [event] = [e for e in result.asset_materializations_for_node("autolabels") if e.asset_key.path == ["autolabels"]]
        assert (event.metadata["sampled_first"].value, event.metadata["computed"].value) == (1, 1)
        assert event.metadata["boxes"].value > 0
        assert instance.get_materialized_partitions(dg.AssetKey("sampled_frames")) == {key}
