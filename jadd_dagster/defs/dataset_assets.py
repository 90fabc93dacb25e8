"""Assets of a dataset build: curation, per-scene sampling, the nuScenes dataset and its registration."""

import base64
import math

import dagster as dg

from jadd_dagster import build
from jadd_dagster.cost import estimate_sampling_cost
from jadd_dagster.curation import FilterError, select_scenes
from jadd_dagster.defs.log_assets import catalog_rows_for_partitions, read_catalog, scene_catalog
from jadd_dagster.autolabel.models import LABELS_JSON
from jadd_dagster.defs.autolabel_assets import autolabels, label_scenes
from jadd_dagster.compute.dispatch import StageResult
from jadd_dagster.defs.compute_resources import ComputeBackend
from jadd_dagster.defs.config import DatasetConfig, SamplingConfig, spec_from_config
from jadd_dagster.defs.partitions import dataset_partitions, scene_partitions
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.defs.stages import plan_metadata, record_scene_materializations, run_on_backend, seconds_metadata
from jadd_dagster.scene_record import SCENE_JSON
from jadd_dagster.spec import parse_spec

CHECK_FRAME_COUNTS = "frame_counts_match_rates"
CHECK_NUSCENES = "nuscenes_invariants_hold"
CHECK_DEVKIT = "devkit_loads_every_version"


def curation_key(name: str) -> str:
    return f"{build.dataset_key(name)}/curation.json"


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[scene_catalog],
    group_name="dataset",
    description="Pre-process and curation: the scenes a dataset spec selects, with the cost estimate.",
)
def curated_scenes(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: StoreResource, settings: PipelineSettings
) -> dg.MaterializeResult:
    spec = spec_from_config(context.partition_key, config)
    try:
        curation = select_scenes(read_catalog(store), spec)
    except FilterError as error:
        raise dg.Failure(str(error)) from None
    scenes = curation.scenes
    cost = estimate_sampling_cost(
        float(scenes["duration_s"].sum()), len(spec.channels), spec.sweep_hz,
        settings.cpu_seconds_per_frame, settings.usd_per_cpu_hour,
    )
    if spec.budget_usd is not None and cost.usd > spec.budget_usd:
        raise dg.Failure(f"estimated cost ${cost.usd:.2f} exceeds the budget ${spec.budget_usd:.2f}; "
                         "narrow the filter, lower max_scenes or raise budget_usd")
    if scenes.empty:
        raise dg.Failure(f"the filter selects no scenes: {spec.scene_filter!r}")
    store.store().write_json(curation_key(spec.name), {
        "spec": spec.model_dump(), "spec_hash": spec.spec_hash(), "scene_ids": scenes["scene_id"].tolist(),
    })
    return dg.MaterializeResult(metadata={
        "scenes": len(scenes),
        "hours": round(float(scenes["duration_s"].sum()) / 3600, 3),
        "estimated_frames": cost.frames,
        "estimated_cost_usd": round(cost.usd, 4),
        "spec_hash": spec.spec_hash(),
        "missing_includes": ", ".join(curation.missing_includes),
        "dropped_by_max_scenes": curation.dropped_by_limit,
        "preview": dg.MetadataValue.md(scenes.head(20).round(2).to_markdown(index=False)),
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
    profile = build.sampling_profile(spec)
    rows = catalog_rows_for_partitions(store, context.partition_keys)
    tasks = build.sampling_tasks(rows, profile.key())
    result = run_on_backend(context, build.STAGE_SAMPLED, tasks, profile.key(), profile.to_json(), store, registry,
                            compute, "backfill", SCENE_JSON)
    missing = len(context.partition_keys) - len(rows)
    if result.failed or missing:
        raise dg.Failure(f"{len(result.failed)} scenes failed, {missing} are not in the catalog",
                         metadata={"failed": dg.MetadataValue.json(result.failed)})
    return dg.MaterializeResult(metadata={
        "profile": profile.key(), "computed": len(result.computed), "cached": len(result.cached),
        **plan_metadata(result, profile.sweep_hz * len(profile.channels), settings),
    })


def label_dataset(
    context: dg.AssetExecutionContext, spec, sampled: StageResult, tasks, store: StoreResource,
    registry: RegistryResource, compute: ComputeBackend, models: AutolabelModels,
) -> tuple[StageResult, dict[str, str], dict, dict]:
    """Auto-label the sampled scenes and score the labels: the stage's result, the labels' keys by
    scene id, the run metadata and the build summary's 'autolabel' section."""
    labelled = label_scenes(context, spec, sampled.ok, tasks, store, registry, compute, models)
    labels = {o.scene_id: f"{o.path}/{LABELS_JSON}" for o in labelled.ok}
    outputs = [o for o in sampled.ok if o.scene_id in labels]
    try:
        quality = build.autolabel_quality(spec, outputs, labels, store.store())
    except Exception as error:  # noqa: BLE001 - the labels are good without their score
        context.log.warning(f"auto-labels not scored: {type(error).__name__}: {error}")
        quality = None
    metadata = {"labels_cached": len(labelled.cached), "labels_computed": len(labelled.computed),
                **seconds_metadata("label_s_per_scene", labelled), **quality_metadata(quality)}
    summary = {"model": spec.autolabel_model, "cached": len(labelled.cached), "computed": len(labelled.computed),
               "seconds_per_scene": labelled.seconds_per_scene, "quality": quality}
    return labelled, labels, metadata, summary


def preview_metadata(store, key: str) -> dict:
    """The dataset's preview (a keyframe with its boxes, drawn by the devkit) shown inline in the UI."""
    if not key:
        return {}
    image = base64.b64encode(store.get_bytes(key)).decode("ascii")
    return {"preview": dg.MetadataValue.md(f"![a keyframe with its boxes](data:image/jpeg;base64,{image})")}


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
    deps=[
        curated_scenes,
        dg.AssetDep(sampled_frames, partition_mapping=dg.AllPartitionMapping()),
        dg.AssetDep(autolabels, partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="dataset",
    check_specs=[dg.AssetCheckSpec(name, asset="jadd_dataset") for name in (CHECK_FRAME_COUNTS, CHECK_NUSCENES, CHECK_DEVKIT)],
    description="Split, sampling and auto-labelling of uncached scenes on the compute backend, Merge into nuScenes parts.",
)
def jadd_dataset(
    context: dg.AssetExecutionContext, store: StoreResource, registry: RegistryResource,
    compute: ComputeBackend, settings: PipelineSettings, models: AutolabelModels,
) -> dg.MaterializeResult:
    s = store.store()
    curation = s.read_json(curation_key(context.partition_key))
    spec = parse_spec(curation["spec"])
    profile = build.sampling_profile(spec)
    catalog = read_catalog(store)
    tasks = build.sampling_tasks(catalog[catalog["scene_id"].isin(curation["scene_ids"])], profile.key())
    result = run_on_backend(context, build.STAGE_SAMPLED, tasks, profile.key(), profile.to_json(), store, registry,
                            compute, spec.name, SCENE_JSON)
    record_scene_materializations(context, sampled_frames.key, result, "frames")
    failed, outputs, labels, label_metadata, label_summary = dict(result.failed), result.ok, None, {}, {}
    if spec.autolabel:
        labelled, labels, label_metadata, label_summary = label_dataset(
            context, spec, result, tasks, store, registry, compute, models)
        failed.update(labelled.failed)
        outputs = [o for o in result.ok if o.scene_id in labels]
    if not outputs:
        reasons = "\n".join(f"{k}: {v}" for k, v in sorted(failed.items())[:10])
        raise dg.Failure(f"no scene could be built:\n{reasons}", metadata={"failed": dg.MetadataValue.json(failed)})
    summary, checks = build.assemble_dataset(spec, outputs, s, context.run.run_id, settings.scene_length_s, labels=labels)
    summary.failed_scenes.update(failed)
    summary.cached_scenes, summary.computed_scenes = len(result.cached), len(result.computed)
    summary.sampling_wall_s = round(result.wall_s, 3)
    summary.autolabel = label_summary
    s.write_json(f"{build.dataset_key(spec.name)}/build.json", summary.__dict__)
    return dg.MaterializeResult(
        metadata={
            "dataroot": dg.MetadataValue.path(summary.dataroot),
            "versions": ", ".join(summary.versions),
            "scenes": summary.scenes, "samples": summary.samples, "images": summary.images,
            "cached_scenes": summary.cached_scenes, "computed_scenes": summary.computed_scenes,
            **seconds_metadata("sampling_s_per_scene", result), **label_metadata,
            **plan_metadata(result, profile.sweep_hz * len(profile.channels), settings),
            **preview_metadata(s, summary.preview),
            "failed_scenes": dg.MetadataValue.json(summary.failed_scenes),
            "sampling_wall_s": summary.sampling_wall_s, "merge_wall_s": summary.merge_wall_s,
        },
        check_results=[
            dg.AssetCheckResult(check_name=name, passed=not problems, metadata={"problems": "\n".join(problems[:50])})
            for name, problems in ((CHECK_FRAME_COUNTS, checks.frame_counts),
                                   (CHECK_NUSCENES, checks.nuscenes_invariants), (CHECK_DEVKIT, checks.devkit))
        ],
    )


@dg.asset(
    partitions_def=dataset_partitions,
    deps=[jadd_dataset],
    group_name="dataset",
    description="DB update: the dataset build recorded in the registry.",
)
def dataset_registry(context: dg.AssetExecutionContext, store: StoreResource, registry: RegistryResource) -> dg.MaterializeResult:
    from jadd_dagster.registry import DatasetEntry, safe_url, utcnow

    s = store.store()
    summary = s.read_json(f"{build.dataset_key(context.partition_key)}/build.json")
    curation = s.read_json(curation_key(context.partition_key))
    registry.registry().record_dataset(DatasetEntry(
        name=summary["name"], spec_hash=summary["spec_hash"], spec=curation["spec"],
        status="partial" if summary["failed_scenes"] else "complete", dataroot=summary["dataroot"],
        versions=summary["versions"], scenes=summary["scenes"], samples=summary["samples"],
        images=summary["images"], failed_scenes=len(summary["failed_scenes"]),
        dagster_run_id=context.run.run_id,
        wall_s=summary["sampling_wall_s"] + summary["merge_wall_s"], created_at=utcnow(),
    ))
    return dg.MaterializeResult(metadata={"status": "partial" if summary["failed_scenes"] else "complete",
                                          "registry": safe_url(registry.url)})
