"""Auto-labels per scene, cached per model version and sampled inputs, and backfillable."""

import dagster as dg

from jadd_dagster import build
from jadd_dagster.autolabel.models import model_key, needs_gpu, pinned_model
from jadd_dagster.compute.dispatch import StageResult
from jadd_dagster.defs.compute_resources import ComputeBackend
from jadd_dagster.defs.config import AutolabelConfig, spec_from_config
from jadd_dagster.defs.log_assets import catalog_rows_for_partitions
from jadd_dagster.defs.partitions import scene_partitions
from jadd_dagster.defs.resources import AutolabelModels, RegistryResource, StoreResource
from jadd_dagster.defs.stages import record_scene_materializations, run_on_backend, seconds_metadata
from jadd_dagster.registry import SceneOutput
from jadd_dagster.spec import DatasetSpec

SAMPLED_FRAMES = dg.AssetKey("sampled_frames")  # defined with the dataset stages, which import this module


def label_cache(spec: DatasetSpec, models: AutolabelModels) -> tuple[dict, str, str]:
    """The spec's model configuration with its file's sha256 pinned (workers refuse a file replaced
    since), its model key, and the labels' cache key (model key @ sampling profile)."""
    config = pinned_model(models.get(spec.autolabel_model))
    mkey = model_key(spec.autolabel_model, config)
    return config, mkey, build.label_key(mkey, build.sampling_profile(spec).key())


def label_scenes(
    context: dg.AssetExecutionContext, spec: DatasetSpec, sampled: list[SceneOutput], tasks, store: StoreResource,
    registry: RegistryResource, compute: ComputeBackend, models: AutolabelModels, record: bool = True,
) -> StageResult:
    """Auto-label the sampled scenes whose labels for this model version are not cached."""
    name = spec.autolabel_model
    config, mkey, cache_key = label_cache(spec, models)
    profile_key = build.sampling_profile(spec).key()
    result = run_on_backend(
        context, build.STAGE_AUTOLABELED, build.autolabel_tasks(sampled, tasks, mkey, profile_key),
        cache_key, {"model_name": name, "model": config, "model_key": mkey},
        store, registry, compute, spec.name, needs_gpu=needs_gpu(config),
    )
    if record:
        record_scene_materializations(context, autolabels.key, result, "boxes")
    return result


def sample_missing(
    context: dg.AssetExecutionContext, tasks, profile, store: StoreResource, registry: RegistryResource,
    compute: ComputeBackend,
) -> StageResult | None:
    """Sample the scenes of tasks that are not sampled with this profile yet (None when all are),
    recording each as a sampled_frames materialization: a backfill of autolabels alone needs no
    other selection."""
    cached = registry.registry().cached_scene_outputs(build.STAGE_SAMPLED, profile.key(), [t.scene_id for t in tasks])
    missing = [t for t in tasks if t.scene_id not in cached]
    if not missing:
        return None
    context.log.info(f"{len(missing)} scenes are not sampled with profile {profile.key()} yet: sampling them first")
    result = run_on_backend(context, build.STAGE_SAMPLED, missing, profile.key(), profile.to_json(), store, registry,
                            compute, "backfill")
    record_scene_materializations(context, SAMPLED_FRAMES, result, "frames")
    return result


@dg.asset(
    partitions_def=scene_partitions,
    deps=["sampled_frames"],
    group_name="scenes",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="3D boxes of one scene from the auto-label model, per model version and sampled inputs; "
    "cached. Backfill it after a model upgrade to relabel every scene; scenes not yet sampled with the "
    "config's sampling settings are sampled first (and recorded as sampled_frames).",
)
def autolabels(
    context: dg.AssetExecutionContext, config: AutolabelConfig, store: StoreResource,
    registry: RegistryResource, compute: ComputeBackend, models: AutolabelModels,
) -> dg.MaterializeResult:
    spec = spec_from_config("backfill", config, what="auto-label config", autolabel=True)
    profile = build.sampling_profile(spec)
    rows = catalog_rows_for_partitions(store, context.partition_keys)
    tasks = build.sampling_tasks(rows, profile.key())
    sampling = sample_missing(context, tasks, profile, store, registry, compute)
    sampled = registry.registry().cached_scene_outputs(build.STAGE_SAMPLED, profile.key(), [t.scene_id for t in tasks])
    result = label_scenes(context, spec, list(sampled.values()), tasks, store, registry, compute, models, record=False)
    not_in_catalog = len(context.partition_keys) - len(rows)
    if result.failed or not_in_catalog or (sampling and sampling.failed):
        raise dg.Failure(
            f"{len(result.failed)} scenes failed to label, {len(sampling.failed) if sampling else 0} failed to sample, "
            f"{not_in_catalog} are not in the scene catalog (materialize scene_index and scene_catalog for their logs)",
            metadata={"failed": dg.MetadataValue.json({**(sampling.failed if sampling else {}), **result.failed})},
        )
    return dg.MaterializeResult(metadata={
        "model": model_key(spec.autolabel_model, models.get(spec.autolabel_model)),
        "computed": len(result.computed), "cached": len(result.cached),
        "boxes": sum(o.frames for o in result.ok), "sampled_first": len(sampling.computed) if sampling else 0,
        **seconds_metadata("label_s_per_scene", result),
    })
