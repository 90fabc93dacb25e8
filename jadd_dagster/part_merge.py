"""Merge one dataset part from the store: the task a merge worker runs (compute/worker.py).

A part's scenes are sampled scene records in the profile's dataroot (layout.py); their frames are
already there under their nuScenes filenames, so the merge writes tables only: the part's version
folder (13 tables, splits.json, can_bus/, maps/) is staged, checked (frame counts, nuScenes
invariants, the devkit opens it) and published with part.json last. Memory and time grow with the
part, never with the dataset.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from jadd_dagster.compute.chunks import SceneTask
from jadd_dagster.layout import PART_RECORD, part_key, preview_key, sampled_root_key
from jadd_dagster.logs.format import LIDAR_CHANNELS
from jadd_dagster.merge import merge_part, split_score
from jadd_dagster.nuscenes.splits import current_name, split_name
from jadd_dagster.nuscenes.writer import VERSION_PREFIX
from jadd_dagster.records import PartRecord, to_json
from jadd_dagster.scene_record import SCENE_CAN, SCENE_JSON, SCENE_POSE, SceneRecord
from jadd_dagster.storage import ObjectStore

# Part of every part's content hash: bump it when the merge writes other tables. 2: splits named
# jadd-train and jadd-val (nuscenes/splits.py), so parts written with train and val merge again.
MERGE_FORMAT = 2
CHECKS = ("frame_counts", "nuscenes_invariants", "devkit")


def part_version(name: str, part: int, content: dict) -> str:
    """The version folder name of a part: v1.0-<name>-partNNNN-<8 hex of its content>. A part
    whose scenes, labels and settings did not change keeps its name and is not merged again; a
    changed part gets a new folder, so readers of the previous index never see it half written."""
    digest = hashlib.sha1(json.dumps({**content, "format": MERGE_FORMAT}, sort_keys=True).encode()).hexdigest()
    return f"{VERSION_PREFIX}{name}-part{part:04d}-{digest[:8]}"


def split_of(val_fraction: float, forced: dict[str, str]) -> Callable[[str], str]:
    """A scene's split: forced (the plan's few exceptions that keep both splits non-empty), else
    by merge.split_score alone, which is stable as scenes are added. A forced split of a plan stored
    before the rename ('train', 'val') is read as its current name."""
    return lambda scene_id: current_name(forced[scene_id]) if scene_id in forced else split_name(
        split_score(scene_id, 0) < val_fraction)


def expected_frames_per_channel(
    scene_length_s: float, keyframe_hz: int, sweep_hz: int, source_hz: float | None = None, first_frame_us: int = 0,
) -> int:
    """The frames a camera gives a scene of scene_length_s: what sampling's select_frames keeps from
    a camera at source_hz (None: at sweep_hz) whose frames lie on a steady grid through
    first_frame_us (µs after the scene's start). A camera at sweep_hz or faster gives the keyframes
    plus the sweeps between consecutive keyframes; a slower one gives each of its frames once (a
    12 Hz camera in a 2/30 Hz dataset: 235 frames in 20 s, not 586). Where the camera's rate does
    not divide the sweep rate its phase can move the count by one, hence first_frame_us."""
    source_hz = float(source_hz or sweep_hz)
    phase_us = 0  # a camera at sweep_hz or faster gives one frame a target time at any phase: one count a rate
    if source_hz < sweep_hz:
        period_us = 1e6 / source_hz
        phase_us = int(round(first_frame_us - period_us * math.floor(first_frame_us / period_us)))
    return _selected_count(int(round(scene_length_s * 1e6)), int(keyframe_hz), int(sweep_hz), source_hz, phase_us)


@functools.lru_cache(maxsize=4096)
def _selected_count(length_us: int, keyframe_hz: int, sweep_hz: int, source_hz: float, phase_us: int) -> int:
    """len(select_frames(...)) over [0, length_us) for frames at phase_us + k / source_hz: the
    selection's own rules, never a second copy of its arithmetic."""
    from jadd_dagster.sampling.frames import select_frames

    period_us = 1e6 / source_hz
    k = np.arange(math.floor(-(1e6 + phase_us) / period_us), math.ceil((length_us + 1e6 - phase_us) / period_us) + 1)
    stamps = np.unique(np.round(phase_us + k * period_us).astype(np.int64))
    return len(select_frames(stamps, 0, length_us, keyframe_hz, sweep_hz, source_hz=source_hz))


def frame_count_problems(records: list[SceneRecord], scene_length_s: float) -> list[str]:
    """Scenes whose frame count per channel differs from what their cameras give at the scene's
    rates (expected_frames_per_channel, at each camera's own rate where the record has it) or from
    the number of keyframes (lidar: one sweep per keyframe)."""
    problems = []
    for record in sorted(records, key=lambda r: r.scene_id):
        keyframe_hz, sweep_hz = int(record.keyframe_hz), int(record.sweep_hz)
        counts = Counter(f.channel for f in record.frames)
        first = {}
        for f in record.frames:
            first[f.channel] = min(first.get(f.channel, f.timestamp_us), f.timestamp_us)
        for channel in record.cameras:
            if channel in LIDAR_CHANNELS:
                want = int(round(scene_length_s * keyframe_hz))
            elif channel not in record.camera_rates_hz:  # a record from before the rates: every camera at sweep_hz
                want = expected_frames_per_channel(scene_length_s, keyframe_hz, sweep_hz)
            else:
                want = expected_frames_per_channel(
                    scene_length_s, keyframe_hz, sweep_hz, record.camera_rates_hz[channel],
                    first.get(channel, record.start_time_us) - record.start_time_us)
            if counts.get(channel, 0) != want:
                rate = record.camera_rates_hz.get(channel)
                at = f" (camera at {rate:g} Hz)" if rate and rate < sweep_hz else ""
                problems.append(f"{record.scene_id} {channel}: {counts.get(channel, 0)} frames, expected {want}{at}")
    return problems


class StoredFrames:
    """Which frames exist in the profile's dataroot: a local folder is asked directly; on S3 the
    frames of one log and channel share a key prefix, listed once when first asked."""

    def __init__(self, store: ObjectStore, profile_key: str):
        self.store = store
        self.root = sampled_root_key(profile_key)
        self.local = store.local_path(self.root)
        self.listed: dict[str, set[str]] = {}

    def __call__(self, filename: str) -> bool:
        if self.local is not None:
            return (self.local / filename).is_file()
        prefix = filename[: filename.rfind("__") + 2]  # samples/<CH>/<log>__<CH>__: one log's frames
        if prefix not in self.listed:
            start = len(self.root) + 1
            self.listed[prefix] = {k[start:] for k in self.store.keys_starting_with(f"{self.root}/{prefix}")}
        return filename in self.listed[prefix]


def scene_folders(store: ObjectStore, tasks: list[SceneTask], scratch: Path) -> Iterator[Path]:
    """Local folders with each task's scene.json, can.parquet and pose.parquet (input_key): the
    store's own folders, or the three small files fetched into scratch."""
    for i, task in enumerate(tasks):
        local = store.local_path(task.input_key)
        if local is not None:
            yield local
            continue
        folder = scratch / f"{i:05d}"
        for name in (SCENE_JSON, SCENE_CAN, SCENE_POSE):
            key = f"{task.input_key}/{name}"
            if name == SCENE_JSON or store.exists(key):
                store.download_file(key, folder / name)
        yield folder


def merge_stored_part(store: ObjectStore, settings: dict, tasks: list[SceneTask], scratch: Path) -> PartRecord:
    """Merge, check and publish one part; its PartRecord (also the part's part.json).

    settings: name, part, version, profile_key, val_fraction, forced_splits, include_can_bus,
    scene_length_s, labelled (tasks' output_key is then each scene's labels.json) and preview
    (render the dataset's preview.jpg from this part)."""
    from jadd_dagster.build import devkit_problems, render_preview
    from jadd_dagster.nuscenes.validate import validate_dataset

    started = time.monotonic()
    version, profile_key = settings["version"], settings["profile_key"]
    frames = StoredFrames(store, profile_key)
    records: list[SceneRecord] = []
    labels = {t.scene_id: t.output_key for t in tasks} if settings["labelled"] else None
    annotations = None
    if labels is not None:
        annotations = lambda record, _: store.read_json(labels[record.scene_id])["annotations"]  # noqa: E731
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-part-") as tmp, ExitStack() as stack:
        check_root = Path(tmp) / "root"
        check_root.mkdir()
        out = stack.enter_context(store.staged_output(part_key(profile_key, version), last=[PART_RECORD], scratch=Path(tmp)))
        merged = merge_part(
            scene_folders(store, tasks, Path(tmp) / "scenes"), check_root, version,
            split_of(settings["val_fraction"], settings["forced_splits"]),
            include_can_bus=settings["include_can_bus"], annotations=annotations,
            link_image=lambda *_: True, frame_exists=lambda _, filename: frames(filename),
            on_record=records.append, folder=out,
        )
        os.symlink(out, check_root / version)  # the devkit and the checks see <root>/<version>
        checks = {name: [] for name in CHECKS}
        if merged is not None and merged.scenes:
            written = [r for r in records if r.scene_id in merged.scene_names]
            checks["frame_counts"] = frame_count_problems(written, settings["scene_length_s"])
            in_part = lambda name: (check_root / name).is_file() if name.startswith(f"{version}/") else frames(name)  # noqa: E731
            checks["nuscenes_invariants"] = validate_dataset(check_root, version, in_part)
            checks["devkit"] = devkit_problems(check_root, [version])
            if settings.get("preview") and not checks["devkit"]:
                image = render_preview(check_root, version, store, profile_key)
                if image:
                    store.put_bytes(preview_key(settings["name"]), image)
        record = PartRecord(
            part=settings["part"], version=version, scenes=merged.scenes if merged else 0,
            samples=merged.samples if merged else 0, sample_data=merged.sample_data if merged else 0,
            images=merged.images if merged else 0, sample_annotations=merged.sample_annotations if merged else 0,
            scene_names=merged.scene_names if merged else {}, splits=merged.splits if merged else {},
            failed=dict(merged.failed) if merged else {}, checks=checks,
            seconds=round(time.monotonic() - started, 3),
        )
        (out / PART_RECORD).write_text(json.dumps(to_json(record)))
    return record
