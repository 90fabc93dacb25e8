"""Typed state between the build's stages: one record per stage output, written and read whole.

Each record is built once, when its stage has everything it reports, and never patched after.
Store keys come from layout.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

from jadd_dagster.storage import ObjectStore

R = TypeVar("R")


@dataclass(frozen=True)
class PartPlan:
    """One part of a dataset: its number (stable across rebuilds) and its scenes in name order."""

    part: int
    scene_ids: list[str]


@dataclass(frozen=True)
class DatasetPlan:
    """Curation and Split of one dataset (datasets/<name>/plan.json): what will be built, in which
    parts, and what it is expected to cost, before any scene is sampled."""

    name: str
    spec: dict
    spec_hash: str
    profile_key: str
    parts: list[PartPlan]
    scenes_per_part: int
    hours: float
    estimate: dict  # planning.estimate_plan: frames, cpu_hours, gpu_hours, usd, components, breakdown, work
    missing_includes: list[str] = field(default_factory=list)
    dropped_by_limit: int = 0
    gap_scenes: list[str] = field(default_factory=list)  # scenes whose CAN or pose has a gap (catalog has_gap)
    run_id: str = ""
    forced_splits: dict[str, str] = field(default_factory=dict)  # part_merge.split_of's exceptions

    @property
    def scene_ids(self) -> list[str]:
        return [scene_id for part in self.parts for scene_id in part.scene_ids]


@dataclass(frozen=True)
class StageRecord:
    """What one per-scene stage (sampling or auto-labelling) did for a dataset build."""

    stage: str
    cache_key: str
    cached: int
    computed: int
    failed: dict[str, str]
    chunks: int
    wall_s: float
    seconds_per_scene: float | None
    run_id: str
    enabled: bool = True
    quality: dict | None = None  # auto-labels only: DetectionEval against the logs' ground truth
    recovered: int = 0  # finished by an earlier run that died, found in the store (not computed again)
    # What the computed scenes cost (cost.py): frames (or boxes) they produced, the seconds their
    # workers measured, and on AWS Batch the chunk jobs' durations (0 elsewhere); gpu: on GPUs.
    frames: int = 0
    worker_s: float = 0.0
    job_s: float = 0.0
    gpu: bool = False


@dataclass(frozen=True)
class PartRecord:
    """One merged part (part.json, the last file of its version folder)."""

    part: int
    version: str
    scenes: int
    samples: int
    sample_data: int
    images: int
    sample_annotations: int
    scene_names: dict[str, str]  # scene id -> scene-NNNN
    splits: dict[str, str]  # scene id -> split name
    failed: dict[str, str]
    checks: dict[str, list[str]]  # check name -> problems
    seconds: float


@dataclass(frozen=True)
class IndexPart:
    part: int
    version: str
    scenes: int
    samples: int
    images: int
    splits: dict[str, int]


@dataclass(frozen=True)
class DatasetIndex:
    """The published dataset (datasets/<name>/index.json): its parts, each a nuScenes version in
    one dataroot; datasets/<name>/scenes.parquet maps every scene id to its part and scene name."""

    name: str
    spec_hash: str
    dataroot: str
    dataroot_key: str
    parts: list[IndexPart]
    scenes: int
    samples: int
    images: int
    splits: dict[str, int]
    scene_table: str
    run_id: str
    built_at: str
    failed: dict[str, str] = field(default_factory=dict)
    checks: dict[str, list[str]] = field(default_factory=dict)
    rewritten_parts: int = 0
    merge_wall_s: float = 0.0
    preview: str = ""
    autolabel_quality: dict | None = None
    # What this build's merge cost (cost.py): scenes and parts merged, the seconds the part merges
    # measured, and on AWS Batch their jobs' durations (0 elsewhere).
    merged_scenes: int = 0
    merge_worker_s: float = 0.0
    merge_job_s: float = 0.0

    @property
    def versions(self) -> list[str]:
        return [p.version for p in self.parts]


def to_json(record) -> dict:
    return dataclasses.asdict(record)


def from_json(cls: type[R], data: dict) -> R:
    """A record from its JSON mapping; nested record lists are rebuilt by their annotated type."""
    nested = {"parts": {DatasetPlan: PartPlan, DatasetIndex: IndexPart}.get(cls)}
    values = dict(data)
    if nested["parts"] is not None:
        values["parts"] = [nested["parts"](**p) for p in data["parts"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def write_record(store: ObjectStore, key: str, record) -> None:
    store.write_json(key, to_json(record))


def read_record(store: ObjectStore, key: str, cls: type[R]) -> R:
    return from_json(cls, store.read_json(key))
