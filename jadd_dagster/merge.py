"""Merge: sampled scene folders (scene_record.py) into one nuScenes dataroot.

    result = merge_scenes(scene_dirs, Path("/data/jadd"), "mini")
    NuScenes(version=result.versions[0], dataroot=str(result.dataroot))

A scene that cannot be read or breaks the SceneRecord contract is skipped and reported in
result.failed; it never fails the merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jadd_dagster.nuscenes.tables import MAX_SCENES
from jadd_dagster.nuscenes.writer import DatasetWriter, prepare_scene
from jadd_dagster.scene_record import SceneRecord

# Given a scene and its folder, the 3D boxes to write for it (see nuscenes.tables.annotation_tables).
AnnotationSource = Callable[[SceneRecord, Path], Sequence[Mapping]]


@dataclass
class MergeResult:
    """What merge_scenes wrote.

    versions: version folder names under dataroot (one per part); scene_names: scene_id -> scene-NNNN
    in merge order; failed: (scene_id, or the folder when unreadable, reason); splits: scenes per
    split ('train', 'val').
    """

    dataroot: Path
    versions: list[str]
    scenes: int
    samples: int
    sample_data: int
    images: int
    parts: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    scene_names: dict[str, str] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    copied_images: int = 0
    sample_annotations: int = 0


def split_score(scene_id: str, seed: int) -> float:
    """Uniform number in [0, 1) from the scene id and seed: the scene is 'val' below val_fraction."""
    digest = hashlib.md5(f"{seed}:{scene_id}".encode("utf-8")).hexdigest()
    return int(digest, 16) / float(1 << 128)


def assign_splits(scene_ids: Sequence[str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """'train' or 'val' for each scene id, decided by split_score alone (stable as scenes are added).

    When hashing leaves a split empty, the scene closest to the threshold moves: val gets one when
    val_fraction > 0 and there are at least 2 scenes; train gets one when val_fraction < 1.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must lie in [0, 1]")
    scores = {scene_id: split_score(scene_id, seed) for scene_id in scene_ids}
    splits = {scene_id: ("val" if score < val_fraction else "train") for scene_id, score in scores.items()}
    if not scores:
        return splits
    if val_fraction > 0 and len(scores) >= 2 and "val" not in splits.values():
        splits[min(scores, key=lambda s: (scores[s], s))] = "val"
    if val_fraction < 1 and "train" not in splits.values():
        splits[max(scores, key=lambda s: (scores[s], s))] = "train"
    return splits


def merge_scenes(
    scene_dirs: Iterable[Path],
    dataroot: Path,
    name: str,
    val_fraction: float = 0.2,
    scenes_per_part: int = 5000,
    include_can_bus: bool = True,
    seed: int = 0,
    annotations: AnnotationSource | None = None,
    link_image: Callable[[Path, str, str], bool] | None = None,
    frame_exists: Callable[[Path, str], bool] | None = None,
    on_record: Callable[[SceneRecord], None] | None = None,
) -> MergeResult:
    """Stream scene folders into dataroot as nuScenes version folder(s) v1.0-<name>[-partNNN].

    Scenes are named scene-NNNN in the order of scene_dirs (pass them in a stable order for
    reproducible names); tokens come from stable ids only. Images are hard-linked (copied across
    file systems), never re-encoded. Raises ValueError before writing anything when there are more
    folders than 4-digit scene names (MAX_SCENES) or the arguments are invalid. With no mergeable
    scene, nothing is written and versions is empty. link_image and frame_exists let a caller whose
    frames live in an object store copy and check them there (see DatasetWriter, prepare_scene);
    on_record sees each scene's record as it is read.
    """
    dirs = [Path(d) for d in scene_dirs]
    if len(dirs) > MAX_SCENES:
        raise ValueError(
            f"{len(dirs)} scenes do not fit one dataroot: nuScenes scene names have 4 digits and the devkit's "
            f"CAN bus API blacklists some, which leaves {MAX_SCENES} names; shard the scenes across dataroots"
        )
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must lie in [0, 1]")
    dataroot = Path(dataroot)
    writer = DatasetWriter(
        dataroot, name, scenes_per_part=scenes_per_part, include_can_bus=include_can_bus, link_image=link_image
    )
    failed: list[tuple[str, str]] = []
    seen: set[str] = set()
    try:
        for scene_dir in dirs:
            try:
                record = SceneRecord.load(scene_dir)
            except Exception as exc:  # noqa: BLE001 - any unreadable folder is reported, not fatal
                failed.append((str(scene_dir), f"unreadable scene folder: {type(exc).__name__}: {exc}"))
                continue
            if on_record is not None:
                on_record(record)
            if record.scene_id in seen:
                failed.append((record.scene_id, f"duplicate scene id (again in {scene_dir})"))
                continue
            try:
                boxes = annotations(record, scene_dir) if annotations is not None else ()
                prepared = prepare_scene(record, scene_dir, boxes, include_can_bus=include_can_bus, frame_exists=frame_exists)
            except Exception as exc:  # noqa: BLE001 - one bad scene never fails the merge
                failed.append((record.scene_id, f"{type(exc).__name__}: {exc}"))
                continue
            writer.add(prepared)
            seen.add(record.scene_id)
        if not writer.scenes:
            writer.abort()
            return MergeResult(dataroot, [], 0, 0, 0, 0, 0, failed, {}, {"train": 0, "val": 0})
        splits = assign_splits([s.scene_id for s in writer.scenes], val_fraction, seed)
        versions = writer.close(splits)
    except BaseException:
        writer.abort()
        raise
    counts = writer.counts
    return MergeResult(
        dataroot=dataroot,
        versions=versions,
        scenes=len(writer.scenes),
        samples=counts["samples"],
        sample_data=counts["sample_data"],
        images=counts["images"],
        parts=len(versions),
        failed=failed,
        scene_names={s.scene_id: s.name for s in writer.scenes},
        splits={split: sum(1 for v in splits.values() if v == split) for split in ("train", "val")},
        copied_images=counts["copied_images"],
        sample_annotations=counts["sample_annotations"],
    )
