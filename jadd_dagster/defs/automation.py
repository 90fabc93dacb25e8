"""Sensors and schedules: new logs become partitions; standard datasets rebuild on a schedule; no
partition key that breaks the naming rules stays in `datasets` or `logs`."""

import os
from pathlib import Path

import dagster as dg

from jadd_dagster.defs.config import config_values
from jadd_dagster.defs.dataset_assets import dataset_frames, dataset_labels, dataset_plan, dataset_registry, jadd_dataset
from jadd_dagster.defs.log_assets import drive_logs, scene_index
from jadd_dagster.defs.partitions import dataset_partitions, log_partitions
from jadd_dagster.defs.resources import StoreResource
from jadd_dagster.layout import CATALOG_KEY
from jadd_dagster.logs.format import MANIFEST
from jadd_dagster.logs.reader import LOG_ID_PATTERN, is_log_id
from jadd_dagster.logs.stored import list_log_ids
from jadd_dagster.observability import report_run_failure
from jadd_dagster.spec import NAME_RULE, DatasetSpec, SpecError, is_valid_name, load_spec, parse_spec
from jadd_dagster.storage import LOGS

STANDARD_DATASETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "datasets"
# The build's stages of one dataset, in order: what a dataset run materializes.
DATASET_ASSETS = [a.key for a in (dataset_plan, dataset_frames, dataset_labels, jadd_dataset, dataset_registry)]
# Seconds between the daemon's ticks of the sensors of this module, instead of their own interval (unset
# in production); the browser test sets it so that its real daemon ticks within seconds, not a minute.
SENSOR_INTERVAL_ENV = "JADD_SENSOR_INTERVAL_S"


def sensor_interval_s(default: int) -> int:
    """A sensor's minimum interval in seconds: $JADD_SENSOR_INTERVAL_S if set, else `default`."""
    value = os.environ.get(SENSOR_INTERVAL_ENV, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={value!r}: must be a whole number of seconds, at least 1")
    return int(value)


# Whether the nightly standard_datasets_schedule starts running (unset: yes). The tests' own running
# instance (the browser test's daemon) sets "stopped": a CI run at 02:00 UTC would otherwise pay for a build.
NIGHTLY_SCHEDULE_ENV = "JADD_NIGHTLY_SCHEDULE"


def nightly_schedule_status() -> dg.DefaultScheduleStatus:
    """standard_datasets_schedule's default status: $JADD_NIGHTLY_SCHEDULE `running` (or unset) or `stopped`."""
    value = os.environ.get(NIGHTLY_SCHEDULE_ENV, "").strip().lower() or "running"
    if value not in ("running", "stopped"):
        raise ValueError(f"{NIGHTLY_SCHEDULE_ENV}={value!r}: must be 'running' or 'stopped'")
    return dg.DefaultScheduleStatus.RUNNING if value == "running" else dg.DefaultScheduleStatus.STOPPED


def new_log_ids(store: StoreResource, known: set[str]) -> list[str]:
    """Log folders not registered yet that have their manifest (written last by an upload); a
    folder whose name cannot be a log id is skipped and reported (logs.stored.list_log_ids)."""
    s = store.store()
    return [n for n in list_log_ids(s) if n not in known and s.exists(f"{LOGS}/{n}/{MANIFEST}")]


@dg.sensor(
    target=[drive_logs, scene_index], minimum_interval_seconds=sensor_interval_s(60),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute: registers each new log folder under logs/ in the store (one with its manifest.json, "
    "uploaded or converted from MCAP by convert_drive_job) as a `logs` partition and ingests it (drive_logs, "
    "scene_index).",
)
def drive_log_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    """Registers each new log folder in the store as a `logs` partition and ingests it."""
    known = set(context.instance.get_dynamic_partitions(log_partitions.name))
    new = new_log_ids(store, known)
    return dg.SensorResult(
        dynamic_partitions_requests=[log_partitions.build_add_request(new)] if new else [],
        run_requests=[dg.RunRequest(partition_key=log_id) for log_id in new],
    )


def dataset_run_config(spec: DatasetSpec | dict) -> dict:
    """The run config of a dataset build: the spec in the launchpad's form (defs/config.py)."""
    spec = spec if isinstance(spec, DatasetSpec) else parse_spec(spec)
    return {"ops": {dataset_plan.op.name: {"config": config_values(spec)}}}


def standard_specs(log: dg.DagsterLogManager | None = None) -> list[DatasetSpec]:
    """The valid specs of assets/datasets/*.yaml, by file name; a bad file (or a second file with a
    name already taken) is reported on log and left out, so it never stops the others."""
    specs: dict[str, DatasetSpec] = {}
    for path in sorted(STANDARD_DATASETS_DIR.glob("*.yaml")):
        try:
            spec = load_spec(path)
        except SpecError as error:
            if log:
                log.warning(f"standard dataset spec left out: {error}")
            continue
        if spec.name in specs:
            if log:
                log.warning(f"standard dataset spec left out: {path}: name {spec.name!r} is taken by another file")
            continue
        specs[spec.name] = spec
    return list(specs.values())


def invalid_partition_keys(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """The `datasets` and `logs` partition keys that break their naming rules, by partition set:
    the UI's "add partition" dialog takes any text (Dagster has no hook to refuse it)."""
    bad = {
        dataset_partitions.name: [k for k in instance.get_dynamic_partitions(dataset_partitions.name) if not is_valid_name(k)],
        log_partitions.name: [k for k in instance.get_dynamic_partitions(log_partitions.name) if not is_log_id(k)],
    }
    return {name: keys for name, keys in bad.items() if keys}


RULES = {dataset_partitions.name: NAME_RULE, log_partitions.name: f"{LOG_ID_PATTERN.pattern} without '..'"}


@dg.sensor(
    minimum_interval_seconds=sensor_interval_s(30), default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: removes `datasets` and `logs` partition keys that break the naming rules (the UI's "
    "'add partition' accepts any text; the tick says which keys and why), and registers each standard dataset "
    "spec of assets/datasets/*.yaml as a `datasets` partition.",
)
def partition_keys_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Keeps the dynamic partition sets to names the pipeline can build: bad keys out, standard datasets in."""
    requests, said = [], []
    for partitions_name, keys in invalid_partition_keys(context.instance).items():
        requests.append(dg.DeleteDynamicPartitionsRequest(partitions_def_name=partitions_name, partition_keys=keys))
        said.append(f"removed {partitions_name} partition keys {keys}: a key must be {RULES[partitions_name]}")
        context.log.warning(said[-1])
    known = set(context.instance.get_dynamic_partitions(dataset_partitions.name))
    new = [spec.name for spec in standard_specs(context.log) if spec.name not in known]
    if new:
        requests.append(dataset_partitions.build_add_request(new))
        said.append(f"registered standard datasets {new}")
    return dg.SensorResult(dynamic_partitions_requests=requests, skip_reason="; ".join(said) or "nothing to change")


@dg.schedule(
    cron_schedule="0 2 * * *", target=DATASET_ASSETS, default_status=nightly_schedule_status(),
    description="Nightly at 02:00 (UTC): rebuilds every standard dataset of assets/datasets/*.yaml, each registered "
    "as a `datasets` partition; cached scenes and unchanged parts are not computed again. Skips while no log "
    "has been ingested.",
)
def standard_datasets_schedule(context: dg.ScheduleEvaluationContext, store: StoreResource):
    """Rebuilds every standard dataset nightly; only new scenes and changed parts are computed."""
    specs = standard_specs(context.log)
    if not specs:
        return dg.SkipReason(f"no valid dataset spec in {STANDARD_DATASETS_DIR}")
    if not store.store().exists(CATALOG_KEY):
        return dg.SkipReason("no scene catalog yet: no log has been ingested")
    new = [s.name for s in specs if not context.instance.has_dynamic_partition(dataset_partitions.name, s.name)]
    if new:  # registered by partition_keys_sensor, unless it is stopped
        context.instance.add_dynamic_partitions(dataset_partitions.name, new)
    return [
        dg.RunRequest(
            run_key=f"{spec.name}-{context.scheduled_execution_time:%Y%m%d}", partition_key=spec.name,
            run_config=dataset_run_config(spec), tags={"jadd/standard_dataset": spec.name},
        )
        for spec in specs
    ]


# Declared, rather than the one Dagster adds by itself, so that it says what it does in the UI.
automation_condition_sensor = dg.AutomationConditionSensorDefinition(
    "automation_condition_sensor", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=sensor_interval_s(30),
    description="Every 30 s: materializes the assets with an automation condition when their inputs change "
    "(scene_index and scene_catalog are eager: an ingested log updates the scene catalog).",
)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports each failed run to Sentry (one event per failed step, tagged with run, partition, stage "
    "and dataset); does nothing without SENTRY_DSN.",
)
def sentry_run_failure_sensor(context: dg.RunFailureSensorContext):
    """Reports each failed run to Sentry, one event per failed step with the run, partition, stage
    and dataset as tags (nothing without SENTRY_DSN)."""
    report_run_failure(context)
