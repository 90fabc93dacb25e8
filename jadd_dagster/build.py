"""The dataset build's steps between the plan and the registry: tasks, part merges, the index.

Plain functions; the Dagster assets in defs/dataset_assets.py call them. Store keys: layout.py;
the records passed between stages: records.py.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.cost import BuildWork, CostTable, bytes_per_frame, price
from jadd_dagster.layout import (
    PART_RECORD, STAGE_AUTOLABELED, STAGE_MERGED, STAGE_SAMPLED, index_key, part_key, plan_key, preview_key,
    run_stage_key, sampled_root_key, scene_output_key, scene_table_key, stage_record_key,
)
from jadd_dagster.logs.format import LIDAR_CHANNELS
from jadd_dagster.nuscenes.writer import VERSION_PREFIX
from jadd_dagster.part_merge import part_version
from jadd_dagster.planning import sampling_profile  # noqa: F401 - re-exported for the assets
from jadd_dagster.records import (
    DatasetIndex, DatasetPlan, IndexPart, PartRecord, StageRecord, read_record, write_record,
)
from jadd_dagster.registry import SceneOutput
from jadd_dagster.scene_record import SCENE_JSON, SceneRecord, parse_scene_id
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import ObjectStore, write_parquet

logger = logging.getLogger(__name__)

__all__ = ["STAGE_AUTOLABELED", "STAGE_MERGED", "STAGE_SAMPLED", "sampling_profile", "scene_output_key"]


def sampling_tasks(scenes: pd.DataFrame, profile_key: str) -> list[SceneTask]:
    """One task per catalog row, pointing at its log and at the profile's output folder."""
    return [
        SceneTask(
            scene_id=row.scene_id,
            log_id=row.log_id,
            scene_index=int(row.scene_index),
            start_time_us=int(row.start_time_us),
            end_time_us=int(row.end_time_us),
            output_key=scene_output_key(STAGE_SAMPLED, profile_key, row.log_id, int(row.scene_index)),
        )
        for row in scenes.itertuples(index=False)
    ]


def label_key(model_key: str, profile_key: str) -> str:
    """Cache key of auto-labels: the model version and the sampled inputs it labelled."""
    return f"{model_key}@{profile_key}"


def autolabel_tasks(sampled: list[SceneOutput], tasks: list[SceneTask], model_key: str, profile_key: str) -> list[SceneTask]:
    """Label tasks for the scenes that were sampled: each reads its sampled output."""
    by_id = {t.scene_id: t for t in tasks}
    cache_key = f"{model_key}/{profile_key}"
    return [
        replace(task, input_key=o.path, output_key=scene_output_key(STAGE_AUTOLABELED, cache_key, task.log_id, task.scene_index))
        for o in sampled
        if (task := by_id.get(o.scene_id)) is not None
    ]


def read_optional(store: ObjectStore, key: str, cls):
    """The record at key, or None when there is none yet."""
    return read_record(store, key, cls) if store.exists(key) else None


def ok_scene_ids(plan: DatasetPlan, stages: list[StageRecord]) -> set[str]:
    """The plan's scenes that every enabled per-scene stage produced."""
    failed = {scene_id for stage in stages if stage.enabled for scene_id in stage.failed}
    return set(plan.scene_ids) - failed


def labels_key(labels: StageRecord, scene_id: str) -> str:
    """Where a scene's labels.json is, for the label stage's cache key (model@profile)."""
    model, profile = labels.cache_key.split("@", 1)
    log_id, index = parse_scene_id(scene_id)
    return f"{scene_output_key(STAGE_AUTOLABELED, f'{model}/{profile}', log_id, index)}/labels.json"


def part_manifests(
    plan: DatasetPlan, spec: DatasetSpec, ok: set[str], labels: StageRecord | None, store: ObjectStore,
    run_id: str, scene_length_s: float,
) -> tuple[list[ChunkManifest], list[str]]:
    """One merge manifest per part whose content changed; and the versions of every part (the
    unchanged ones are in the store already, their part.json proves it)."""
    manifests, versions = [], []
    results = f"{run_stage_key(run_id, STAGE_MERGED)}/results"
    for part in plan.parts:
        ids = [s for s in part.scene_ids if s in ok]
        if not ids:
            continue
        forced = {s: plan.forced_splits[s] for s in ids if s in plan.forced_splits}
        content = {"scenes": ids, "profile": plan.profile_key, "labels": labels.cache_key if labels else None,
                   "val_fraction": spec.val_fraction, "forced": forced, "can_bus": spec.include_can_bus}
        version = part_version(plan.name, part.part, content)
        versions.append(version)
        if store.exists(f"{part_key(plan.profile_key, version)}/{PART_RECORD}"):
            continue
        tasks = []
        for scene_id in ids:
            log_id, index = parse_scene_id(scene_id)
            tasks.append(SceneTask(scene_id, log_id, index, 0, 0, input_key=scene_output_key(
                STAGE_SAMPLED, plan.profile_key, log_id, index), output_key=labels_key(labels, scene_id) if labels else ""))
        settings = {"name": plan.name, "part": part.part, "version": version, "profile_key": plan.profile_key,
                    "val_fraction": spec.val_fraction, "forced_splits": forced, "include_can_bus": spec.include_can_bus,
                    "scene_length_s": scene_length_s, "labelled": labels is not None, "preview": part.part == plan.parts[0].part}
        manifests.append(ChunkManifest(f"{STAGE_MERGED}-{part.part:04d}", STAGE_MERGED, settings, store.url, results, tasks))
    return manifests, versions


def stale_versions(store: ObjectStore, name: str, root_key: str, keep: set[str]) -> list[str]:
    """The dataset's version folders in the dataroot at root_key that are not in keep."""
    prefix = f"{VERSION_PREFIX}{name}-part"
    return [
        f"{root_key}/{child}" for child in store.list_children(root_key)
        if child.startswith(prefix) and child[len(prefix):].split("-")[0].isdigit() and child not in keep
    ]


def publish_index(
    store: ObjectStore, plan: DatasetPlan, parts: list[PartRecord], stages: list[StageRecord], run_id: str,
    rewritten: int, merge_wall_s: float, merged_scenes: int = 0, merge_worker_s: float = 0.0, merge_job_s: float = 0.0,
) -> DatasetIndex:
    """Write scenes.parquet, then index.json (readers switch to the new parts at that moment), then
    delete the version folders that no index lists any more. A part that merged no scene is left
    out of the index; its failures are reported."""
    previous = read_optional(store, index_key(plan.name), DatasetIndex)
    failed = {k: v for stage in stages if stage.enabled for k, v in stage.failed.items()}
    for p in parts:
        failed.update(p.failed)
    parts = [p for p in parts if p.scenes]
    rows = [(scene_id, p.part, p.version, name, p.splits[scene_id]) for p in parts for scene_id, name in p.scene_names.items()]
    table = pd.DataFrame(rows, columns=["scene_id", "part", "version", "scene_name", "split"])
    write_parquet(store, scene_table_key(plan.name), table)
    checks: dict[str, list[str]] = {}
    for p in parts:
        for name, problems in p.checks.items():
            checks.setdefault(name, []).extend(problems)
    splits = table["split"].value_counts().to_dict() if len(table) else {}
    index = DatasetIndex(
        name=plan.name, spec_hash=plan.spec_hash, dataroot=store.describe(sampled_root_key(plan.profile_key)),
        dataroot_key=sampled_root_key(plan.profile_key),
        parts=[IndexPart(p.part, p.version, p.scenes, p.samples, p.images,
                         {s: sum(1 for v in p.splits.values() if v == s) for s in sorted(set(p.splits.values()))})
               for p in parts],
        scenes=sum(p.scenes for p in parts), samples=sum(p.samples for p in parts), images=sum(p.images for p in parts),
        splits={str(k): int(v) for k, v in splits.items()}, scene_table=scene_table_key(plan.name), run_id=run_id,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), failed=failed, checks=checks,
        rewritten_parts=rewritten, merge_wall_s=round(merge_wall_s, 3),
        preview=preview_key(plan.name) if store.exists(preview_key(plan.name)) else "",
        autolabel_quality=next((s.quality for s in stages if s.stage == STAGE_AUTOLABELED and s.enabled), None),
        merged_scenes=merged_scenes, merge_worker_s=round(merge_worker_s, 3), merge_job_s=round(merge_job_s, 3),
    )
    write_record(store, index_key(plan.name), index)
    # Readers of the previous index keep its parts until the next build; older ones go, in this
    # dataroot and in the previous build's (a spec whose sampling profile changed).
    keep = set(index.versions) | set(previous.versions if previous else [])
    roots = {index.dataroot_key} | ({previous.dataroot_key} if previous and previous.dataroot_key else set())
    for root in sorted(roots):
        for key in stale_versions(store, plan.name, root, keep):
            store.delete_prefix(key)
    return index


def read_parts(store: ObjectStore, plan: DatasetPlan, versions: list[str]) -> list[PartRecord]:
    return [read_record(store, f"{part_key(plan.profile_key, v)}/{PART_RECORD}", PartRecord) for v in versions]


def actual_work(store: ObjectStore, name: str, table: CostTable) -> BuildWork:
    """What the dataset's last build did, from its stage records and index, for cost.price: the
    seconds of AWS Batch jobs where the stage ran there, else those its workers measured."""
    plan = read_record(store, plan_key(name), DatasetPlan)
    index = read_record(store, index_key(name), DatasetIndex)
    sampled = read_record(store, stage_record_key(name, STAGE_SAMPLED), StageRecord)
    labels = read_optional(store, stage_record_key(name, STAGE_AUTOLABELED), StageRecord)
    spec = DatasetSpec.model_validate(plan.spec)
    labelled = labels if labels is not None and labels.enabled else None
    cameras = sum(1 for c in spec.channels if c not in LIDAR_CHANNELS)
    keyframe_images = int(round(plan.hours * 3600 / max(len(plan.scene_ids), 1) * spec.keyframe_hz)) * cameras

    def seconds(job_s: float, worker_s: float) -> tuple[float, str]:
        return (job_s, "AWS Batch job durations") if job_s > 0 else (worker_s, "seconds the workers measured")

    sampling_s, sampling_basis = seconds(sampled.job_s, sampled.worker_s)
    label_s, label_basis = seconds(labelled.job_s, labelled.worker_s) if labelled else (0.0, "")
    merge_s, merge_basis = seconds(index.merge_job_s, index.merge_worker_s)
    return BuildWork(
        frames=sampled.frames, sampled_scenes=sampled.computed, sampling_s=sampling_s,
        labelled_scenes=labelled.computed if labelled else 0,
        label_images=keyframe_images * (labelled.computed if labelled else 0),
        label_s=label_s, label_gpu=bool(labelled and labelled.gpu),
        merged_scenes=index.merged_scenes, merged_parts=index.rewritten_parts, merge_s=merge_s,
        channels=len(spec.channels), can_bus=spec.include_can_bus, bytes_per_frame=bytes_per_frame(spec.image_size, table),
        bases={"sampling": sampling_basis, "autolabel": label_basis, "merge": merge_basis},
    )


def actual_work_rates(store: ObjectStore, name: str) -> dict:
    """What the dataset's last build measured, for later estimates: the merge's seconds (AWS Batch
    job seconds where it ran there), scenes and parts, and its seconds a scene. Sampling and
    labelling rates are in the registry's scene outputs already."""
    index = read_record(store, index_key(name), DatasetIndex)
    seconds = index.merge_job_s or index.merge_worker_s
    if not (index.merged_scenes and seconds > 0):
        return {}
    return {"merge_s_per_scene": seconds / index.merged_scenes, "merge_s": seconds,
            "merged_scenes": index.merged_scenes, "merged_parts": index.rewritten_parts}


def build_summary(store: ObjectStore, name: str, table: CostTable | None = None) -> dict:
    """What a finished build produced, from its plan, stage records and index (summary.json);
    with a price table also what it cost (`actual_cost`: cost.CostBreakdown as JSON)."""
    plan = read_record(store, plan_key(name), DatasetPlan)
    index = read_record(store, index_key(name), DatasetIndex)
    sampled = read_record(store, stage_record_key(name, STAGE_SAMPLED), StageRecord)
    labels = read_optional(store, stage_record_key(name, STAGE_AUTOLABELED), StageRecord)
    autolabel = {}
    if labels is not None and labels.enabled:
        autolabel = {"model": plan.spec["autolabel_model"], "cached": labels.cached, "computed": labels.computed,
                     "seconds_per_scene": labels.seconds_per_scene, "quality": labels.quality}
    return {
        "name": name, "spec_hash": plan.spec_hash, "dataroot": index.dataroot, "versions": index.versions,
        "parts": [{"part": p.part, "version": p.version, "scenes": p.scenes,
                   "can_bus_dataroot": store.describe(part_key(plan.profile_key, p.version))} for p in index.parts],
        "index": store.describe(index_key(name)), "scenes": index.scenes, "samples": index.samples,
        "images": index.images, "splits": index.splits, "cached_scenes": sampled.cached,
        "recovered_scenes": sampled.recovered,
        "computed_scenes": sampled.computed, "failed_scenes": index.failed, "check_problems": index.checks,
        "rewritten_parts": index.rewritten_parts, "sampling_wall_s": sampled.wall_s,
        "merge_wall_s": index.merge_wall_s, "dagster_run_id": index.run_id, "autolabel": autolabel,
        "preview": index.preview, "estimate": plan.estimate, "missing_includes": plan.missing_includes,
        "scenes_with_gaps": plan.gap_scenes,
        **({"actual_cost": price(actual_work(store, name, table), table).to_json()} if table is not None else {}),
    }


def render_preview(dataroot: Path, version: str, store: ObjectStore, profile_key: str) -> bytes | None:
    """preview.jpg of a part (jadd_dagster.preview): dataroot holds the version folder; the
    keyframe image is fetched from the profile's dataroot in the store. None when it cannot be drawn
    (a preview never fails a build)."""
    from jadd_dagster.preview import preview_jpeg

    root = sampled_root_key(profile_key)

    def fetch(filename: str, target: Path) -> None:
        store.download_file(f"{root}/{filename}", target)

    try:
        return preview_jpeg(dataroot, version, fetch)
    except Exception as error:  # noqa: BLE001 - the dataset is fine without its preview
        logger.warning("%s: no preview: %s: %s", version, type(error).__name__, error)
        return None


def autolabel_quality(
    spec: DatasetSpec, outputs: list[SceneOutput], labels: dict[str, str], store: ObjectStore
) -> dict | None:
    """DetectionEval of the auto-labels against the logs' ground truth on a sample of the val
    scenes (autolabel/quality.py), or None when the logs have none. Only each scored scene's
    scene.json and lidar keyframes and its log's small files are read (fetched from a remote store)."""
    from jadd_dagster.autolabel.quality import scenes_to_score, score_autolabels
    from jadd_dagster.logs.format import OBJECTS
    from jadd_dagster.logs.stored import log_key, open_stored_log
    from jadd_dagster.scene_outputs import frames_root

    chosen = set(scenes_to_score([o.scene_id for o in outputs], spec.val_fraction))
    picked = [o for o in outputs if o.scene_id in chosen]
    log_ids = {parse_scene_id(o.scene_id)[0] for o in picked}
    if not all(store.exists(f"{log_key(log_id)}/{OBJECTS}") for log_id in log_ids):
        return None  # real logs carry no ground truth: nothing to fetch or score

    with tempfile.TemporaryDirectory(prefix="jadd-quality-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        dirs = [stack.enter_context(store.local_folder(o.path, scratch=scratch, include=lambda n: n == SCENE_JSON))
                for o in picked]
        records = [SceneRecord.load(d) for d in dirs]
        lidar = lambda frame: frame.channel in LIDAR_CHANNELS and frame.is_key_frame  # noqa: E731
        frames = stack.enter_context(frames_root(store, records[0].profile, records, scratch, include=lidar)) if records else scratch
        logs: dict[str, object] = {}

        def open_log(log_id: str):
            if log_id not in logs:
                logs[log_id] = stack.enter_context(open_stored_log(store, log_id, scratch=scratch))
            return logs[log_id]

        annotations = {o.scene_id: store.read_json(labels[o.scene_id])["annotations"] for o in picked}
        return score_autolabels(dirs, open_log, annotations, spec.name, frames)


def devkit_problems(dataroot: Path, versions: list[str]) -> list[str]:
    """Open every version with the official nuscenes-devkit; its errors are the problems."""
    from nuscenes.nuscenes import NuScenes

    problems = []
    for version in versions:
        try:
            nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
            if not nusc.scene:
                problems.append(f"{version}: no scenes")
        except Exception as error:  # the devkit raises anything from AssertionError to KeyError
            problems.append(f"{version}: {type(error).__name__}: {error}")
    return problems


def read_stage(store: ObjectStore, name: str, stage: str) -> StageRecord:
    return read_record(store, stage_record_key(name, stage), StageRecord)

