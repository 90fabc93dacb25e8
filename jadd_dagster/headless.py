"""Headless builds: the same Dagster assets the UI runs, materialized in this process.

`jadd demo` and `jadd build` use this. Everything goes under one work folder: the object store and
registry ($JADD_HOME = WORKDIR) and the Dagster instance (WORKDIR/dagster_home, SQLite), so that
`dagster dev` pointed at the same folders shows every run afterwards.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from jadd_dagster.spec import DatasetSpec

LOG_LEVEL_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class HeadlessResult:
    """The build summary plus what failed before merge (whole logs)."""

    summary: dict
    failed_logs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        checks_failed = any(self.summary.get("check_problems", {}).values())
        return not self.failed_logs and not self.summary.get("failed_scenes") and not checks_failed


def use_workdir(workdir: Path, dagster_yaml: str | None = None) -> None:
    """Point the profile and the Dagster instance at workdir; call before loading definitions.

    dagster_yaml is the instance config to write (e.g. PostgreSQL storage); by default the
    instance is SQLite under WORKDIR/dagster_home and an existing config is kept.
    """
    workdir = workdir.resolve()
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if dagster_yaml is not None:
        config.write_text(dagster_yaml)
    elif not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["JADD_HOME"] = str(workdir)
    os.environ["DAGSTER_HOME"] = str(home)


def current_store():
    """The object store of the deployment profile as the environment sets it now."""
    from jadd_dagster.profile import load_profile
    from jadd_dagster.storage import open_store

    return open_store(load_profile().store_url)


def add_logs(logs_dir: Path, store) -> list[str]:
    """Put each log folder of logs_dir into the store: a symlink for a local store, else an upload.

    Logs already in the store are left as they are.
    """
    from jadd_dagster.logs.format import MANIFEST
    from jadd_dagster.logs.stored import log_key

    added = []
    for folder in sorted(p for p in Path(logs_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        key = log_key(folder.name)
        local = store.local_path(key)
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            if not local.exists():
                local.symlink_to(folder.resolve(), target_is_directory=True)
        elif not store.exists(f"{key}/{MANIFEST}"):
            store.publish_folder(folder, key, last=[MANIFEST])
        added.append(folder.name)
    return added


def build_dataset(spec: DatasetSpec, spec_data: dict, workdir: Path, progress=print) -> HeadlessResult:
    """Ingest every log in WORKDIR/store/logs, then build one dataset; returns its summary."""
    import dagster as dg

    from jadd_dagster.build import build_summary
    from jadd_dagster.defs.automation import DATASET_ASSETS, dataset_run_config
    from jadd_dagster.defs.partitions import dataset_partitions, log_partitions
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.definitions import defs
    from jadd_dagster.profile import load_profile
    from jadd_dagster.logs.stored import list_log_ids

    started = time.monotonic()
    instance = dg.DagsterInstance.get()
    # Resources from the profile as it is now: the work folder may differ from the one the
    # definitions module saw when it was first imported.
    resources = resources_for(load_profile())
    store = resources["store"].store()
    assets = list(defs.assets)

    # Runs say who launched them (the daily cost report reads the tag), as Dagster+ tags UI launches.
    try:
        tags = {"user": getpass.getuser()}
    except (KeyError, OSError):  # a container's uid without a passwd entry or $USER
        tags = {}

    def run(selection, partition_key=None, run_config=None):
        config = {**LOG_LEVEL_CONFIG, **(run_config or {})}
        return dg.materialize(
            assets, selection=selection, instance=instance, resources=resources,
            partition_key=partition_key, run_config=config, raise_on_error=False, tags=tags,
        )

    # A log is ingested once: logs whose scene_index is materialized are not read again.
    ingested = instance.get_materialized_partitions(dg.AssetKey("scene_index"))
    log_ids = [log_id for log_id in list_log_ids(store) if log_id not in ingested]
    instance.add_dynamic_partitions(log_partitions.name, log_ids)
    failed_logs: dict[str, str] = {}
    for i, log_id in enumerate(log_ids, 1):
        progress(f"[{i}/{len(log_ids)}] ingesting log {log_id}")
        result = run(["drive_logs", "scene_index"], partition_key=log_id)
        if not result.success:
            failed_logs[log_id] = _failure_message(result)
            progress(f"  log {log_id} failed: {failed_logs[log_id]}")
    if len(failed_logs) < len(log_ids) or not instance.get_latest_materialization_event(dg.AssetKey("scene_catalog")):
        progress("building the scene catalog")
        _require(run(["scene_catalog"]), "scene_catalog")
    instance.add_dynamic_partitions(dataset_partitions.name, [spec.name])
    progress(f"planning dataset {spec.name!r}")
    plan_asset, *stages = [key.to_user_string() for key in DATASET_ASSETS]
    config = dataset_run_config(spec_data)
    _require(run([plan_asset], spec.name, config), f"dataset {spec.name}")
    progress(plan_line(store, spec.name))
    from jadd_dagster.defs.bookkeeping import bookkeeping_advice
    from jadd_dagster.layout import plan_key
    from jadd_dagster.records import DatasetPlan, read_record

    advice = bookkeeping_advice(instance, len(read_record(store, plan_key(spec.name), DatasetPlan).scene_ids))
    if advice:
        progress(f"warning: {advice}")
    result = run(stages, spec.name)
    _require(result, f"dataset {spec.name}")
    summary = {
        **build_summary(store, spec.name), "failed_logs": failed_logs,
        "wall_s": round(time.monotonic() - started, 2), "dagster_home": os.environ.get("DAGSTER_HOME", ""),
    }
    return HeadlessResult(summary, failed_logs)


def plan_line(store, name: str) -> str:
    """The plan in one line, shown before any scene is sampled."""
    from jadd_dagster.cost import format_usd
    from jadd_dagster.layout import plan_key
    from jadd_dagster.records import DatasetPlan, read_record

    from jadd_dagster.planning import estimate_lines

    plan = read_record(store, plan_key(name), DatasetPlan)
    return (f"plan: {len(plan.scene_ids)} scenes ({plan.hours:.2f} h) in {len(plan.parts)} parts of up to "
            f"{plan.scenes_per_part}; estimated {plan.estimate['frames']} frames, {format_usd(plan.estimate['usd'])}"
            + estimate_lines(plan.estimate))


class BuildFailed(RuntimeError):
    """A step that every later step needs failed."""


def _require(result, what: str) -> None:
    if not result.success:
        raise BuildFailed(f"{what} failed: {_failure_message(result)}")


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            # Dagster wraps the asset's own exception; the cause is what the user needs to read.
            while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause:
                error = error.cause
            return error.message.strip()
    return "run failed"


def write_summary(result: HeadlessResult, workdir: Path) -> Path:
    path = workdir / "summary.json"
    path.write_text(json.dumps(result.summary, indent=2, sort_keys=True))
    return path
