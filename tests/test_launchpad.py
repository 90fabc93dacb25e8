"""What the launchpad shows and refuses for a dataset build, checked with the functions the
webserver's GraphQL resolvers call on the job's snapshot (rootDefaultYaml, isPipelineConfigValid),
and what the first step refuses that Dagster's config schema cannot say."""

import dagster as dg
import pytest
import yaml
from dagster._config.validate import validate_config_from_snap
from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

from jadd_dagster.defs.automation import dataset_run_config, partition_keys_sensor, standard_specs
from jadd_dagster.defs.dataset_assets import dataset_plan
from jadd_dagster.definitions import defs
from jadd_dagster.spec import DatasetSpec, parse_spec


@pytest.fixture(scope="module")
def job():
    return defs.get_repository_def().get_implicit_job_def_for_assets([dataset_plan.key])


def launchpad_errors(job, config: dict) -> list[str]:
    """The errors isPipelineConfigValid gives for dataset_plan's config (none: the launchpad says "No errors")."""
    snap = job.get_job_snapshot()
    root = snap.mode_def_snaps[0].root_config_key
    result = validate_config_from_snap(snap.config_schema_snapshot, root, {"ops": {"dataset_plan": {"config": config}}})
    return [error.message for error in result.errors or []]


def test_the_launchpad_pre_fills_every_parameter_with_its_default(job):
    snap = job.get_job_snapshot()
    schema = snap.config_schema_snapshot
    default_yaml = default_values_yaml_from_type_snap(schema, schema.get_config_snap(snap.mode_def_snaps[0].root_config_key))
    shown = yaml.safe_load(default_yaml)["ops"]["dataset_plan"]["config"]
    assert set(shown) == set(DatasetSpec.model_fields) - {"name"}
    assert {k: shown[k] for k in ("max_scenes", "budget_usd", "image_width", "image_height")} == {
        "max_scenes": 0, "budget_usd": 0, "image_width": 0, "image_height": 0}
    assert (shown["keyframe_hz"], shown["sweep_hz"], shown["channels"]) == ("2", "10", ["CAM_FRONT"])
    assert parse_spec({**shown, "name": "city"}) == parse_spec({"name": "city"})  # the defaults are the spec's


def test_every_launchpad_field_is_described(job):
    snap = job.get_job_snapshot()
    schema = snap.config_schema_snapshot
    config = schema.get_config_snap(snap.mode_def_snaps[0].root_config_key)
    for name in ("ops", "dataset_plan", "config"):  # the snapshot the webserver shows
        config = schema.get_config_snap(config.get_field(name).type_key)
    fields = {name: config.get_field(name) for name in config.field_names}
    assert set(fields) == set(DatasetSpec.model_fields) - {"name"}
    assert [name for name, field in fields.items() if not field.description] == []


@pytest.mark.parametrize("change, path", [
    ({"keyframe_hz": "7"}, "keyframe_hz"),
    ({"keyframe_hz": 7}, "keyframe_hz"),
    ({"sweep_hz": "3"}, "sweep_hz"),
    ({"channels": ["CAM_TOP"]}, "channels[0]"),
    ({"colour": "red"}, "colour"),
    ({"max_scenes": "many"}, "max_scenes"),
])
def test_the_launchpad_refuses_what_the_schema_can_say_before_launch(job, change, path):
    errors = launchpad_errors(job, change)
    assert errors and path in " ".join(errors), errors
    with pytest.raises(dg.DagsterInvalidConfigError):  # and a launch (or a schedule's run) is refused too
        dg.validate_run_config(job, {"ops": {"dataset_plan": {"config": change}}})


def test_every_allowed_rate_and_channel_passes_the_launchpad(job):
    from jadd_dagster.spec import CHOICES

    for rate in CHOICES["keyframe_hz"]:
        assert launchpad_errors(job, {"keyframe_hz": str(rate), "sweep_hz": str(rate)}) == []
    assert launchpad_errors(job, {"channels": list(CHOICES["channels"])}) == []


def test_a_spec_file_becomes_a_run_config_the_launchpad_accepts(job):
    for spec in standard_specs():
        config = dataset_run_config(spec)["ops"]["dataset_plan"]["config"]
        assert launchpad_errors(job, config) == []
    config = dataset_run_config({"name": "x", "max_scenes": 5, "image_width": 640, "image_height": 360,
                                 "budget_usd": 2.5, "keyframe_hz": 5, "sweep_hz": 10})["ops"]["dataset_plan"]["config"]
    assert launchpad_errors(job, config) == []


@pytest.fixture
def resources(tmp_path, monkeypatch):
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile

    monkeypatch.setenv("JADD_HOME", str(tmp_path))
    return resources_for(load_profile())


def failure_of(result) -> str:
    assert not result.success
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data.description


def test_a_bad_name_and_out_of_bounds_values_are_refused_by_the_first_step_naming_each_field(resources):
    """The launchpad takes them (Dagster config has no bounds); dataset_plan refuses them before any work."""
    change = {"jpeg_quality": 0, "val_fraction": 1.5, "budget_usd": -1.0, "image_width": 8, "scene_filter": "speed >"}
    job = defs.get_repository_def().get_implicit_job_def_for_assets([dataset_plan.key])
    assert launchpad_errors(job, change) == []
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["../evil"])
        message = failure_of(dg.materialize(
            list(defs.assets), selection=[dataset_plan], instance=instance, resources=resources, partition_key="../evil",
            run_config={"ops": {"dataset_plan": {"config": change}}}, raise_on_error=False,
        ))
    lines = message.splitlines()
    assert lines[0] == "dataset spec '../evil' is invalid:"
    assert "name: '../evil' is not a dataset name: use 1-63 lower-case letters, digits, '-' or '_', " \
           "starting with a letter or digit" in lines
    assert {line.split(":")[0] for line in lines[1:]} == {
        "name", "jpeg_quality", "val_fraction", "budget_usd", "image_width", "scene_filter"}


def test_bad_partition_keys_are_removed_on_the_sensors_tick_and_standard_datasets_registered():
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def(partition_keys_sensor.name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["city", "../evil", "Bad Name"])
        instance.add_dynamic_partitions("logs", ["log-a", "../up"])

        def tick():
            context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=repo)
            result = sensor.evaluate_tick(context)
            for request in result.dynamic_partitions_requests:  # what the daemon does with them
                if isinstance(request, dg.DeleteDynamicPartitionsRequest):
                    for key in request.partition_keys:
                        instance.delete_dynamic_partition(request.partitions_def_name, key)
                else:
                    instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
            return result

        first = tick()
        assert "../evil" in first.skip_message and "lower-case letters" in first.skip_message
        standard = {spec.name for spec in standard_specs()}
        assert set(instance.get_dynamic_partitions("datasets")) == {"city"} | standard
        assert instance.get_dynamic_partitions("logs") == ["log-a"]
        assert tick().dynamic_partitions_requests == []


def test_a_failed_run_of_one_dataset_leaves_another_datasets_status_alone(resources):
    """The red 'demo' of the issue: a partition is marked failed only by a failed run of that
    partition (Dagster's status: its latest attempt failed), never by another partition's run. A
    rule across fields is refused by the first step, naming both fields."""
    from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

    from jadd_dagster.defs.partitions import dataset_partitions

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["city", "evil-twin"])
        instance.report_runless_asset_event(dg.AssetMaterialization(dataset_plan.key, partition="city"))
        change = {"keyframe_hz": "10", "sweep_hz": "5"}
        message = failure_of(dg.materialize(
            list(defs.assets), selection=[dataset_plan], instance=instance, resources=resources,
            partition_key="evil-twin", run_config={"ops": {"dataset_plan": {"config": change}}}, raise_on_error=False))
        assert "sweep_hz (5) must be a multiple of keyframe_hz (10)" in message
        status = get_and_update_asset_status_cache_value(instance, dataset_plan.key, dataset_partitions,
                                                         dynamic_partitions_loader=instance)
        assert status.deserialize_failed_partition_subsets(dataset_partitions).get_partition_keys() == {"evil-twin"}
        assert status.deserialize_materialized_partition_subsets(dataset_partitions).get_partition_keys() == {"city"}
