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


@dg.asset(
    partitions_def=scene_partitions,
    deps=["sampled_frames"],
    group_name="scenes",
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="3D boxes of one scene from the auto-label model, per model version and sampled inputs; "
    "cached. Backfill it after a model upgrade to relabel every scene.",
)
def autolabels(
    context: dg.AssetExecutionContext, config: AutolabelConfig, store: StoreResource,
    registry: RegistryResource, compute: ComputeBackend, models: AutolabelModels,
) -> dg.MaterializeResult:
    spec = spec_from_config("backfill", config, what="auto-label config", autolabel=True)
    profile = build.sampling_profile(spec)
    tasks = build.sampling_tasks(catalog_rows_for_partitions(store, context.partition_keys), profile.key())
    sampled = registry.registry().cached_scene_outputs(build.STAGE_SAMPLED, profile.key(), [t.scene_id for t in tasks])
    missing = sorted({t.scene_id for t in tasks} - set(sampled))
    result = label_scenes(context, spec, list(sampled.values()), tasks, store, registry, compute, models, record=False)
    if result.failed or missing:
        raise dg.Failure(
            f"{len(result.failed)} scenes failed to label; {len(missing)} are not sampled with this profile yet "
            "(materialize sampled_frames for them first)",
            metadata={"failed": dg.MetadataValue.json(result.failed), "not_sampled": dg.MetadataValue.json(missing)},
        )
    return dg.MaterializeResult(metadata={
        "model": model_key(spec.autolabel_model, models.get(spec.autolabel_model)),
        "computed": len(result.computed), "cached": len(result.cached),
        "boxes": sum(o.frames for o in result.ok),
        **seconds_metadata("label_s_per_scene", result),
    })
