"""Merge: sampled scene folders (scene_record.py) into nuScenes version folders ("parts").

    result = merge_scenes(scene_dirs, Path("/data/jadd"), "mini")
    NuScenes(version=result.versions[0], dataroot=str(result.dataroot))

A scene that cannot be read or breaks the SceneRecord contract is skipped and reported in
result.failed; it never fails the merge.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jadd_dagster.nuscenes.splits import TRAIN, VAL, split_name
from jadd_dagster.nuscenes.tables import MAX_SCENES
from jadd_dagster.nuscenes.writer import PartWriter, prepare_scene, version_name
from jadd_dagster.scene_record import SceneRecord

# Given a scene and its folder, the 3D boxes to write for it (see nuscenes.tables.annotation_tables).
AnnotationSource = Callable[[SceneRecord, Path], Sequence[Mapping]]


@dataclass
class MergeResult:
    """What merge_scenes wrote.

    versions: version folder names under dataroot (one per part); scene_names: scene_id -> scene-NNNN
    in merge order within its part (part_of); failed: (scene_id, or the folder when unreadable, reason); splits: scenes per
    split (nuscenes.splits.TRAIN, VAL: 'jadd-train', 'jadd-val').
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
    part_of: dict[str, str] = field(default_factory=dict)  # scene_id -> version


def split_score(scene_id: str, seed: int) -> float:
    """Uniform number in [0, 1) from the scene id and seed: the scene is in VAL below val_fraction."""
    digest = hashlib.md5(f"{seed}:{scene_id}".encode("utf-8")).hexdigest()
    return int(digest, 16) / float(1 << 128)


def assign_splits(scene_ids: Sequence[str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """TRAIN or VAL (nuscenes/splits.py) for each scene id, decided by split_score alone (stable as
    scenes are added).

    When hashing leaves a split empty, the scene closest to the threshold moves: val gets one when
    val_fraction > 0 and there are at least 2 scenes; train gets one when val_fraction < 1.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must lie in [0, 1]")
    scores = {scene_id: split_score(scene_id, seed) for scene_id in scene_ids}
    splits = {scene_id: split_name(score < val_fraction) for scene_id, score in scores.items()}
    if not scores:
        return splits
    if val_fraction > 0 and len(scores) >= 2 and VAL not in splits.values():
        splits[min(scores, key=lambda s: (scores[s], s))] = VAL
    if val_fraction < 1 and TRAIN not in splits.values():
        splits[max(scores, key=lambda s: (scores[s], s))] = TRAIN
    return splits


@dataclass
class PartResult:
    """What merge_part wrote into one version folder."""

    version: str
    scenes: int
    samples: int
    sample_data: int
    images: int
    copied_images: int
    sample_annotations: int
    failed: list[tuple[str, str]]
    scene_names: dict[str, str]
    splits: dict[str, str]


def merge_part(
    scene_dirs: Iterable[Path],
    dataroot: Path,
    version: str,
    split_of: Callable[[str], str],
    include_can_bus: bool = True,
    annotations: AnnotationSource | None = None,
    link_image: Callable[[Path, str, str], bool] | None = None,
    frame_exists: Callable[[Path, str], bool] | None = None,
    on_record: Callable[[SceneRecord], None] | None = None,
    folder: Path | None = None,
) -> PartResult | None:
    """Stream scene folders into one self-contained version folder <dataroot>/<version>.

    Scenes are named scene-NNNN in the order of scene_dirs; split_of(scene id) names each scene's
    split. A scene that cannot be read or breaks the SceneRecord contract is skipped and reported;
    it never fails the part. None (and nothing left behind) when no scene could be merged.
    link_image and frame_exists let a caller whose frames are already in the dataroot (or in an
    object store) skip linking and check them there; on_record sees each record as it is read.
    folder: where the version folder is written (see PartWriter), dataroot/version by default.
    """
    writer = PartWriter(dataroot, version, include_can_bus=include_can_bus, link_image=link_image, folder=folder)
    failed: list[tuple[str, str]] = []
    seen: set[str] = set()
    try:
        for scene_dir in scene_dirs:
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
            if folder is None:  # ours to remove; a caller's staging folder is the caller's
                shutil.rmtree(writer.folder, ignore_errors=True)
            return PartResult(version, 0, 0, 0, 0, 0, 0, failed, {}, {}) if failed else None
        splits = {s.scene_id: split_of(s.scene_id) for s in writer.scenes}
        writer.close(splits)
    except BaseException:
        writer.abort()
        raise
    counts = writer.counts
    return PartResult(
        version=version, scenes=len(writer.scenes), samples=counts["samples"], sample_data=counts["sample_data"],
        images=counts["images"], copied_images=counts["copied_images"],
        sample_annotations=counts["sample_annotations"], failed=failed,
        scene_names={s.scene_id: s.name for s in writer.scenes}, splits=splits,
    )


def merge_scenes(
    scene_dirs: Iterable[Path],
    dataroot: Path,
    name: str,
    val_fraction: float = 0.2,
    scenes_per_part: int = MAX_SCENES,
    include_can_bus: bool = True,
    seed: int = 0,
    annotations: AnnotationSource | None = None,
    link_image: Callable[[Path, str, str], bool] | None = None,
    frame_exists: Callable[[Path, str], bool] | None = None,
    on_record: Callable[[SceneRecord], None] | None = None,
) -> MergeResult:
    """Merge scene folders into dataroot as nuScenes version folder(s): v1.0-<name> when they fit
    one part of scenes_per_part, else v1.0-<name>-partNNN (each self-contained, merge_part).

    Splits come from assign_splits over all scenes read. Frames are hard-linked into the dataroot
    by default (see merge_part for link_image, frame_exists and on_record). Version folders of the
    same name left by an earlier merge are removed first; with no mergeable scene, nothing is
    written and versions is empty.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError("val_fraction must lie in [0, 1]")
    if not 1 <= scenes_per_part <= MAX_SCENES:
        raise ValueError(f"scenes_per_part must lie in [1, {MAX_SCENES}] (4-digit scene names per part)")
    dirs = [Path(d) for d in scene_dirs]
    dataroot = Path(dataroot)
    dataroot.mkdir(parents=True, exist_ok=True)
    stale = re.compile(rf"^{re.escape(version_name(name))}(-part\d{{3,}})?$")
    for child in dataroot.iterdir():
        if child.is_dir() and stale.match(child.name):
            shutil.rmtree(child)
    readable: dict[Path, str] = {}
    for d in dirs:
        try:
            readable[d] = SceneRecord.load(d).scene_id
        except Exception:  # noqa: BLE001 - merge_part reports it
            pass
    splits = assign_splits(sorted(set(readable.values())), val_fraction, seed)
    groups = [dirs[i : i + scenes_per_part] for i in range(0, len(dirs), scenes_per_part)] or [[]]
    result = MergeResult(dataroot, [], 0, 0, 0, 0, 0, splits={TRAIN: 0, VAL: 0})
    for number, group in enumerate(groups):
        version = version_name(name) if len(groups) == 1 else version_name(name, number)
        part = merge_part(
            group, dataroot, version, splits.__getitem__, include_can_bus=include_can_bus, annotations=annotations,
            link_image=link_image, frame_exists=frame_exists, on_record=on_record,
        )
        if part is None:
            continue
        result.failed.extend(part.failed)
        if not part.scenes:
            continue
        result.versions.append(version)
        result.scenes += part.scenes
        result.samples += part.samples
        result.sample_data += part.sample_data
        result.images += part.images
        result.copied_images += part.copied_images
        result.sample_annotations += part.sample_annotations
        result.scene_names.update(part.scene_names)
        result.part_of.update({scene_id: version for scene_id in part.scene_names})
        for split in part.splits.values():
            result.splits[split] = result.splits.get(split, 0) + 1
    result.parts = len(result.versions)
    return result
