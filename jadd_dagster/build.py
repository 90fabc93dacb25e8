"""Dataset build steps between curation and the registry: tasks, sampling profile, merge, checks.

Plain functions; the Dagster assets in defs/dataset_assets.py call them.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from jadd_dagster.compute.chunks import SceneTask
from jadd_dagster.compute.worker import STAGE_SAMPLED
from jadd_dagster.registry import SceneOutput
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import DATASETS, LOGS, SCENES, LocalStore


def sampling_profile(spec: DatasetSpec) -> SamplingProfile:
    return SamplingProfile(
        keyframe_hz=spec.keyframe_hz,
        sweep_hz=spec.sweep_hz,
        undistort=spec.undistort,
        image_size=spec.image_size,
        jpeg_quality=spec.jpeg_quality,
        channels=tuple(spec.channels),
    )


def scene_output_key(profile_key: str, log_id: str, index: int) -> str:
    return f"{SCENES}/{STAGE_SAMPLED}/{profile_key}/{log_id}/{index:04d}"


def sampling_tasks(scenes: pd.DataFrame, profile_key: str) -> list[SceneTask]:
    """One task per catalog row, pointing at its log and at the profile's output folder."""
    return [
        SceneTask(
            scene_id=row.scene_id,
            log_id=row.log_id,
            scene_index=int(row.scene_index),
            start_time_us=int(row.start_time_us),
            end_time_us=int(row.end_time_us),
            log_key=f"{LOGS}/{row.log_id}",
            output_key=scene_output_key(profile_key, row.log_id, int(row.scene_index)),
        )
        for row in scenes.itertuples(index=False)
    ]


def expected_frames_per_channel(scene_length_s: float, keyframe_hz: int, sweep_hz: int) -> int:
    """Keyframes at keyframe_hz over the scene, plus the sweeps between consecutive keyframes."""
    keyframes = int(round(scene_length_s * keyframe_hz))
    return keyframes + (keyframes - 1) * (sweep_hz // keyframe_hz - 1)


def frame_count_problems(records: list[SceneRecord], expected: int) -> list[str]:
    """Scenes whose frame count per channel differs from duration × rate."""
    problems = []
    for record in records:
        counts = pd.Series([f.channel for f in record.frames]).value_counts()
        for channel in record.cameras:
            got = int(counts.get(channel, 0))
            if got != expected:
                problems.append(f"{record.scene_id} {channel}: {got} frames, expected {expected}")
    return problems


def dataset_key(name: str) -> str:
    return f"{DATASETS}/{name}"


@dataclass
class DatasetPaths:
    """Where a dataset build writes: the final dataroot and a staging folder swapped in at the end."""

    dataroot: Path
    staging: Path

    @classmethod
    def for_run(cls, store: LocalStore, name: str, run_id: str) -> "DatasetPaths":
        base = store.path(dataset_key(name))
        return cls(base / "nuscenes", base / f".staging-{run_id[:8]}")

    def publish(self) -> None:
        """Replace the previous build with the staged one; the old one stays until this succeeds."""
        old = self.dataroot.with_name(f".old-{int(time.time())}")
        if self.dataroot.exists():
            self.dataroot.rename(old)
        self.staging.rename(self.dataroot)
        shutil.rmtree(old, ignore_errors=True)


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
    sampling_wall_s: float = 0.0
    merge_wall_s: float = 0.0
    dagster_run_id: str = ""


def scene_outputs_in_order(outputs: list[SceneOutput], store: LocalStore) -> list[Path]:
    return [store.path(o.path) for o in sorted(outputs, key=lambda o: o.scene_id)]


@dataclass
class DatasetChecks:
    """Problems found in a built dataset, per check (an empty list passes)."""

    frame_counts: list[str]
    nuscenes_invariants: list[str]
    devkit: list[str]


def assemble_dataset(
    spec: DatasetSpec,
    outputs: list[SceneOutput],
    store: LocalStore,
    run_id: str,
    scene_length_s: float,
    scenes_per_part: int = 5000,
) -> tuple[BuildSummary, DatasetChecks]:
    """Merge scene outputs into a staged dataroot, check it, then publish it in place of the old one."""
    from jadd_dagster.merge import merge_scenes
    from jadd_dagster.nuscenes.validate import validate_dataset

    paths = DatasetPaths.for_run(store, spec.name, run_id)
    shutil.rmtree(paths.staging, ignore_errors=True)
    started = time.monotonic()
    scene_dirs = scene_outputs_in_order(outputs, store)
    merged = merge_scenes(
        scene_dirs, paths.staging, spec.name, val_fraction=spec.val_fraction,
        scenes_per_part=scenes_per_part, include_can_bus=spec.include_can_bus,
    )
    merged_ids = set(merged.scene_names)
    records = [r for r in (SceneRecord.load(d) for d in scene_dirs if (d / "scene.json").exists()) if r.scene_id in merged_ids]
    expected = expected_frames_per_channel(scene_length_s, spec.keyframe_hz, spec.sweep_hz)
    checks = DatasetChecks(
        frame_counts=frame_count_problems(records, expected),
        nuscenes_invariants=[p for v in merged.versions for p in validate_dataset(paths.staging, v)],
        devkit=devkit_problems(paths.staging, merged.versions),
    )
    paths.publish()
    summary = BuildSummary(
        name=spec.name,
        spec_hash=spec.spec_hash(),
        dataroot=str(paths.dataroot),
        versions=list(merged.versions),
        scenes=merged.scenes,
        samples=merged.samples,
        images=merged.images,
        cached_scenes=0,
        computed_scenes=0,
        failed_scenes={str(k): str(v) for k, v in merged.failed},
        merge_wall_s=round(time.monotonic() - started, 3),
        dagster_run_id=run_id,
    )
    return summary, checks


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
