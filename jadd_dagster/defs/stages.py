"""Running a per-scene stage on the compute backend from an asset, and what the run records."""

import base64
from pathlib import Path

import dagster as dg

from jadd_dagster import dataset_lock
from jadd_dagster.compute.chunks import SceneTask
from jadd_dagster.compute.dispatch import StageResult, run_stage
from jadd_dagster.defs.bookkeeping import record_materializations
from jadd_dagster.defs.compute_resources import ComputeBackend
from jadd_dagster.defs.partitions import scene_partition_key
from jadd_dagster.defs.resources import PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.planning import settings_table
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.scene_record import parse_scene_id


def hold_dataset(context: dg.AssetExecutionContext, store: StoreResource, name: str) -> None:
    """Take (or keep) the dataset's build lock for this run (dataset_lock.py); a dg.Failure naming
    the run that holds it when another run still going is building the same dataset."""
    def run_is_live(run_id: str) -> bool:
        run = context.instance.get_run_by_id(run_id)
        return run is not None and not run.is_finished

    try:
        dataset_lock.acquire(store.store(), name, context.run.run_id, run_is_live)
    except dataset_lock.DatasetBusy as busy:
        raise dg.Failure(str(busy)) from None


def run_on_backend(
    context: dg.AssetExecutionContext, stage: str, tasks: list[SceneTask], cache_key: str, settings: dict,
    store: StoreResource, registry: RegistryResource, compute: ComputeBackend, dataset: str,
    needs_gpu: bool = False,
) -> StageResult:
    """Run a stage for the tasks not cached under cache_key, on the compute backend, logging progress."""
    run_id = context.run.run_id
    tags = {"jadd:dataset": dataset, "jadd:dagster_run_id": run_id, "jadd:stage": stage}  # cost allocation

    def run_chunks(s, keys, on_done):
        return compute.run_chunks(context, s, keys, stage=stage, tags=tags, needs_gpu=needs_gpu, on_done=on_done)

    return run_stage(
        tasks, stage, cache_key, settings, store.store(), registry.registry(), run_chunks,
        run_id, compute.target_chunk_s, on_progress=context.log.info,
    )


def record_scene_materializations(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, result: StageResult, count_name: str
) -> int:
    """One materialization of a per-scene asset per newly computed (or recovered) scene, so the UI
    shows it as done; written in batches (≈0.6 ms a scene on PostgreSQL, see bench/RESULTS.md)."""

    def items():
        for output in result.newly_recorded:
            log_id, index = parse_scene_id(output.scene_id)
            metadata = {"cache_key": output.profile, count_name: output.frames, "seconds": output.seconds,
                        "path": output.path}
            yield scene_partition_key(log_id, index), metadata

    return record_materializations(context, asset_key, items())


def seconds_metadata(name: str, result: StageResult) -> dict:
    """A stage's measured worker seconds per newly computed scene (nothing when all were cached)."""
    seconds = result.seconds_per_scene
    return {} if seconds is None else {name: round(seconds, 3)}


def plan_metadata(result: StageResult, profile: SamplingProfile, settings: PipelineSettings, estimate=None) -> dict:
    """The Split plan as the run shows it: chunks, scenes and expected CPU time, the first chunks.
    A scene second's CPU seconds: the dataset plan's estimate (its frame sizes, each camera's rate
    and copied JPEGs, and the measured calibration) where there is one, else the cost table's
    figure for the profile's rate and undistortion, every channel at the sweep rate."""
    work = (estimate or {}).get("work") or {}
    if work.get("frames"):
        per_frame = work["sampling_s"] / work["frames"]
    else:
        per_frame = settings_table(settings).seconds_per_frame(profile.undistort, profile.sweep_hz)
    if work.get("frames") and work.get("sampled_scene_s"):
        per_scene_s = work["sampling_s"] / work["sampled_scene_s"]
    else:  # no estimate, or a plan made before it recorded its scene seconds
        per_scene_s = profile.sweep_hz * len(profile.channels) * per_frame

    def cpu_s(chunk: dict) -> float:
        return chunk["scene_s"] * per_scene_s

    rows = [f"| {c['chunk']} | {c['log']} | {c['scenes']} | {c['scene_s']:.0f} | {cpu_s(c):.0f} |" for c in result.plan[:50]]
    table = "| chunk | log | scenes | scene s | expected CPU s |\n|---|---|---:|---:|---:|\n" + "\n".join(rows)
    return {
        "chunks": result.chunks,
        "scenes_computed_in_chunks": sum(c["scenes"] for c in result.plan),
        "expected_cpu_s": round(sum(cpu_s(c) for c in result.plan), 1),
        "expected_cpu_s_per_frame": round(per_frame, 5),
        "split_plan": dg.MetadataValue.md(table),
    }


PREVIEW_ALT = "a keyframe with its boxes"
PREVIEW_LOG_FOLDER = "jadd-preview"


def image_metadata(
    context: dg.AssetExecutionContext, name: str, data: bytes, extension: str, mime: str, folder: str, alt: str,
) -> dict:
    """An image shown in the UI's metadata tables without a click: metadata `name` (Markdown) and,
    where the file is written, `<name>_file`.

    Dagster's UI renders Markdown metadata in place only when it is under 1,000 characters (longer
    ones hide behind "[Show Markdown]"), so the image comes by URL. The webserver serves the files
    of the instance's local compute-log folder at /logs/<folders…>/<name>/<extension>: the image
    is written there as <folder>/<partition>/<run id>.<extension> and the Markdown points at it.
    With another compute-log manager (S3, …), or a webserver under a path prefix, the image is
    embedded in the Markdown instead, behind "[Show Markdown]"."""
    manager = context.instance.compute_log_manager
    if type(manager).__name__ == "LocalComputeLogManager" and hasattr(manager, "get_captured_local_path"):
        log_key = [folder, context.partition_key, context.run.run_id]
        path = Path(manager.get_captured_local_path(log_key, extension))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {name: dg.MetadataValue.md(f"![{alt}](/logs/{'/'.join(log_key)}/{extension})"),
                f"{name}_file": dg.MetadataValue.path(str(path))}
    encoded = base64.b64encode(data).decode("ascii")
    return {name: dg.MetadataValue.md(f"![{alt}](data:{mime};base64,{encoded})")}


def preview_metadata(context: dg.AssetExecutionContext, store, key: str) -> dict:
    """The dataset's preview (a keyframe with its boxes, drawn by the devkit), shown in the UI
    without a click (image_metadata), written as jadd-preview/<dataset>/<run id>.jpg. store: the
    ObjectStore holding key."""
    if not key:
        return {}
    return image_metadata(context, "preview", store.get_bytes(key), "jpg", "image/jpeg", PREVIEW_LOG_FOLDER, PREVIEW_ALT)
