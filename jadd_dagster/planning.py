"""Curation and Split of a dataset into parts: the plan that is made before any scene is sampled.

Part membership is stable as scenes are added: a scene keeps the part (and the place in it, so
its scene name) that the previous plan gave it; new scenes fill the last part up to its size and
then start new parts. A rebuild after new scenes therefore changes only the last part(s); parts
whose scenes did not change keep their content hash (part_merge.part_version) and are not merged
again.
"""

from __future__ import annotations

import pandas as pd

from jadd_dagster.cost import estimate_sampling_cost
from jadd_dagster.curation import select_scenes
from jadd_dagster.logs.format import CAMERA_CHANNELS
from jadd_dagster.merge import assign_splits, split_score
from jadd_dagster.nuscenes.parts import default_scenes_per_part
from jadd_dagster.records import DatasetPlan, PartPlan
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.spec import DatasetSpec

# Auto-labels per keyframe that size a part when the spec auto-labels (busy urban scenes).
BOXES_PER_KEYFRAME = 40.0


def sampling_profile(spec: DatasetSpec) -> SamplingProfile:
    return SamplingProfile(
        keyframe_hz=spec.keyframe_hz,
        sweep_hz=spec.sweep_hz,
        undistort=spec.undistort,
        image_size=spec.image_size,
        jpeg_quality=spec.jpeg_quality,
        channels=tuple(spec.channels),
    )


def scenes_per_part(spec: DatasetSpec) -> int:
    """The part size for a spec: as many scenes as one devkit load allows (nuscenes/parts.py)."""
    cameras = sum(1 for c in spec.channels if c in CAMERA_CHANNELS)
    return default_scenes_per_part(
        cameras, len(spec.channels) - cameras, spec.keyframe_hz, spec.sweep_hz,
        BOXES_PER_KEYFRAME if spec.autolabel else 0.0,
    )


def assign_parts(scene_ids: list[str], size: int, previous: list[PartPlan] | None = None) -> list[PartPlan]:
    """Parts of at most size scenes. Scenes of previous parts stay where they were (in order);
    the other scenes, sorted, fill the last part and then new ones."""
    if size < 1:
        raise ValueError("a part holds at least one scene")
    selected = set(scene_ids)
    parts: list[PartPlan] = []
    placed: set[str] = set()
    for part in sorted(previous or [], key=lambda p: p.part):
        keep = [s for s in part.scene_ids if s in selected][:size]
        if keep:
            parts.append(PartPlan(part.part, keep))
            placed.update(keep)
    new = sorted(selected - placed)
    if parts and new and len(parts[-1].scene_ids) < size:
        room = size - len(parts[-1].scene_ids)
        parts[-1] = PartPlan(parts[-1].part, parts[-1].scene_ids + new[:room])
        new = new[room:]
    number = max((p.part for p in previous or []), default=0) + 1
    for start in range(0, len(new), size):
        parts.append(PartPlan(number, new[start : start + size]))
        number += 1
    return parts


def forced_splits(scene_ids: list[str], val_fraction: float) -> dict[str, str]:
    """The scenes whose split differs from the hash rule (part_merge.split_of): the one or two that
    merge.assign_splits moves so that neither split is empty."""
    assigned = assign_splits(scene_ids, val_fraction)
    return {s: split for s, split in assigned.items() if split != ("val" if split_score(s, 0) < val_fraction else "train")}


def make_plan(
    spec: DatasetSpec, catalog: pd.DataFrame, settings, previous: DatasetPlan | None, run_id: str,
) -> DatasetPlan:
    """Select the spec's scenes from the catalog, split them into parts and estimate the cost.

    settings carries cpu_seconds_per_frame and usd_per_cpu_hour (the deployment profile's). Raises
    curation.FilterError on a bad filter."""
    curation = select_scenes(catalog, spec)
    scenes = curation.scenes
    profile_key = sampling_profile(spec).key()
    size = scenes_per_part(spec)
    kept = previous.parts if previous is not None and previous.profile_key == profile_key else None
    ids = scenes["scene_id"].tolist()
    cost = estimate_sampling_cost(
        float(scenes["duration_s"].sum()), len(spec.channels), spec.sweep_hz,
        settings.cpu_seconds_per_frame, settings.usd_per_cpu_hour,
    )
    gaps = sorted(scenes.loc[scenes["has_gap"].astype(bool), "scene_id"]) if "has_gap" in scenes else []
    return DatasetPlan(
        name=spec.name, spec=spec.model_dump(), spec_hash=spec.spec_hash(), profile_key=profile_key,
        parts=assign_parts(ids, size, kept), scenes_per_part=size,
        hours=round(float(scenes["duration_s"].sum()) / 3600, 3),
        estimate={"frames": cost.frames, "cpu_hours": cost.cpu_hours, "usd": cost.usd},
        missing_includes=list(curation.missing_includes), dropped_by_limit=curation.dropped_by_limit,
        gap_scenes=gaps, run_id=run_id, forced_splits=forced_splits(ids, spec.val_fraction),
    )
