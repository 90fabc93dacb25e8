"""Sensors and schedules: new logs become partitions; standard datasets rebuild on a schedule."""

from pathlib import Path

import dagster as dg
import yaml

from jadd_dagster.defs.dataset_assets import dataset_frames, dataset_labels, dataset_plan, dataset_registry, jadd_dataset
from jadd_dagster.defs.log_assets import drive_logs, scene_index
from jadd_dagster.defs.partitions import dataset_partitions, log_partitions
from jadd_dagster.defs.resources import StoreResource
from jadd_dagster.logs.format import MANIFEST
from jadd_dagster.logs.stored import list_log_ids
from jadd_dagster.observability import report_run_failure
from jadd_dagster.spec import load_spec
from jadd_dagster.storage import LOGS

STANDARD_DATASETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "datasets"
# The build's stages of one dataset, in order: what a dataset run materializes.
DATASET_ASSETS = [a.key for a in (dataset_plan, dataset_frames, dataset_labels, jadd_dataset, dataset_registry)]


def new_log_ids(store: StoreResource, known: set[str]) -> list[str]:
    """Log folders not registered yet that have their manifest (written last by an upload); a
    folder whose name cannot be a log id is skipped and reported (logs.stored.list_log_ids)."""
    s = store.store()
    return [n for n in list_log_ids(s) if n not in known and s.exists(f"{LOGS}/{n}/{MANIFEST}")]


@dg.sensor(
    target=[drive_logs, scene_index], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every minute: registers each new log folder under logs/ in the store (one with its manifest.json) "
    "as a `logs` partition and ingests it (drive_logs, scene_index).",
)
def drive_log_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    """Registers each new log folder in the store as a `logs` partition and ingests it."""
    known = set(context.instance.get_dynamic_partitions(log_partitions.name))
    new = new_log_ids(store, known)
    return dg.SensorResult(
        dynamic_partitions_requests=[log_partitions.build_add_request(new)] if new else [],
        run_requests=[dg.RunRequest(partition_key=log_id) for log_id in new],
    )


def dataset_run_config(spec_data: dict) -> dict:
    config = {k: v for k, v in spec_data.items() if k != "name"}
    return {"ops": {dataset_plan.op.name: {"config": config}}}


@dg.schedule(
    cron_schedule="0 2 * * *", target=DATASET_ASSETS, default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly at 02:00: rebuilds every standard dataset of assets/datasets/*.yaml; cached scenes and "
    "unchanged parts are not computed again.",
)
def standard_datasets_schedule(context: dg.ScheduleEvaluationContext):
    """Rebuilds every dataset in assets/datasets/ nightly; cached scenes are not recomputed."""
    for path in sorted(STANDARD_DATASETS_DIR.glob("*.yaml")):
        spec = load_spec(path)
        if not context.instance.has_dynamic_partition(dataset_partitions.name, spec.name):
            context.instance.add_dynamic_partitions(dataset_partitions.name, [spec.name])
        yield dg.RunRequest(
            run_key=f"{spec.name}-{context.scheduled_execution_time:%Y%m%d}",
            partition_key=spec.name,
            run_config=dataset_run_config(yaml.safe_load(path.read_text())),
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
