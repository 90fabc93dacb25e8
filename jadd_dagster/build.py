"""Dataset build steps between curation and the registry: tasks, sampling profile, merge, checks.

Plain functions; the Dagster assets in defs/dataset_assets.py call them.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path


import pandas as pd

from jadd_dagster.compute.chunks import SceneTask
from jadd_dagster.compute.worker import STAGE_AUTOLABELED, STAGE_SAMPLED
from jadd_dagster.logs.format import LIDAR_CHANNELS
from jadd_dagster.registry import SceneOutput
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.scene_record import SCENE_CAN, SCENE_JSON, SCENE_POSE, SceneRecord, parse_scene_id
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import DATASETS, SCENES, ObjectStore

logger = logging.getLogger(__name__)


def sampling_profile(spec: DatasetSpec) -> SamplingProfile:
    return SamplingProfile(
        keyframe_hz=spec.keyframe_hz,
        sweep_hz=spec.sweep_hz,
        undistort=spec.undistort,
        image_size=spec.image_size,
        jpeg_quality=spec.jpeg_quality,
        channels=tuple(spec.channels),
    )


def scene_output_key(stage: str, cache_key: str, log_id: str, index: int) -> str:
    """Where a stage's output of one scene lives, e.g. scenes/sampled/<profile>/<log_id>/0003."""
    return f"{SCENES}/{stage}/{cache_key}/{log_id}/{index:04d}"


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


def expected_frames_per_channel(scene_length_s: float, keyframe_hz: int, sweep_hz: int) -> int:
    """Keyframes at keyframe_hz over the scene, plus the sweeps between consecutive keyframes."""
    keyframes = int(round(scene_length_s * keyframe_hz))
    return keyframes + (keyframes - 1) * (sweep_hz // keyframe_hz - 1)


def frames_per_channel(record: SceneRecord) -> dict[str, int]:
    """How many frames a sampled scene has of each of its channels."""
    counts = Counter(f.channel for f in record.frames)
    return {channel: counts.get(channel, 0) for channel in record.cameras}


def frame_count_problems(counts: dict[str, dict[str, int]], expected: int, expected_lidar: int) -> list[str]:
    """Scenes (scene id -> frames per channel) whose count differs from duration × rate (cameras)
    or from the number of keyframes (lidar: one sweep per keyframe)."""
    return [
        f"{scene_id} {channel}: {got} frames, expected {want}"
        for scene_id, per_channel in sorted(counts.items())
        for channel, got in per_channel.items()
        if got != (want := expected_lidar if channel in LIDAR_CHANNELS else expected)
    ]


def dataset_key(name: str) -> str:
    return f"{DATASETS}/{name}"


def dataroot_key(name: str) -> str:
    """Where a dataset's nuScenes dataroot is published in the store."""
    return f"{dataset_key(name)}/nuscenes"


@dataclass
class BuildSummary:
    """What one dataset build produced; written as build.json and summary.json."""

    name: str
    spec_hash: str
    dataroot: str
    versions: list[str]
    scenes: int
    samples: int
    images: int
    cached_scenes: int
    computed_scenes: int
    failed_scenes: dict[str, str] = field(default_factory=dict)
    check_problems: dict[str, list[str]] = field(default_factory=dict)
    sampling_wall_s: float = 0.0
    merge_wall_s: float = 0.0
    dagster_run_id: str = ""
    autolabel: dict = field(default_factory=dict)  # model, cached, computed, seconds_per_scene, quality
    preview: str = ""  # the store key of preview.jpg (a keyframe with its boxes), "" when none


@dataclass
class DatasetChecks:
    """Problems found in a built dataset, per check (an empty list passes)."""

    frame_counts: list[str]
    nuscenes_invariants: list[str]
    devkit: list[str]


class SceneFolders:
    """Local folders of scene outputs for the merge.

    A local store lends its own folders. For a remote store only the small files (scene.json, CAN,
    pose) are fetched into scratch space (≈100 kB a scene; a dataroot holds < 10,000 scenes); frames
    stay in the store and are copied there. Frame counts are noted on the way for the checks.
    """

    SMALL_FILES = (SCENE_JSON, SCENE_CAN, SCENE_POSE)

    def __init__(self, store: ObjectStore, scratch: Path):
        self.store = store
        self.scratch = scratch
        self.key_of: dict[Path, str] = {}
        self.frames_of: dict[Path, set[str]] = {}
        self.frame_counts: dict[str, dict[str, int]] = {}
        self.spans: dict[str, list[tuple[int, int]]] = {}  # log id -> (first, last) frame µs of each scene

    def iterate(self, outputs: list[SceneOutput]) -> Iterator[Path]:
        for i, output in enumerate(sorted(outputs, key=lambda o: o.scene_id)):
            folder = self.store.local_path(output.path)
            if folder is None:
                folder = self.scratch / f"{i:07d}"
                keys = {k[len(output.path) + 1 :] for k in self.store.list_keys(output.path)}
                for name in self.SMALL_FILES:
                    if name in keys:
                        self.store.download_file(f"{output.path}/{name}", folder / name)
                self.frames_of[folder] = keys
            self.key_of[folder] = output.path
            yield folder

    def note(self, record: SceneRecord) -> None:
        """Count a merged scene's frames per channel (merge_scenes' on_record: scene.json is
        parsed once)."""
        self.frame_counts[record.scene_id] = frames_per_channel(record)
        if record.frames:
            stamps = [f.timestamp_us for f in record.frames]
            self.spans.setdefault(record.log_id, []).append((min(stamps), max(stamps)))

    def link_image(self, target_prefix: str):
        def link(folder: Path, source: str, filename: str) -> bool:
            self.store.copy(f"{self.key_of[folder]}/{source}", f"{target_prefix}/{filename}")
            return True

        return link

    def frame_exists(self, folder: Path, source: str) -> bool:
        return source in self.frames_of[folder]


def assemble_dataset(
    spec: DatasetSpec,
    outputs: list[SceneOutput],
    store: ObjectStore,
    run_id: str,
    scene_length_s: float,
    scenes_per_part: int = 5000,
    labels: dict[str, str] | None = None,
) -> tuple[BuildSummary, DatasetChecks]:
    """Merge scene outputs into a staged dataroot, check it, then publish it in place of the old one.

    labels maps scene ids to the store key of their auto-labels (labels.json), which become the
    sample_annotation and instance tables.

    Local store: the staging folder sits beside the dataroot (frames hard-linked) and one rename
    publishes it. Remote store: frames are copied inside the store, tables are written locally,
    checked, then uploaded, version folders last.
    """
    from jadd_dagster.merge import merge_scenes

    key = dataroot_key(spec.name)
    local_root = store.local_path(key)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jadd-merge-") as scratch:
        folders = SceneFolders(store, Path(scratch) / "scenes")
        if local_root is not None:
            staging = local_root.with_name(f".staging-{run_id[:8]}")
            shutil.rmtree(staging, ignore_errors=True)
            hooks: dict = {}
        else:
            staging = Path(scratch) / "dataroot"
            hooks = {"link_image": folders.link_image(key), "frame_exists": folders.frame_exists}
        if labels is not None:
            hooks["annotations"] = lambda record, _: store.read_json(labels[record.scene_id])["annotations"]
        try:
            merged = merge_scenes(
                folders.iterate(outputs), staging, spec.name, val_fraction=spec.val_fraction,
                scenes_per_part=scenes_per_part, include_can_bus=spec.include_can_bus, on_record=folders.note, **hooks,
            )
            checks = check_dataset(spec, merged, folders.frame_counts, staging, store, key, scene_length_s)
            preview = dataset_preview(staging, merged.versions, checks, store, spec.name, local=local_root is not None)
            uploaded = publish_dataset(staging, store, key, merged.versions)
            if local_root is None:  # a local publish replaces the whole folder
                store.delete_keys(stale_dataroot_keys(store.list_keys(key), key, uploaded, folders.spans))
        finally:
            if local_root is not None:
                shutil.rmtree(staging, ignore_errors=True)
    summary = BuildSummary(
        name=spec.name,
        spec_hash=spec.spec_hash(),
        dataroot=store.describe(key),
        versions=list(merged.versions),
        scenes=merged.scenes,
        samples=merged.samples,
        images=merged.images,
        cached_scenes=0,
        computed_scenes=0,
        failed_scenes={str(k): str(v) for k, v in merged.failed},
        check_problems={name: problems[:50] for name, problems in checks.__dict__.items()},
        merge_wall_s=round(time.monotonic() - started, 3),
        dagster_run_id=run_id,
        preview=preview,
    )
    return summary, checks


def check_dataset(
    spec: DatasetSpec, merged, frame_counts: dict[str, dict[str, int]], staging: Path, store: ObjectStore,
    key: str, scene_length_s: float,
) -> DatasetChecks:
    from jadd_dagster.nuscenes.validate import validate_dataset

    merged_ids = set(merged.scene_names)
    expected = expected_frames_per_channel(scene_length_s, spec.keyframe_hz, spec.sweep_hz)
    file_exists = None
    if store.local_path(key) is None:
        published = {k[len(key) + 1 :] for k in store.list_keys(key)}
        file_exists = lambda name: name in published or (staging / name).is_file()  # noqa: E731
    return DatasetChecks(
        frame_counts=frame_count_problems(
            {k: v for k, v in frame_counts.items() if k in merged_ids}, expected,
            int(round(scene_length_s * spec.keyframe_hz)),
        ),
        nuscenes_invariants=[p for v in merged.versions for p in validate_dataset(staging, v, file_exists)],
        devkit=devkit_problems(staging, merged.versions),
    )


def preview_key(name: str) -> str:
    return f"{dataset_key(name)}/preview.jpg"


def dataset_preview(
    staging: Path, versions: list[str], checks: DatasetChecks, store: ObjectStore, name: str, local: bool
) -> str:
    """Write preview.jpg (jadd_dagster.preview) of the staged dataset beside its dataroot; returns
    its key, or "" when the devkit could not load the dataset or the preview failed (a preview
    never fails a build). local: the staged dataroot holds the frames; else they are in the store."""
    from jadd_dagster.nuscenes.writer import link_or_copy
    from jadd_dagster.preview import preview_jpeg

    if not versions or checks.devkit:
        return ""
    key = dataroot_key(name)

    def fetch(filename: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if local:
            link_or_copy(staging / filename, target)
        else:
            store.download_file(f"{key}/{filename}", target)

    try:
        image = preview_jpeg(staging, versions[0], fetch)
    except Exception as error:  # noqa: BLE001 - the dataset is fine without its preview
        logger.warning("%s: no preview: %s: %s", name, type(error).__name__, error)
        return ""
    if image is None:
        return ""
    store.put_bytes(preview_key(name), image)
    return preview_key(name)


def publish_dataset(staging: Path, store: ObjectStore, key: str, versions: list[str]) -> set[str]:
    """Make the staged dataroot the published one; readers see the old tables or the new ones.
    Returns the keys uploaded (none for a local store, where one rename publishes)."""
    if store.local_path(key) is not None:
        store.publish_folder(staging, key)
        return set()
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    tables = [p for p in files if p.relative_to(staging).parts[0] in versions]
    uploaded = set()
    for path in [p for p in files if p not in tables] + tables:
        uploaded.add(f"{key}/{path.relative_to(staging).as_posix()}")
        store.upload_file(path, f"{key}/{path.relative_to(staging).as_posix()}")
    return uploaded


FRAME_FOLDERS = ("samples", "sweeps")
FRAME_SPAN_SLACK_US = 50_000  # a scene's frames lie in its span; lidar keyframes may be 25 ms off


def frame_log_and_time(relative: str) -> tuple[str, int] | None:
    """(log id, µs) of a frame named as nuscenes.tables.sample_data_filename names it
    (samples/<channel>/<log>__<channel>__<µs>.<ext>), None for anything else."""
    parts = relative.split("/")
    if len(parts) != 3 or parts[0] not in FRAME_FOLDERS:
        return None
    marker = f"__{parts[1]}__"
    cut = parts[2].rfind(marker)
    stamp = parts[2][cut + len(marker):].split(".", 1)[0] if cut > 0 else ""
    return (parts[2][:cut], int(stamp)) if stamp.isdigit() else None


def stale_dataroot_keys(
    keys: Iterable[str], key: str, uploaded: set[str], spans: dict[str, list[tuple[int, int]]]
) -> list[str]:
    """The keys under a republished dataroot that its new build does not use: files outside
    samples/ and sweeps/ it did not upload (an earlier build's extra parts, CAN files, maps), and
    frames outside the spans (µs, by log id) of its scenes. A frame whose name does not parse is
    kept: only what is surely stale goes."""
    ordered = {log_id: sorted(log_spans) for log_id, log_spans in spans.items()}
    starts = {log_id: [first for first, _ in log_spans] for log_id, log_spans in ordered.items()}

    def in_a_scene(log_id: str, stamp: int) -> bool:
        # Scenes do not overlap: only the last span starting before the frame can hold it.
        i = bisect.bisect_right(starts.get(log_id, []), stamp + FRAME_SPAN_SLACK_US) - 1
        return i >= 0 and stamp <= ordered[log_id][i][1] + FRAME_SPAN_SLACK_US

    stale = []
    for name in keys:
        relative = name[len(key) + 1:]
        if relative.split("/", 1)[0] not in FRAME_FOLDERS:
            if name not in uploaded:
                stale.append(name)
            continue
        frame = frame_log_and_time(relative)
        if frame is not None and not in_a_scene(*frame):
            stale.append(name)
    return stale


def autolabel_quality(
    spec: DatasetSpec, outputs: list[SceneOutput], labels: dict[str, str], store: ObjectStore
) -> dict | None:
    """DetectionEval of the auto-labels against the logs' ground truth on a sample of the val
    scenes (autolabel/quality.py), or None when the logs have none. Only each scored scene's
    scene.json and lidar keyframes and its log's small files are read (fetched from a remote store)."""
    from jadd_dagster.autolabel.quality import scenes_to_score, score_autolabels
    from jadd_dagster.logs.format import OBJECTS
    from jadd_dagster.logs.stored import log_key, open_stored_log

    chosen = set(scenes_to_score([o.scene_id for o in outputs], spec.val_fraction))
    picked = [o for o in outputs if o.scene_id in chosen]
    log_ids = {parse_scene_id(o.scene_id)[0] for o in picked}
    if not all(store.exists(f"{log_key(log_id)}/{OBJECTS}") for log_id in log_ids):
        return None  # real logs carry no ground truth: nothing to fetch or score

    def scoring_file(name: str) -> bool:
        return name == SCENE_JSON or name.split("/")[0] in LIDAR_CHANNELS

    with tempfile.TemporaryDirectory(prefix="jadd-quality-") as tmp, ExitStack() as stack:
        scratch = Path(tmp)
        dirs = [stack.enter_context(store.local_folder(o.path, scratch=scratch, include=scoring_file)) for o in picked]
        logs: dict[str, object] = {}

        def open_log(log_id: str):
            if log_id not in logs:
                logs[log_id] = stack.enter_context(open_stored_log(store, log_id, scratch=scratch))
            return logs[log_id]

        annotations = {o.scene_id: store.read_json(labels[o.scene_id])["annotations"] for o in picked}
        return score_autolabels(dirs, open_log, annotations, spec.name)


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
