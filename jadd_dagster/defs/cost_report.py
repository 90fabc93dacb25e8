"""Cost in the UI: the estimate in the plan, the actual cost of each build, and the morning review.

- `plan_costing` gives the plan (planning.make_plan) the cache hits and the measured seconds from
  the registry; `estimate_metadata` shows the estimate in dataset_plan's metadata.
- `metered` wraps the compute backend so a stage knows its AWS Batch job seconds;
  `actual_cost_metadata` shows estimate against actual in dataset_registry's metadata.
- `daily_cost_report` (one partition a day, 07:00 to 07:00 UTC, materialized by
  `daily_cost_report_schedule` at 07:00): every dataset build registered that day, who launched it,
  estimate against actual, cost per scene, the biggest spenders, a table and a plot; its check
  `spend_within_limits` fails (severity ERROR) when the day's spend or one build passes the profile's
  `cost.limits`, and then also sends a Sentry event when SENTRY_DSN is set.
"""

import io
import json
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import dagster as dg

from jadd_dagster import observability
from jadd_dagster.autolabel.models import needs_gpu
from jadd_dagster.cost import (
    COMPONENTS, ChunkMeter, CostBreakdown, CostTable, calibration, format_usd, median_calibration,
    sampling_seconds,
)
from jadd_dagster.defs.autolabel_assets import label_cache
from jadd_dagster.defs.compute_resources import BatchComputeBackend
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.defs.stages import image_metadata
from jadd_dagster.layout import STAGE_AUTOLABELED, STAGE_SAMPLED
from jadd_dagster.logs.format import CALIBRATION
from jadd_dagster.planning import (
    CameraSizes, CameraStreams, CostInputs, frame_batches, label_seconds, sampling_profile, settings_table,
)
from jadd_dagster.scenes import SCENE_LENGTH_S
from jadd_dagster.storage import LOGS
from jadd_dagster.registry import DatasetEntry
from jadd_dagster.spec import DatasetSpec

CHECK_SPEND = "spend_within_limits"
REPORT_HOUR_UTC = 7  # the day of a report runs from 07:00 UTC to 07:00 UTC the next day
BIGGEST_SPENDERS = 5
PLOT_LOG_FOLDER = "jadd-cost-report"
MERGE_RATE = "merge_s_per_scene"  # in a registry entry's cost["measured"] (older builds: alone)
MERGE_MEASURED = ("merge_s", "merged_scenes", "merged_parts")  # ... and since the per-part term
CALIBRATION_READERS = 16  # logs whose calibration.json is read at once (one GET each on S3)


# The estimate (dataset_plan).


def plan_costing(
    spec: DatasetSpec, registry: RegistryResource, models: AutolabelModels, settings: PipelineSettings,
    store: StoreResource | None = None,
) -> Callable[[list[str], CameraSizes], CostInputs]:
    """For make_plan: the selected scenes' cache hits, their logs' camera sizes (as the catalog has
    them, else from the store's calibration.json, one GET a log; without a store every camera
    counts as native_megapixels) and how far what
    earlier builds measured is from the table's model: sampling per scene of the same sampling
    profile, each compared with the model at its own log's camera size; merge per build, with its
    parts and scenes; labelling the median over scenes of the same model and profile, each compared
    with the model at its own images (keyframes × cameras) and their size. Rates and codecs are the
    catalog's (known_streams)."""
    table = settings_table(settings)

    def inputs(scene_ids: list[str], known_sizes: CameraSizes | None = None,
               known_streams: CameraStreams | None = None) -> CostInputs:
        reg = registry.registry()
        profile_key = sampling_profile(spec).key()
        wanted = set(scene_ids)
        sampled = set(reg.cached_scene_outputs(STAGE_SAMPLED, profile_key, wanted))
        recent = reg.recent_scene_seconds(STAGE_SAMPLED, profile_key, table.measured_entries)
        labelled, recent_labels, gpu, cache_key = set(), [], False, ""
        if spec.autolabel:
            config, _, cache_key = label_cache(spec, models)
            labelled = set(reg.cached_scene_outputs(STAGE_AUTOLABELED, cache_key, wanted))
            recent_labels = reg.recent_scene_seconds(STAGE_AUTOLABELED, cache_key, table.measured_entries)
            gpu = needs_gpu(config)
        logs = {_log_of(s) for s in wanted} | {_log_of(s) for s, _, _ in recent} | {_log_of(s) for s, _, _ in recent_labels}
        known_sizes = known_sizes or {}
        sizes = {log_id: known_sizes[log_id] for log_id in logs if log_id in known_sizes}
        if store is not None:
            sizes.update(camera_sizes(store, logs - sizes.keys()))
        streams = known_streams or {}
        sampling = calibration(sampling_samples(spec, recent, sizes, table, streams), "scene")
        labelling = None
        if spec.autolabel:
            labelling = median_calibration(label_samples(spec, recent_labels, sizes, table, settings.scene_length_s), "scene")
        merging = calibration(merge_samples(reg.recent_costs(table.measured_entries), table), "build")
        return CostInputs(table, sampled, labelled, sampling, labelling, merging, gpu, sizes, streams)

    return inputs


def sampling_samples(
    spec: DatasetSpec, recent: Iterable[tuple[str, int, float]], sizes: CameraSizes, table: CostTable,
    streams: CameraStreams | None = None,
) -> list[tuple[float, float]]:
    """(measured, modelled) seconds of recently sampled scenes of the spec's sampling profile, the
    model at the scene's own camera size, rates and copies (streams, where the catalog gave them):
    a scene measured on small frames says how fast this deployment samples a pixel, not a frame."""
    samples = []
    for scene_id, frames, seconds in recent:
        one_scene = {scene_id.split("/")[0]: {SCENE_LENGTH_S: 1}}
        count, model_s = sampling_seconds(frame_batches(spec, one_scene, sizes, table, streams), table,
                                          spec.undistort, spec.sweep_hz)
        samples.append((seconds, frames * model_s / count if count else 0.0))
    return samples


def label_samples(
    spec: DatasetSpec, recent: Iterable[tuple[str, int, float]], sizes: CameraSizes, table: CostTable, scene_s: float,
) -> list[tuple[float, float]]:
    """(measured, modelled) seconds of recently labelled scenes of the spec's model and profile, the
    model at the scene's own images (keyframes of a scene_s scene × cameras, at its log's sizes)."""
    return [(seconds, label_seconds(spec, table, sizes, _log_of(scene_id), scene_s)) for scene_id, _, seconds in recent]


def _log_of(scene_id: str) -> str:
    return scene_id.split("/")[0]


def merge_samples(costs: Iterable[Mapping], table: CostTable) -> list[tuple[float, float]]:
    """(measured, modelled) merge seconds of recent builds that recorded their merged parts and
    scenes (builds from before the per-part term recorded seconds a scene only: left out)."""
    samples = []
    for cost in costs:
        measured = cost.get("measured") or {}
        if all(measured.get(key) for key in MERGE_MEASURED):
            samples.append((measured["merge_s"], table.merge_seconds(measured["merged_parts"], measured["merged_scenes"])))
    return samples


def camera_sizes(store: StoreResource, log_ids: Iterable[str]) -> CameraSizes:
    """Each log's cameras' (width, height) from its calibration.json, read a few logs at once; a
    log without one (not in this store) is left out and counts as native_megapixels."""
    s = store.store()

    def read(log_id: str) -> tuple[str, dict]:
        try:
            data = json.loads(s.get_bytes(f"{LOGS}/{log_id}/{CALIBRATION}"))
        except FileNotFoundError:
            return log_id, {}
        return log_id, {channel: (int(c["width"]), int(c["height"])) for channel, c in data.items()
                        if isinstance(c, Mapping) and "width" in c and "height" in c}

    logs = sorted(set(log_ids))
    if len(logs) <= 1:
        return dict(read(log_id) for log_id in logs)
    with ThreadPoolExecutor(min(CALIBRATION_READERS, len(logs))) as pool:
        return dict(pool.map(read, logs))


def estimate_metadata(estimate: Mapping) -> dict:
    """The estimate as metadata: the breakdown table and one number per component (USD)."""
    breakdown = CostBreakdown.from_json(estimate["breakdown"])
    return {
        "estimated_cost_usd": _usd(estimate["usd"]), "estimated_frames": estimate["frames"],
        "estimated_cpu_hours": round(estimate["cpu_hours"], 6), "estimated_gpu_hours": round(estimate.get("gpu_hours", 0.0), 6),
        **{f"estimated_{name}_usd": _usd(estimate["components"][name]) for name in COMPONENTS},
        "scenes_cached": estimate.get("cached_scenes", 0),
        "cost_estimate": dg.MetadataValue.md(breakdown.markdown()),
    }


def _usd(amount: float) -> float:
    """Enough significant digits to show cents and fractions of a cent alike."""
    return float(f"{amount:.4g}")


# The actual cost (dataset_registry).


def metered(compute) -> ChunkMeter:
    """The compute backend, counting its chunks' seconds; AWS Batch job seconds are what is billed."""
    return ChunkMeter(compute, bills_jobs=isinstance(compute, BatchComputeBackend))


def actual_cost_metadata(estimate: Mapping, cost: Mapping, scenes: int) -> dict:
    """Estimate against actual in the run's metadata (USD), with the actual breakdown."""
    actual = CostBreakdown.from_json(cost["actual"])
    return {
        "estimated_cost_usd": _usd(estimate["usd"]), "actual_cost_usd": _usd(actual.usd),
        **{f"actual_{name}_usd": _usd(actual.component(name)) for name in COMPONENTS},
        **({"actual_usd_per_scene": _usd(actual.usd / scenes)} if scenes else {}),
        "cost_actual": dg.MetadataValue.md(actual.markdown()),
    }


def launched_by(run: dg.DagsterRun) -> str:
    """Who launched a run, from its tags: the user (`user`, `dagster/user`), else the schedule,
    sensor, backfill or automation that did; "manual" when nothing says."""
    tags = run.tags or {}
    for key in ("user", "dagster/user"):
        if tags.get(key):
            return tags[key]
    for key, kind in (("dagster/schedule_name", "schedule"), ("dagster/sensor_name", "sensor"),
                      ("dagster/backfill", "backfill")):
        if tags.get(key):
            return f"{kind} {tags[key]}"
    if tags.get("dagster/from_automation_condition") or tags.get("dagster/auto_materialize"):
        return "automation"
    return "manual"


# The morning review.

report_partitions = dg.DailyPartitionsDefinition(start_date="2026-11-01", hour_offset=REPORT_HOUR_UTC, timezone="UTC")


def day_window(partition_key: str) -> tuple[datetime, datetime]:
    """[start, end) of a report day: from 07:00 UTC of the partition's date to 07:00 the next day."""
    start = datetime.strptime(partition_key, "%Y-%m-%d").replace(hour=REPORT_HOUR_UTC, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def report_rows(entries: list[DatasetEntry]) -> list[dict]:
    """One row per build with its estimate, actual cost and cost per scene (USD); builds that
    recorded no cost (registered before the cost model) count as 0 and say so."""
    rows = []
    for e in entries:
        actual = e.actual_usd or 0.0
        rows.append({
            "dataset": e.name, "launched_by": e.launched_by or "unknown", "run": e.dagster_run_id or "",
            "created_at": e.created_at, "scenes": e.scenes, "status": e.status,
            "estimate_usd": e.estimate_usd, "actual_usd": actual, "recorded": e.actual_usd is not None,
            "usd_per_scene": actual / e.scenes if e.scenes else None,
        })
    return rows


def report_markdown(rows: list[dict]) -> str:
    def money(value) -> str:
        return format_usd(value) if value is not None else "n/a"

    lines = ["| dataset | launched by | built (UTC) | scenes | estimate | actual | actual/estimate | per scene | run |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = f"{r['actual_usd'] / r['estimate_usd']:.2f}" if r["estimate_usd"] and r["recorded"] else "n/a"
        lines.append(f"| {r['dataset']} | {r['launched_by']} | {r['created_at']:%Y-%m-%d %H:%M} | {r['scenes']} | "
                     f"{money(r['estimate_usd'])} | {money(r['actual_usd'] if r['recorded'] else None)} | {ratio} | "
                     f"{money(r['usd_per_scene'] if r['recorded'] else None)} | {r['run'][:8]} |")
    return "\n".join(lines)


def spenders(rows: list[dict]) -> list[tuple[str, float, int]]:
    """Datasets by what they spent that day (builds of one dataset added up), biggest first:
    (dataset, USD, builds)."""
    totals: dict[str, list] = {}
    for r in rows:
        total = totals.setdefault(r["dataset"], [0.0, 0])
        total[0] += r["actual_usd"]
        total[1] += 1
    return sorted(((name, usd, n) for name, (usd, n) in totals.items()), key=lambda item: (-item[1], item[0]))


def report_plot(rows: list[dict], title: str) -> bytes:
    """A PNG bar chart: estimate and actual (USD) of each build of the day."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # no display where Dagster runs
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['dataset']}\n{r['created_at']:%H:%M}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(rows) + 2), 4), dpi=100)
    try:
        ax.bar([i - 0.2 for i in x], [r["estimate_usd"] or 0.0 for r in rows], 0.4, label="estimate")
        ax.bar([i + 0.2 for i in x], [r["actual_usd"] for r in rows], 0.4, label="actual")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel("USD")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def plot_metadata(context: dg.AssetExecutionContext, png: bytes) -> dict:
    """The report's plot, shown in the UI without a click like the dataset preview
    (stages.image_metadata), written as jadd-cost-report/<day>/<run id>.png."""
    return image_metadata(context, "plot", png, "png", "image/png", PLOT_LOG_FOLDER, "estimate and actual cost per build")


def limit_breaches(rows: list[dict], table: CostTable) -> list[str]:
    """What passes the profile's limits: the day's total, and each build's actual cost."""
    breaches = []
    total = sum(r["actual_usd"] for r in rows)
    if table.daily_limit_usd is not None and total > table.daily_limit_usd:
        breaches.append(f"the day's spend {format_usd(total)} is over the daily limit {format_usd(table.daily_limit_usd)}")
    if table.dataset_limit_usd is not None:
        for r in rows:
            if r["actual_usd"] > table.dataset_limit_usd:
                breaches.append(f"dataset {r['dataset']} (run {r['run'][:8]}, launched by {r['launched_by']}) cost "
                                f"{format_usd(r['actual_usd'])}, over the per-dataset limit {format_usd(table.dataset_limit_usd)}")
    return breaches


def report_breaches(day: str, breaches: list[str], total_usd: float) -> bool:
    """One Sentry event (level error) for a day whose spend passed a limit; False when Sentry is off."""
    if not breaches or not observability.enabled():
        return False
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("alert", "cost")
        scope.set_tag("day", day)
        scope.set_extra("breaches", breaches)
        scope.set_extra("total_usd", total_usd)
        scope.fingerprint = ["jadd-cost-limit", day]
        sentry_sdk.capture_message(f"JADD spend over limit on {day}: " + "; ".join(breaches), level="error")
    observability.flush()
    return True


@dg.asset(
    partitions_def=report_partitions,
    group_name="cost",
    check_specs=[dg.AssetCheckSpec(
        CHECK_SPEND, asset="daily_cost_report",
        description="The day's spend and every dataset build's actual cost are within the profile's cost.limits "
        "(daily_usd, dataset_usd); fails with severity ERROR, and sends a Sentry event when SENTRY_DSN is set.",
    )],
    description="The morning review: every dataset build registered in the day (07:00 to 07:00 UTC), who launched "
    "it, estimate against actual, cost per scene, the biggest spenders, a table and a plot.",
)
def daily_cost_report(
    context: dg.AssetExecutionContext, registry: RegistryResource, settings: PipelineSettings,
) -> dg.MaterializeResult:
    start, end = day_window(context.partition_key)
    table = settings_table(settings)
    rows = sorted(report_rows(registry.registry().list_datasets(since=start, until=end)), key=lambda r: r["created_at"])
    total = sum(r["actual_usd"] for r in rows)
    estimated = sum(r["estimate_usd"] or 0.0 for r in rows)
    breaches = limit_breaches(rows, table)
    if breaches:
        context.log.error("cost limits passed: " + "; ".join(breaches))
        report_breaches(context.partition_key, breaches, total)
    top = spenders(rows)[:BIGGEST_SPENDERS]
    metadata = {
        "builds": len(rows), "datasets": len({r["dataset"] for r in rows}), "scenes": sum(r["scenes"] for r in rows),
        "actual_usd": _usd(total), "estimate_usd": _usd(estimated),
        "window": f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
        "builds_table": dg.MetadataValue.md(report_markdown(rows) if rows else "no dataset was built in this day"),
        "biggest_spenders": dg.MetadataValue.md(
            "| dataset | actual | builds |\n|---|---:|---:|\n"
            + "\n".join(f"| {name} | {format_usd(usd)} | {n} |" for name, usd, n in top)),
    }
    if rows:
        metadata.update(plot_metadata(context, report_plot(rows, f"estimate and actual cost, {context.partition_key}")))
    limits = {"daily_limit_usd": table.daily_limit_usd, "dataset_limit_usd": table.dataset_limit_usd}
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name=CHECK_SPEND, passed=not breaches, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"breaches": "\n".join(breaches) or "none", "actual_usd": _usd(total),
                      **{k: v for k, v in limits.items() if v is not None}},
        )],
    )


daily_cost_report_schedule = dg.build_schedule_from_partitioned_job(
    dg.define_asset_job("daily_cost_report_job", selection=[daily_cost_report], partitions_def=report_partitions),
    name="daily_cost_report_schedule",
    hour_of_day=REPORT_HOUR_UTC,
    description="Every morning at 07:00 UTC: the cost report of the day that just ended (daily_cost_report), and "
    "its spend check.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
