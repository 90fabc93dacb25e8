"""The build's stages of one dataset, each its own asset (partitioned by `datasets`):

    dataset_plan (Curation + Split, cost) -> dataset_frames (Sampling) -> dataset_labels (Autolabel)
    -> jadd_dataset (Merge into parts, on the compute backend) -> dataset_registry (DB update)

Each stage reads the typed record of the one before (records.py, layout.py) and writes its own.
The per-scene assets `sampled_frames` and `autolabels` get one materialization per scene a dataset
build computes; they are not inputs of these assets, and can be backfilled on their own.
"""

import math

import dagster as dg

from jadd_dagster import build, dataset_lock
from jadd_dagster.autolabel.models import LABELS_JSON, needs_gpu
from jadd_dagster.compute.dispatch import run_whole_chunks
from jadd_dagster.cost import budget_message
from jadd_dagster.curation import FilterError
from jadd_dagster.defs.autolabel_assets import label_cache, label_scenes
from jadd_dagster.defs.bookkeeping import bookkeeping_advice
from jadd_dagster.defs.compute_resources import ComputeBackend
from jadd_dagster.defs.cost_report import actual_cost_metadata, estimate_metadata, launched_by, metered, plan_costing
from jadd_dagster.defs.config import DatasetConfig, SamplingConfig, spec_from_config
from jadd_dagster.defs.log_assets import catalog_rows, catalog_rows_for_partitions, read_catalog, scene_catalog
from jadd_dagster.defs.partitions import dataset_partitions, scene_partitions
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.defs.stages import (
    hold_dataset, plan_metadata, preview_metadata, record_scene_materializations, run_on_backend, seconds_metadata,
)
from jadd_dagster.layout import STAGE_AUTOLABELED, STAGE_MERGED, STAGE_SAMPLED, plan_key, sampled_root_key, stage_record_key
from jadd_dagster.leftovers import remove_leftovers
from jadd_dagster.planning import make_plan, sampling_profile
from jadd_dagster.records import DatasetPlan, StageRecord, write_record
from jadd_dagster.spec import SpecError, check_model_name, parse_spec

CHECK_FRAME_COUNTS = "frame_counts_match_rates"
CHECK_NUSCENES = "nuscenes_invariants_hold"
CHECK_DEVKIT = "devkit_loads_every_version"
CHECKS = {CHECK_FRAME_COUNTS: "frame_counts", CHECK_NUSCENES: "nuscenes_invariants", CHECK_DEVKIT: "devkit"}
CHECK_DESCRIPTIONS = {
    CHECK_FRAME_COUNTS: ("Every merged scene has duration × sweep rate frames per camera (a camera slower than the sweeps: each of "
                         "its frames once) and one lidar sweep per keyframe."),
    CHECK_NUSCENES: "Every part holds the nuScenes invariants: references resolve, prev/next chains, one keyframe "
    "per channel and sample, splits name the part's scenes, every referenced file exists.",
    CHECK_DEVKIT: "The official nuscenes-devkit opens every part (NuScenes(version, dataroot)).",
}


def held_plan(context: dg.AssetExecutionContext, store: StoreResource) -> DatasetPlan:
    """The plan of the run's dataset, once this run holds the dataset's build lock (hold_dataset)."""
    name = context.partition_key
    hold_dataset(context, store, name)
    s = store.store()
    if not s.exists(plan_key(name)):
        raise dg.Failure(f"dataset {name!r} has no plan: materialize dataset_plan first")
    return build.read_record(s, plan_key(name), DatasetPlan)


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[scene_catalog],
    group_name="dataset",
    description="Curation and Split: the scenes a dataset spec selects, their parts and the cost "
    "estimate, made before any scene is sampled; a build over its budget stops here.",
)
def dataset_plan(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: StoreResource, settings: PipelineSettings,
    models: AutolabelModels, registry: RegistryResource,
) -> dg.MaterializeResult:
    spec = spec_from_config(context.partition_key, config)
    try:
        check_model_name(spec, models.models)
    except SpecError as error:
        raise dg.Failure(f"dataset spec {spec.name!r} is invalid:\n{error}") from None
    hold_dataset(context, store, spec.name)
    s = store.store()
    previous = build.read_optional(s, plan_key(spec.name), DatasetPlan)
    try:
        plan = make_plan(spec, read_catalog(store), settings, previous, context.run.run_id,
                         plan_costing(spec, registry, models, settings, store))
    except FilterError as error:
        raise dg.Failure(str(error)) from None
    if not plan.parts:
        raise dg.Failure(f"the filter selects no scenes: {spec.scene_filter!r}")
    usd = plan.estimate["usd"]
    if spec.budget_usd is not None and usd > spec.budget_usd:
        raise dg.Failure(budget_message(usd, spec.budget_usd), metadata=estimate_metadata(plan.estimate))
    write_record(s, plan_key(spec.name), plan)
    if plan.missing_includes:
        context.log.warning(f"include_scenes names scenes not in the catalog: {', '.join(plan.missing_includes[:20])}")
    advice = bookkeeping_advice(context.instance, len(plan.scene_ids))
    if advice:
        context.log.warning(advice)
    if plan.gap_scenes:
        context.log.warning(f"{len(plan.gap_scenes)} selected scenes have CAN or pose gaps (exclude them with "
                            f"'not has_gap' in scene_filter): {', '.join(plan.gap_scenes[:20])}")
    parts = "\n".join(f"| {p.part} | {len(p.scene_ids)} | {p.scene_ids[0]} | {p.scene_ids[-1]} |" for p in plan.parts[:50])
    return dg.MaterializeResult(metadata={
        "scenes": len(plan.scene_ids), "parts": len(plan.parts), "scenes_per_part": plan.scenes_per_part,
        "hours": plan.hours, **estimate_metadata(plan.estimate), "spec_hash": plan.spec_hash,
        "missing_includes": ", ".join(plan.missing_includes), "dropped_by_max_scenes": plan.dropped_by_limit,
        "scenes_with_gaps": len(plan.gap_scenes), **({"bookkeeping_advice": advice} if advice else {}),
        "part_plan": dg.MetadataValue.md("| part | scenes | first | last |\n|---:|---:|---|---|\n" + parts),
    })


@dg.asset(
    partitions_def=scene_partitions,
    group_name="scenes",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Sampled camera frames of one scene (JPEG), per sampling profile; cached.",
)
def sampled_frames(
    context: dg.AssetExecutionContext, config: SamplingConfig, store: StoreResource,
    registry: RegistryResource, compute: ComputeBackend, settings: PipelineSettings,
) -> dg.MaterializeResult:
    spec = spec_from_config("backfill", config)
    profile = sampling_profile(spec)
    rows = catalog_rows_for_partitions(store, context.partition_keys)
    tasks = build.sampling_tasks(rows, profile.key())
    result = run_on_backend(context, STAGE_SAMPLED, tasks, profile.key(), profile.to_json(), store, registry,
                            compute, "backfill")
    missing = len(context.partition_keys) - len(rows)
    if result.failed or missing:
        raise dg.Failure(f"{len(result.failed)} scenes failed, {missing} are not in the catalog",
                         metadata={"failed": dg.MetadataValue.json(result.failed)})
    return dg.MaterializeResult(metadata={
        "profile": profile.key(), "computed": len(result.computed), "cached": len(result.cached),
        **plan_metadata(result, profile, settings),
    })


def remove_stale_staging(store: StoreResource, profile_key: str) -> dict:
    """Remove what killed builds left staged in the profile's dataroot (local store; scene folders
    one log deep, parts at the top) and say how much was reclaimed."""
    root = store.store().local_path(sampled_root_key(profile_key))
    if root is None or not root.is_dir():
        return {}
    removed = remove_leftovers(root, max_depth=1)
    return {"leftovers_removed": len(removed), "leftover_bytes_reclaimed": sum(item.bytes for item in removed)}


def stage_record(
    stage: str, cache_key: str, result, run_id: str, quality: dict | None = None, meter=None, gpu: bool = False,
) -> StageRecord:
    """meter: the cost.ChunkMeter the stage ran its chunks through (its Batch job seconds)."""
    return StageRecord(
        stage=stage, cache_key=cache_key, cached=len(result.cached), computed=len(result.computed),
        failed=dict(result.failed), chunks=result.chunks, wall_s=round(result.wall_s, 3),
        seconds_per_scene=result.seconds_per_scene, run_id=run_id, quality=quality, recovered=len(result.recovered),
        frames=sum(o.frames for o in result.computed), worker_s=round(sum(o.seconds for o in result.computed), 3),
        job_s=round(meter.job_s, 3) if meter is not None else 0.0, gpu=gpu,
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dataset_plan],
    group_name="dataset",
    description="Sampling: every planned scene not cached for the dataset's sampling profile, in "
    "chunks on the compute backend; one sampled_frames materialization per newly computed scene.",
)
def dataset_frames(
    context: dg.AssetExecutionContext, store: StoreResource, registry: RegistryResource,
    compute: ComputeBackend, settings: PipelineSettings,
) -> dg.MaterializeResult:
    plan = held_plan(context, store)
    profile = sampling_profile(parse_spec(plan.spec))
    reclaimed = remove_stale_staging(store, profile.key())
    tasks = build.sampling_tasks(catalog_rows(store, plan.scene_ids), profile.key())
    meter = metered(compute)
    result = run_on_backend(context, STAGE_SAMPLED, tasks, profile.key(), profile.to_json(), store, registry,
                            meter, plan.name)
    record_scene_materializations(context, sampled_frames.key, result, "frames")
    write_record(store.store(), stage_record_key(plan.name, STAGE_SAMPLED),
                 stage_record(STAGE_SAMPLED, profile.key(), result, context.run.run_id, meter=meter))
    if not result.ok:
        reasons = "\n".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:10])
        raise dg.Failure(f"no scene could be sampled:\n{reasons}", metadata={"failed": dg.MetadataValue.json(result.failed)})
    return dg.MaterializeResult(metadata={
        "profile": profile.key(), "cached_scenes": len(result.cached), "computed_scenes": len(result.computed),
        "recovered_scenes": len(result.recovered), **reclaimed,
        "failed_scenes": dg.MetadataValue.json(result.failed), "sampling_wall_s": round(result.wall_s, 3),
        **seconds_metadata("sampling_s_per_scene", result),
        **plan_metadata(result, profile, settings, plan.estimate),
    })


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dataset_frames],
    group_name="dataset",
    description="Autolabel: 3D boxes for every sampled scene not cached for the model version, on the "
    "compute backend (a GPU for CUDA models), scored against ground truth where the logs have it; "
    "does nothing when the spec does not auto-label.",
)
def dataset_labels(
    context: dg.AssetExecutionContext, store: StoreResource, registry: RegistryResource,
    compute: ComputeBackend, models: AutolabelModels,
) -> dg.MaterializeResult:
    plan = held_plan(context, store)
    s = store.store()
    spec = parse_spec(plan.spec)
    key = stage_record_key(plan.name, STAGE_AUTOLABELED)
    if not spec.autolabel:
        write_record(s, key, StageRecord(STAGE_AUTOLABELED, "", 0, 0, {}, 0, 0.0, None, context.run.run_id, enabled=False))
        return dg.MaterializeResult(metadata={"autolabel": "off (the spec does not auto-label)"})
    sampled_record = build.read_stage(s, plan.name, STAGE_SAMPLED)
    ok = sorted(build.ok_scene_ids(plan, [sampled_record]))
    sampled = registry.registry().cached_scene_outputs(STAGE_SAMPLED, plan.profile_key, ok)
    tasks = build.sampling_tasks(catalog_rows(store, ok), plan.profile_key)
    meter = metered(compute)
    labelled = label_scenes(context, spec, list(sampled.values()), tasks, store, registry, meter, models)
    config, _, cache_key = label_cache(spec, models)
    previous = build.read_optional(s, key, StageRecord)
    unchanged = (previous is not None and previous.enabled and previous.cache_key == cache_key and not labelled.computed
                 and previous.cached + previous.computed == len(labelled.ok))
    quality = previous.quality if unchanged else score_labels(context, spec, labelled, sampled, store)
    write_record(s, key, stage_record(STAGE_AUTOLABELED, cache_key, labelled, context.run.run_id, quality, meter,
                                      gpu=needs_gpu(config)))
    return dg.MaterializeResult(metadata={
        "labels_cached": len(labelled.cached), "labels_computed": len(labelled.computed),
        "failed_scenes": dg.MetadataValue.json(labelled.failed),
        **seconds_metadata("label_s_per_scene", labelled), **quality_metadata(quality),
    })


def score_labels(context: dg.AssetExecutionContext, spec, labelled, sampled: dict, store: StoreResource) -> dict | None:
    """DetectionEval of the labels on a sample of the val scenes (None without ground truth);
    an error is a warning, never a failed build. sampled: the scenes' SceneOutputs by id."""
    labels = {o.scene_id: f"{o.path}/{LABELS_JSON}" for o in labelled.ok}
    outputs = [sampled[scene_id] for scene_id in sorted(labels) if scene_id in sampled]
    try:
        return build.autolabel_quality(spec, outputs, labels, store.store())
    except Exception as error:  # noqa: BLE001 - the labels are good without their score
        context.log.warning(f"auto-labels not scored: {type(error).__name__}: {error}")
        return None


def quality_metadata(metrics: dict | None) -> dict:
    """DetectionEval results as run metadata (nothing when there is no ground truth to score)."""
    if metrics is None:
        return {}
    rows = "\n".join(f"| {name} | {ap:.3f} |" for name, ap in sorted(metrics["per_class_AP"].items()))
    return {
        "autolabel_mAP_classes_present": round(metrics["mAP_present"], 4),
        "autolabel_mAP": round(metrics["mAP"], 4),
        "autolabel_NDS": round(metrics["NDS"], 4),
        **{f"autolabel_{name}": round(value, 4) for name, value in metrics["errors"].items() if not math.isnan(value)},
        "autolabel_AP_per_class": dg.MetadataValue.md("| class | AP |\n|---|---:|\n" + rows),
        "autolabel_scored_scenes": metrics["scenes"], "autolabel_scored_samples": metrics["samples"],
    }


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[dataset_labels],
    group_name="dataset",
    check_specs=[dg.AssetCheckSpec(name, asset="jadd_dataset", description=CHECK_DESCRIPTIONS[name]) for name in CHECKS],
    description="Merge: every part whose scenes, labels or settings changed is merged as its own task on "
    "the compute backend (tables only: frames stay where sampling wrote them), checked, and published "
    "with the dataset's index.",
)
def jadd_dataset(
    context: dg.AssetExecutionContext, store: StoreResource, compute: ComputeBackend, settings: PipelineSettings,
) -> dg.MaterializeResult:
    index = merge_dataset(context, store, compute, settings)
    s = store.store()
    return dg.MaterializeResult(
        metadata={
            "dataroot": dg.MetadataValue.path(index.dataroot), "versions": ", ".join(index.versions),
            "parts": len(index.parts), "rewritten_parts": index.rewritten_parts,
            "scenes": index.scenes, "samples": index.samples, "images": index.images,
            "splits": dg.MetadataValue.json(index.splits), "failed_scenes": dg.MetadataValue.json(index.failed),
            "merge_wall_s": index.merge_wall_s, **preview_metadata(context, s, index.preview),
        },
        check_results=[
            dg.AssetCheckResult(check_name=name, passed=not index.checks.get(field),
                                metadata={"problems": "\n".join(index.checks.get(field, [])[:50])})
            for name, field in CHECKS.items()
        ],
    )


def merge_dataset(context, store: StoreResource, compute: ComputeBackend, settings: PipelineSettings):
    """Merge the changed parts on the backend, then publish the index (build.publish_index)."""
    import time

    started = time.monotonic()
    plan = held_plan(context, store)
    s = store.store()
    spec = parse_spec(plan.spec)
    stages = [build.read_stage(s, plan.name, STAGE_SAMPLED), build.read_stage(s, plan.name, STAGE_AUTOLABELED)]
    labels = stages[1] if stages[1].enabled else None
    manifests, versions = build.part_manifests(plan, spec, build.ok_scene_ids(plan, stages), labels, s,
                                               context.run.run_id, settings.scene_length_s)
    context.log.info(f"merge: {len(versions)} parts, {len(manifests)} changed")
    tags = {"jadd:dataset": plan.name, "jadd:dagster_run_id": context.run.run_id, "jadd:stage": STAGE_MERGED}
    meter = metered(compute)
    results = run_whole_chunks(
        manifests, s, lambda st, keys, on_done: meter.run_chunks(context, st, keys, stage=STAGE_MERGED, tags=tags, on_done=on_done),
        context.run.run_id, context.log.info,
    )
    failed = {chunk: r["error"] for chunk, r in results.items() if r["status"] != "ok"}
    if failed:
        raise dg.Failure("parts failed to merge:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items()))
    parts = build.read_parts(s, plan, versions)
    if not any(p.scenes for p in parts):
        reasons = "\n".join(f"{k}: {v}" for p in parts for k, v in sorted(p.failed.items())[:10])
        raise dg.Failure(f"no scene could be merged:\n{reasons}")
    return build.publish_index(
        s, plan, parts, stages, context.run.run_id, len(manifests), time.monotonic() - started,
        merged_scenes=sum(len(m.scenes) for m in manifests), merge_worker_s=sum(r.get("seconds") or 0.0 for r in results.values()),
        merge_job_s=meter.job_s,
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[jadd_dataset],
    group_name="dataset",
    description="DB update: the published dataset recorded in the registry.",
)
def dataset_registry(
    context: dg.AssetExecutionContext, store: StoreResource, registry: RegistryResource, settings: PipelineSettings,
) -> dg.MaterializeResult:
    from jadd_dagster.planning import settings_table
    from jadd_dagster.registry import DatasetEntry, safe_url, utcnow

    plan = held_plan(context, store)
    s = store.store()
    summary = build.build_summary(s, context.partition_key, settings_table(settings))
    status = "partial" if summary["failed_scenes"] else "complete"
    cost = {"estimate": plan.estimate.get("breakdown"), "actual": summary["actual_cost"], "scenes": summary["scenes"],
            "measured": build.actual_work_rates(s, context.partition_key)}
    registry.registry().record_dataset(DatasetEntry(
        name=summary["name"], spec_hash=summary["spec_hash"], spec=plan.spec, status=status,
        dataroot=summary["dataroot"], versions=summary["versions"], scenes=summary["scenes"],
        samples=summary["samples"], images=summary["images"], failed_scenes=len(summary["failed_scenes"]),
        dagster_run_id=context.run.run_id, wall_s=summary["sampling_wall_s"] + summary["merge_wall_s"],
        created_at=utcnow(), estimate_usd=plan.estimate.get("usd"), actual_usd=summary["actual_cost"]["usd"], cost=cost,
        launched_by=launched_by(context.run),
    ))
    dataset_lock.release(s, context.partition_key, context.run.run_id)
    return dg.MaterializeResult(metadata={
        "status": status, "registry": safe_url(registry.url), **actual_cost_metadata(plan.estimate, cost, summary["scenes"]),
    })
