"""The Dagster code location: it loads, the launchpad config round-trips, the sensor finds logs."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from jadd_dagster.defs.automation import STANDARD_DATASETS_DIR, dataset_run_config, drive_log_sensor
from jadd_dagster.defs.config import DatasetConfig, spec_from_config
from jadd_dagster.defs.resources import StoreResource
from jadd_dagster.definitions import defs
from jadd_dagster.spec import DatasetSpec, load_spec, parse_spec


def test_the_definitions_load_with_every_asset_check_sensor_and_schedule():
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} >= {
        "drive_logs", "scene_index", "scene_catalog", "dataset_plan", "sampled_frames", "autolabels",
        "dataset_frames", "dataset_labels", "jadd_dataset", "dataset_registry"}
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"calibration_is_sane", "timestamps_are_monotonic", "frame_counts_match_rates",
            "nuscenes_invariants_hold", "devkit_loads_every_version"} <= checks
    assert repo.has_sensor_def("drive_log_sensor") and repo.has_schedule_def("standard_datasets_schedule")
    assert repo.has_sensor_def("partition_keys_sensor")


def test_every_check_sensor_and_schedule_says_what_it_does():
    repo = defs.get_repository_def()
    undescribed = [key.name for key in repo.asset_graph.asset_check_keys
                   if not repo.asset_graph.get(key).description]
    undescribed += [s.name for s in repo.sensor_defs if not s.description]
    undescribed += [s.name for s in repo.schedule_defs if not s.description]
    undescribed += [k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()
                    if not repo.asset_graph.get(k).description]
    assert not undescribed


def test_the_launchpad_shows_every_parameter_but_the_name_with_its_default():
    fields = DatasetConfig.to_fields_dict()
    assert set(fields) == set(DatasetSpec.model_fields) - {"name"}
    assert fields["keyframe_hz"].default_value == "2"  # Dagster config enums are text
    assert fields["channels"].default_value == ["CAM_FRONT"]
    assert all(f.description for f in fields.values())


def test_launchpad_defaults_give_the_default_spec():
    assert spec_from_config("city", DatasetConfig()) == parse_spec({"name": "city"})


def test_a_standard_dataset_yaml_round_trips_through_run_config():
    path = STANDARD_DATASETS_DIR / "demo.yaml"
    config = dataset_run_config(yaml.safe_load(path.read_text()))["ops"]["dataset_plan"]["config"]
    assert spec_from_config("demo", DatasetConfig(**config)) == load_spec(path)


def test_bad_launchpad_config_fails_with_the_field_named():
    try:
        spec_from_config("city", DatasetConfig(keyframe_hz="10", sweep_hz="5"))
    except dg.Failure as failure:
        assert "keyframe_hz" in str(failure.description)
    else:
        raise AssertionError("a 10 Hz keyframe rate with 5 Hz sweeps was accepted")


def test_the_log_sensor_registers_new_log_folders_once(tmp_path: Path):
    for name in ("log-a", "log-b"):
        (tmp_path / "logs" / name).mkdir(parents=True)
        (tmp_path / "logs" / name / "manifest.json").write_text("{}")
    (tmp_path / "logs" / "partial-upload").mkdir()  # no manifest yet: not a log
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"store": StoreResource(url=str(tmp_path))})
        result = drive_log_sensor(context)
        assert [r.partition_keys for r in result.dynamic_partitions_requests] == [["log-a", "log-b"]]
        assert [r.partition_key for r in result.run_requests] == ["log-a", "log-b"]
        instance.add_dynamic_partitions("logs", ["log-a", "log-b"])
        again = drive_log_sensor(dg.build_sensor_context(instance=instance, resources={"store": StoreResource(url=str(tmp_path))}))
        assert again.dynamic_partitions_requests == [] and again.run_requests == []


def test_a_sensor_tick_on_a_new_log_registers_and_ingests_it(two_short_logs: Path, tmp_path: Path, monkeypatch):
    """The tick as the daemon evaluates it (run requests resolved against the sensor's target on a
    persistent instance), then the run it requests, executed."""
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile

    monkeypatch.setenv("JADD_HOME", str(tmp_path))
    folder = sorted(two_short_logs.glob("log-*"))[0]  # one of the session's short logs, uploaded to this store
    log_id = folder.name
    shutil.copytree(folder, tmp_path / "store" / "logs" / log_id)
    resources = resources_for(load_profile())
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("drive_log_sensor")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=repo, resources=resources)
        tick = sensor.evaluate_tick(context)
        assert [r.partition_keys for r in tick.dynamic_partitions_requests] == [[log_id]]
        assert [r.partition_key for r in tick.run_requests] == [log_id]
        instance.add_dynamic_partitions("logs", [log_id])
        run = repo.get_job(sensor.job_name).execute_in_process(
            partition_key=tick.run_requests[0].partition_key, instance=instance, resources=resources)
        assert run.success
        ingested = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
        assert ingested == {"drive_logs", "scene_index"}
        again = sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, instance_ref=instance.get_ref(), repository_def=repo, resources=resources))
        assert again.run_requests == [] and again.dynamic_partitions_requests == []


def test_one_odd_log_folder_never_stops_the_sensor_registering_the_others(tmp_path: Path):
    for name in ("log-a", "m\\bad", "a|b", "log-b"):
        (tmp_path / "logs" / name).mkdir(parents=True)
        (tmp_path / "logs" / name / "manifest.json").write_text("{}")
    repo = defs.get_repository_def()
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=repo,
                                          resources={"store": StoreResource(url=str(tmp_path))})
        tick = repo.get_sensor_def("drive_log_sensor").evaluate_tick(context)
    assert [r.partition_key for r in tick.run_requests] == ["log-a", "log-b"]


def test_the_aws_profile_gives_s3_batch_and_a_registry_url_from_the_environment(monkeypatch):
    from jadd_dagster.defs.compute_resources import BatchComputeBackend
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile

    monkeypatch.setenv("JADD_S3_BUCKET", "jadd-data")
    monkeypatch.setenv("JADD_S3_PREFIX", "prod")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("JADD_REGISTRY_URL", "postgresql+psycopg2://jadd:s3cret@db:5432/jadd")
    profile = load_profile("aws")
    resources = resources_for(profile)
    assert resources["store"].url == "s3://jadd-data/prod"
    compute = resources["compute"]
    assert isinstance(compute, BatchComputeBackend)
    assert (compute.job_queue, compute.gpu_job_queue, compute.region_name) == ("jadd-cpu", "jadd-gpu", "eu-west-1")
    # The password is read at run time, never written into the resource's config.
    assert isinstance(resources["registry"].url, dg.EnvVar)
    assert "s3cret" not in repr(resources["registry"])
    assert profile.resolved_registry_url().endswith("@db:5432/jadd")
    dg.Definitions.validate_loadable(dg.Definitions(assets=list(defs.assets), resources=resources))


def test_sensor_intervals_are_the_production_ones_unless_the_environment_sets_them(monkeypatch):
    from jadd_dagster.defs.automation import SENSOR_INTERVAL_ENV, sensor_interval_s

    assert SENSOR_INTERVAL_ENV not in os.environ, "the test environment must not shorten the ticks"
    intervals = {s.name: s.minimum_interval_seconds for s in defs.get_repository_def().sensor_defs}
    assert (intervals["drive_log_sensor"], intervals["partition_keys_sensor"], intervals["automation_condition_sensor"]) \
        == (60, 30, 30)
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, "5")
    assert sensor_interval_s(60) == 5
    for bad in ("0", "-3", "2.5", "soon"):
        monkeypatch.setenv(SENSOR_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=SENSOR_INTERVAL_ENV):
            sensor_interval_s(60)
