"""Benchmark: a dataset build at 10,000 to 1,000,000 scenes — SIMULATED WORKERS.

What is real: the Dagster graph of jadd_dagster.definitions, materialized in this process one stage
per `dg.materialize` call (scene_catalog, dataset_plan, dataset_frames, dataset_labels,
jadd_dataset, dataset_registry), on a Dagster instance in PostgreSQL (a throwaway server started as
tests/services/postgres.py does, PostgreSQL's default durable settings) or SQLite; the registry in
the same server (or SQLite); a local-folder object store; the orchestration code (Curation, Split,
cache look-up, manifests, result records, per-scene materializations, part manifests, the index);
the real worker loop `compute.worker.run_chunk` with the real `scene_outputs.place_frames`; and
the whole Merge: real `python -m jadd_dagster.compute.worker` processes of LocalComputeBackend
running part_merge.merge_stored_part (tables, can_bus/, maps/, frame-count and nuScenes checks, a
devkit load of each part).

What is simulated, and says so in every table: the sampling worker's decode and encode. The
compute backend of the bench (SimulatedCompute) runs the sampling chunks in a pool of
--workers processes, each through compute.worker.run_chunk with its per-scene function replaced by
`simulated_sample`, which writes what compute.worker._sample writes — 40 frames (1 camera,
keyframes 2 Hz, sweeps 2 Hz, 20 s scenes) of one valid 64x36 JPEG of ~0.7 kB, moved by
place_frames to samples/CAM_FRONT/<log>__CAM_FRONT__<µs>.jpg; each frame is a hard link to a JPEG
file the worker process wrote once (a new inode costs 0.3-1.7 ms on this machine's disk, so
millions of distinct files would take hours; a link makes the frame's own directory entry, and a
copy of it would show as a new name or a new inode); then scene.json, can.parquet and
pose.parquet (the log's rows in the window and one either side, 100 Hz and 50 Hz, the ego driving
a 100 m-radius loop so each log's map mask stays small) and the result record — without reading
any video. Real sampling of such a camera costs at least 1.07 CPU s per scene
(REAL_SAMPLING_CPU_S). The simulated workers parse each manifest object (1,000 chunks) once per
process; a real worker, one chunk per process, parses the whole object for its one chunk, and
the bench reports that cost per chunk. Log ingest is skipped: the per-log scene tables
(catalog/scenes/<log>.parquet, 180 scenes = 1 h per log) are written directly and the `logs`
partitions registered; the catalog stage is then the real scene_catalog asset.

Measured per stage: wall s; this (the run) process's peak RSS during the stage (VmHWM, reset
through /proc/self/clear_refs before it); store requests of this process by kind (the store
resource returns a counting proxy of LocalStore); files the workers added under scenes/ and
runs/; the merge workers' peak RSS (each worker's VmHWM, polled); seconds inside
record_materializations (the per-scene bookkeeping) and inside the per-chunk progress log
(dispatch's on_progress = context.log.info, one event per chunk); frame copies (the proxy's copy
calls; the frames' count and inode checksum before and after the merge; .jpg files inside
version folders). Rebuilds on the same store: one with nothing new and one after adding 1 % new
scenes (new logs appended to the catalog). A size given with --million-plan-only runs only the
catalog, the plan and the Split of dataset_frames (the asset runs until it dispatches its chunks:
cache look-up, chunking and manifests written; the backend then stops it).

Usage:
    python bench/bench_scale.py [--sizes 10000 100000] [--backend postgres|sqlite]
        [--rebuild-sizes 10000 100000] [--million-plan-only] [--workers 2] [--can-bus]
        [--can-bus-size 500]
        [--workdir DIR] [--keep]
    python bench/bench_scale.py --sizes 1000000 --million-plan-only   # plan + split of 1M
Disk: 40 frame links and about 100 kB in 5 files per scene; the store of each size is deleted after
it (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

import cv2
import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jadd_dagster.camera import CameraCalibration, camera_to_ego_rotation, pinhole_intrinsic, quaternion_from_matrix, yaw_quaternion
from jadd_dagster.compute import worker
from jadd_dagster.compute.chunks import SceneTask
from jadd_dagster.compute.local import ChunkOutcome
from jadd_dagster.defs import stages as defs_stages
from jadd_dagster.defs.automation import dataset_run_config
from jadd_dagster.defs.compute_resources import ComputeBackend, LocalComputeBackend
from jadd_dagster.defs.partitions import dataset_partitions, log_partitions
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.layout import (
    CATALOG_KEY, STAGE_SAMPLED, index_key, plan_key, sampled_root_key, scene_index_key, scene_table_key,
)
from jadd_dagster.logs.format import CAN_COLUMNS, POSE_COLUMNS
from jadd_dagster.records import DatasetIndex, DatasetPlan, read_record
from jadd_dagster.planning import sampling_profile
from jadd_dagster.sampling import THREADS_ENV, SamplingProfile
from jadd_dagster.sampling.frames import target_times
from jadd_dagster.scene_outputs import place_frames
from jadd_dagster.scene_record import SCENE_CAN, SCENE_JSON, SCENE_POSE, EgoPose, FrameRecord, SceneRecord
from jadd_dagster.scenes import CATALOG_COLUMNS
from jadd_dagster.spec import parse_spec
from jadd_dagster.storage import LocalStore, ObjectStore, open_store, write_parquet

SIMULATED = "SIMULATED WORKERS"
NAME = "scale"
SCENES_PER_LOG = 180  # 1 h of 20 s scenes
SCENE_US = 20_000_000
LOG_START_US = 1_700_000_000_000_000
LOG_GAP_US = 2 * 3600 * 1_000_000  # logs of 1 h start 2 h apart
LOCATIONS = ("sim-tokyo", "sim-osaka", "sim-nagoya")
CHANNEL = "CAM_FRONT"
WIDTH, HEIGHT = 64, 36
LOOP_CENTRE_M, LOOP_RADIUS_M, SPEED_MPS = (150.0, 150.0), 100.0, 10.0
CAN_US, POSE_US = 10_000, 20_000  # 100 Hz, 50 Hz
# Real sampling of one 20 s scene of one 1600x900 camera costs at least this many CPU seconds:
# bench/RESULTS.md, "Sampling one scene", row "decode only, 10 Hz frames, skip non-ref" (1.07 CPU s).
# Any sampling rate must decode the reference frames; the 2/10 Hz sampling row is 2.47 CPU s.
REAL_SAMPLING_CPU_S = 1.07
STAGES = (
    ("catalog", "scene_catalog"), ("plan", "dataset_plan"), ("frames", "dataset_frames"),
    ("labels", "dataset_labels"), ("merge", "jadd_dataset"), ("registry", "dataset_registry"),
)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # events are stored all the same
MIB = 1 << 20

# Store methods that are requests to the store (one call each; list_keys and publish_folder are
# a listing or an upload per file on S3); local_path and describe are not.
REQUEST_METHODS = (
    "exists", "list_children", "list_keys", "get_bytes", "put_bytes", "download_file", "upload_file", "copy",
    "delete_prefix", "delete_keys", "read_json", "write_json", "local_folder", "staged_output", "publish_folder",
)


def spec_data(include_can_bus: bool) -> dict:
    """The dataset spec of the bench: one camera, 2 Hz keyframes and sweeps (40 frames a scene)."""
    return {"name": NAME, "channels": [CHANNEL], "keyframe_hz": 2, "sweep_hz": 2, "image_width": WIDTH,
            "image_height": HEIGHT, "include_can_bus": include_can_bus, "val_fraction": 0.2}


# ---------------------------------------------------------------------------------------------
# Counting what this process asks of the store, and timing the bookkeeping.


class Tally:
    """Counts and seconds of this process: store requests, bookkeeping, progress logging."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.calls: Counter = Counter()
        self.seconds: Counter = Counter()


TALLY = Tally()


class CountingStore:
    """A proxy of an ObjectStore that counts the requests made through it (REQUEST_METHODS)."""

    def __init__(self, inner: ObjectStore):
        self._inner = inner
        self.url = inner.url

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name not in REQUEST_METHODS or not callable(attr):
            return attr

        def counted(*args, **kwargs):
            TALLY.calls[name] += 1
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                TALLY.seconds[f"store.{name}"] += time.perf_counter() - started

        return counted


class CountingStoreResource(StoreResource):
    """The store resource, its store wrapped in CountingStore."""

    def store(self) -> ObjectStore:
        return CountingStore(super().store())  # type: ignore[return-value]


def timed(name: str, function: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TALLY.seconds[name] += time.perf_counter() - started

    return wrapper


# ---------------------------------------------------------------------------------------------
# The simulated sampling worker.


def tiny_jpeg() -> bytes:
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, :, 0] = np.linspace(0, 255, WIDTH, dtype=np.uint8)[None, :]
    image[:, :, 1] = 120
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def log_number(log_id: str) -> int:
    return int(log_id.rsplit("-", 1)[1])


def log_start_us(number: int) -> int:
    return LOG_START_US + number * LOG_GAP_US


def ego_pose(log_start: int, t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y (m) and heading (rad) of the ego on its loop at t_us."""
    angle = SPEED_MPS / LOOP_RADIUS_M * (np.asarray(t_us, dtype=np.int64) - log_start) / 1e6
    return (LOOP_CENTRE_M[0] + LOOP_RADIUS_M * np.cos(angle), LOOP_CENTRE_M[1] + LOOP_RADIUS_M * np.sin(angle),
            angle + math.pi / 2)


def camera_json() -> dict:
    return CameraCalibration(
        channel=CHANNEL, width=WIDTH, height=HEIGHT, intrinsic=pinhole_intrinsic(WIDTH, HEIGHT, 70.0),
        translation=(1.5, 0.0, 1.6), rotation=quaternion_from_matrix(camera_to_ego_rotation(0.0)),
    ).to_json()


def can_table(log_start: int, start_us: int, end_us: int) -> pa.Table:
    """The log's CAN rows in [start, end) and one either side (what the sampler slices)."""
    t = np.arange(start_us - CAN_US, end_us + CAN_US, CAN_US, dtype=np.int64)
    s = (t - log_start) / 1e6
    n = len(t)
    columns = {
        "timestamp_us": t, "speed_mps": SPEED_MPS + 0.2 * np.sin(0.3 * s), "steering_deg": np.full(n, 25.0),
        "accel_mps2": 0.06 * np.cos(0.3 * s), "brake": np.where(s % 30 < 3, 0.2, 0.0),
        "throttle": np.where(s % 30 < 3, 0.0, 0.2), "yaw_rate_rps": np.full(n, SPEED_MPS / LOOP_RADIUS_M),
        "gear": np.full(n, 3, dtype=np.int64), "turn_signal": np.zeros(n, dtype=np.int64),
    }
    return pa.table({c: columns[c] for c in CAN_COLUMNS})


def pose_table(log_start: int, start_us: int, end_us: int) -> pa.Table:
    t = np.arange(start_us - POSE_US, end_us + POSE_US, POSE_US, dtype=np.int64)
    x, y, yaw = ego_pose(log_start, t)
    zeros = np.zeros(len(t))
    columns = {"timestamp_us": t, "x": x, "y": y, "z": zeros, "qw": np.cos(yaw / 2), "qx": zeros, "qy": zeros,
               "qz": np.sin(yaw / 2)}
    return pa.table({c: columns[c] for c in POSE_COLUMNS})


def write_simulated_scene(task: SceneTask, profile: SamplingProfile, out: Path, frame: Path) -> SceneRecord:
    """What sample_scene leaves in its staging folder, without a video: frames as
    <CHANNEL>/<µs>.jpg at the profile's rates (hard links of the JPEG file `frame`), can.parquet,
    pose.parquet; the record (not saved)."""
    number = log_number(task.log_id)
    log_start = log_start_us(number)
    keyframes = target_times(task.start_time_us, task.end_time_us, profile.keyframe_hz)
    times = target_times(task.start_time_us, task.end_time_us, profile.sweep_hz)
    times = times[times <= keyframes[-1]]  # no sweep after the last keyframe
    keyframe_index = {int(t): i for i, t in enumerate(keyframes)}
    x, y, yaw = ego_pose(log_start, times)
    frames = []
    for channel in profile.channels:
        folder = out / channel
        folder.mkdir(parents=True, exist_ok=True)
        for i, t in enumerate(times.tolist()):
            path = f"{channel}/{t}.jpg"
            os.link(frame, out / path)
            k = keyframe_index.get(t)
            frames.append(FrameRecord(channel, t, k is not None, k, path, WIDTH, HEIGHT,
                                      EgoPose((float(x[i]), float(y[i]), 0.0), yaw_quaternion(float(yaw[i])))))
    pq.write_table(can_table(log_start, task.start_time_us, task.end_time_us), out / SCENE_CAN)
    pq.write_table(pose_table(log_start, task.start_time_us, task.end_time_us), out / SCENE_POSE)
    date = time.strftime("%Y-%m-%d", time.gmtime(log_start / 1e6))
    return SceneRecord(
        scene_id=task.scene_id, log_id=task.log_id, scene_index=task.scene_index, location=LOCATIONS[number % 3],
        vehicle="sim-car", date_captured=date, log_start_time_us=log_start, start_time_us=task.start_time_us,
        end_time_us=task.end_time_us, profile=profile.key(), keyframe_hz=float(profile.keyframe_hz),
        sweep_hz=float(profile.sweep_hz), cameras={c: camera_json() for c in profile.channels},
        keyframe_times_us=[int(t) for t in keyframes], frames=frames,
    )


LINKS_PER_FRAME_FILE = 60_000  # ext4 allows 65,000 links to one inode


_FRAME_FILE: dict = {"path": None, "links": 0, "files": 0}


def frame_file(store: ObjectStore, links: int) -> Path:
    """This process's JPEG file beside the store's folder (same file system, outside the store),
    for `links` more hard links; a new file when the current one would pass LINKS_PER_FRAME_FILE."""
    state = _FRAME_FILE
    if state["path"] is None or state["links"] + links > LINKS_PER_FRAME_FILE:
        state["files"] += 1
        state["path"] = Path(store.root).parent / f".frame-{os.getpid()}-{state['files']}.jpg"
        state["path"].write_bytes(tiny_jpeg())
        state["links"] = 0
    state["links"] += links
    return state["path"]


def simulated_sample(store: ObjectStore, task: SceneTask, settings: dict, logs, threads: int = 1) -> int:
    """compute.worker._sample without a video: the same staged output, frames placed by
    place_frames, scene.json last; returns the frame count. Scenes run one after the other in each
    simulated worker (_init_sampler): the pool's processes are the workers."""
    profile = SamplingProfile.from_json(settings)
    with store.staged_output(task.output_key, last=[SCENE_JSON], scratch=logs.scratch) as out:
        frames = len(profile.channels) * len(target_times(task.start_time_us, task.end_time_us, profile.sweep_hz))
        record = write_simulated_scene(task, profile, out, frame_file(store, frames))
        record = place_frames(store, out, replace(record, profile=profile.key()))
        record.save(out)
    return len(record.frames)


class ManifestObjects:
    """The store, with the last manifest object read kept (read_manifest reads a whole object of
    1,000 chunks for each chunk)."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.last: tuple[str, object] | None = None

    def read_json(self, key: str):
        if self.last is None or self.last[0] != key:
            self.last = (key, self.store.read_json(key))
        return self.last[1]


_STORES: dict[str, tuple[ObjectStore, ManifestObjects]] = {}


def _init_sampler() -> None:
    sys.stdout = open(os.devnull, "w")  # the worker prints one progress line per scene
    os.environ[THREADS_ENV] = "1"  # one scene at a time: frame_file's links are counted per process
    worker.STAGES[STAGE_SAMPLED] = simulated_sample


def simulate_chunk(job: tuple[str, str]) -> tuple[str, int, str, float, int]:
    """One sampling chunk in a pool process: (manifest key, exit code, error tail, seconds, scenes ok)."""
    store_url, key = job
    started = time.monotonic()
    if store_url not in _STORES:
        store = open_store(store_url)
        _STORES[store_url] = (store, ManifestObjects(store))
    store, manifests = _STORES[store_url]
    try:
        manifest = worker.read_manifest(manifests, key)  # type: ignore[arg-type]
        counts = worker.run_chunk(manifest, store)
        return key, 0, "", time.monotonic() - started, counts["ok"]
    except Exception as error:  # noqa: BLE001 - reported as the chunk's exit code, as a process would be
        return key, 1, f"{type(error).__name__}: {error}", time.monotonic() - started, 0


class ChildPeaks:
    """Peak RSS (VmHWM) of this process's child worker processes, polled while a stage runs."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ChildPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(self.interval_s):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    if stat[stat.rfind(")") + 2 :].split()[1] != me:
                        continue
                    if b"jadd_dagster.compute.worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                except (OSError, IndexError):
                    continue
                if hwm:
                    self.peaks[int(pid)] = max(self.peaks.get(int(pid), 0.0), int(hwm.group(1)) / 1024)


class SimulatedCompute(ComputeBackend):
    """The bench's compute backend: sampling chunks by simulated workers in a process pool, merges
    (and anything else) by the real LocalComputeBackend."""

    workers: int = 2
    merge_workers: int = 2
    stop_at_dispatch: bool = False  # the plan-and-split run: stop the asset when it dispatches

    def run_chunks(self, context, store, manifest_keys, *, stage, tags, needs_gpu=False, on_done=None):
        if self.stop_at_dispatch:
            SPLIT.update(chunks=len(manifest_keys), dispatched_at=time.perf_counter())
            raise SplitDone(f"{len(manifest_keys)} chunks dispatched")
        on_done = timed("progress_log", on_done) if on_done else None
        if stage != STAGE_SAMPLED:
            with ChildPeaks() as peaks:
                outcomes = LocalComputeBackend(max_workers=self.merge_workers).run_chunks(
                    context, store, manifest_keys, stage=stage, tags=tags, needs_gpu=needs_gpu, on_done=on_done)
            MERGE_PEAKS.extend(peaks.peaks.values())
            return outcomes
        started = time.perf_counter()
        outcomes = []
        jobs = [(store.url, key) for key in manifest_keys]
        with multiprocessing.get_context("spawn").Pool(self.workers, initializer=_init_sampler) as pool:
            for key, code, tail, seconds, ok in pool.imap_unordered(simulate_chunk, jobs, chunksize=16):
                outcome = ChunkOutcome(key, code, tail, seconds)
                outcomes.append(outcome)
                SIM["scenes"] += ok
                SIM["worker_s"] += seconds
                if on_done:
                    on_done(outcome, len(outcomes), len(manifest_keys))
        SIM["compute_wall_s"] += time.perf_counter() - started
        order = {key: i for i, key in enumerate(manifest_keys)}
        return sorted(outcomes, key=lambda o: order[o.manifest_key])


class SplitDone(Exception):
    """Raised by the backend of a plan-and-split run when the asset dispatches its chunks."""


SIM: Counter = Counter()  # the simulated sampling of the current stage: compute_wall_s, worker_s, scenes
MERGE_PEAKS: list[float] = []  # peak RSS (MiB) of each merge worker of the current stage
SPLIT: dict = {}


# ---------------------------------------------------------------------------------------------
# The catalog (log ingest skipped).


def log_id(number: int) -> str:
    return f"scale-{number:06d}"


def log_table(number: int, scenes: int) -> pd.DataFrame:
    """A log's scene table as scene_index writes it (CATALOG_COLUMNS), for the loop drive."""
    lid = log_id(number)
    index = np.arange(scenes, dtype=np.int64)
    start = log_start_us(number) + index * SCENE_US
    when = pd.to_datetime(start, unit="us", utc=True)
    n = len(index)
    table = pd.DataFrame({
        "scene_id": [f"{lid}/{i:04d}" for i in index], "log_id": lid, "scene_index": index,
        "location": LOCATIONS[number % 3], "vehicle": "sim-car", "channels": CHANNEL,
        "camera_sizes": f"{CHANNEL}={WIDTH}x{HEIGHT}", "start_time_us": start,
        "end_time_us": start + SCENE_US, "date": when.strftime("%Y-%m-%d"), "hour": when.hour.astype(np.int64),
        "duration_s": np.full(n, SCENE_US / 1e6), "mean_speed_mps": np.full(n, SPEED_MPS),
        "max_speed_mps": np.full(n, SPEED_MPS + 0.2), "min_speed_mps": np.full(n, SPEED_MPS - 0.2),
        "max_abs_steering_deg": np.full(n, 25.0), "max_abs_yaw_rate_rps": np.full(n, SPEED_MPS / LOOP_RADIUS_M),
        "max_decel_mps2": np.full(n, 0.06), "max_accel_mps2": np.full(n, 0.06), "brake_fraction": np.full(n, 0.1),
        "distance_m": np.full(n, SPEED_MPS * SCENE_US / 1e6),
        "max_can_gap_s": np.full(n, CAN_US / 1e6), "max_pose_gap_s": np.full(n, POSE_US / 1e6),
        "has_gap": np.zeros(n, dtype=bool),
    })
    for column in CATALOG_COLUMNS:  # a column added to the catalog since: a neutral value
        if column not in table:
            table[column] = np.zeros(n, dtype=bool) if column.startswith(("has_", "is_")) else np.zeros(n)
    return table[list(CATALOG_COLUMNS)]


def add_logs(store: ObjectStore, instance: dg.DagsterInstance, first: int, scenes: int) -> int:
    """Write per-log scene tables for `scenes` more scenes (logs of SCENES_PER_LOG, the last one
    shorter) and register the logs as partitions; returns the next log number."""
    number, ids = first, []
    while scenes > 0:
        count = min(SCENES_PER_LOG, scenes)
        write_parquet(store, scene_index_key(log_id(number)), log_table(number, count))
        ids.append(log_id(number))
        scenes -= count
        number += 1
    for start in range(0, len(ids), 1000):
        instance.add_dynamic_partitions(log_partitions.name, ids[start : start + 1000])
    return number


# ---------------------------------------------------------------------------------------------
# Measuring.


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def peak_mib(field: str = "VmHWM") -> float:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


@dataclass(frozen=True)
class TreeCount:
    """Files under the store's scenes/ and runs/; the frames (count, checksum of name and inode);
    .jpg files inside version folders."""

    files: int
    frames: int
    frame_inodes: int
    jpgs_in_parts: int


def count_tree(root: Path, profile_key: str) -> TreeCount:
    files = frames = checksum = jpgs = 0
    dataroot = root / sampled_root_key(profile_key)
    frame_dirs = {dataroot / "samples", dataroot / "sweeps"}
    stack = [(root / "scenes", False, False), (root / "runs", False, False)]
    while stack:
        folder, in_frames, in_part = stack.pop()
        try:
            entries = os.scandir(folder)
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    path = Path(entry.path)
                    stack.append((path, in_frames or path in frame_dirs,
                                  in_part or (path.parent == dataroot and entry.name.startswith("v1.0-"))))
                    continue
                files += 1
                if in_frames:
                    frames += 1
                    checksum = (checksum + hash((entry.name, entry.inode()))) % (1 << 64)
                elif in_part and entry.name.endswith(".jpg"):
                    jpgs += 1
    return TreeCount(files, frames, checksum, jpgs)


@dataclass
class StageRow:
    size: int
    run: str
    stage: str
    wall_s: float
    peak_mib: float  # this process's peak RSS during the stage (at least its RSS at the start)
    requests: dict[str, int]
    store_s: float
    bookkeeping_s: float = 0.0
    progress_log_s: float = 0.0
    chunks: int = 0
    worker_files: int | None = None
    computed: int | None = None
    cached: int | None = None
    parts_merged: int | None = None
    merge_peak_mib: float | None = None
    sim_compute_s: float = 0.0  # wall of the simulated sampling (the backend's run_chunks)
    sim_worker_s: float = 0.0  # seconds the simulated workers spent on their chunks, summed
    start_mib: float = 0.0  # this process's RSS when the stage started (heap kept from earlier stages)
    cpu_s: float = 0.0  # this (the run) process's CPU seconds in the stage: what a loaded machine does not inflate
    note: str = ""

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass
class SizeResult:
    """Everything one size measured; the smoke test reads it."""

    size: int
    rows: list[StageRow] = field(default_factory=list)
    copies: int = 0
    frames_before_merge: TreeCount | None = None
    frames_after_merge: TreeCount | None = None
    index_scenes: int = 0  # what index.json lists after the full build
    catalog_scenes: int = 0  # the catalog's scenes at the full build
    table_scenes: int = 0  # catalog scenes that scenes.parquet maps to a part after the full build
    index_scenes_after: int = 0  # index.json after the +1 % rebuild
    catalog_scenes_after: int = 0
    can_bus_bytes: int = 0  # bytes of the version folders' can_bus/ after the full build
    manifest_parse_s: float | None = None
    plan_parts: int = 0
    chunks: int = 0  # sampling chunks of the full build

    def runs(self) -> list[str]:
        return list(dict.fromkeys(r.run for r in self.rows))

    def total(self, run: str) -> float:
        return sum(r.wall_s for r in self.rows if r.run == run)

    def row(self, run: str, stage: str) -> StageRow:
        return next(r for r in self.rows if r.run == run and r.stage == stage)


class Bench:
    """One store, instance and registry; materializes one stage at a time and measures it."""

    def __init__(self, root: Path, instance: dg.DagsterInstance, registry_url: str, spec: dict, workers: int):
        from jadd_dagster.definitions import defs

        self.root = root
        self.store = LocalStore(root / "store")
        self.instance = instance
        self.spec = spec
        self.assets = list(defs.assets)
        self.resources = {
            "store": CountingStoreResource(url=str(self.store.root)),
            "registry": RegistryResource(url=registry_url),
            "compute": SimulatedCompute(workers=workers, merge_workers=workers),
            "models": AutolabelModels(),
            "settings": PipelineSettings(),
        }
        self.next_log = 0
        self.profile_key = sampling_profile(parse_spec(spec)).key()
        instance.add_dynamic_partitions(dataset_partitions.name, [NAME])

    def add_scenes(self, scenes: int) -> None:
        self.next_log = add_logs(self.store, self.instance, self.next_log, scenes)

    def materialize(self, asset: str, resources: Mapping | None = None, expect_failure: type | None = None):
        quiet = QUIET if expect_failure is None else {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        run_config = {**quiet, **(dataset_run_config(self.spec) if asset == "dataset_plan" else {})}
        result = dg.materialize(
            self.assets, selection=[asset], instance=self.instance, resources={**self.resources, **(resources or {})},
            partition_key=None if asset == "scene_catalog" else NAME, run_config=run_config, raise_on_error=False,
        )
        if not result.success:
            message = failure_message(result)
            if expect_failure is None or expect_failure.__name__ not in message:
                raise RuntimeError(f"{asset} failed: {message}")
        return result

    def stage(self, size: int, run: str, label: str, asset: str, walk: bool = False,
              resources: Mapping | None = None, expect_failure: type | None = None) -> tuple[StageRow, TreeCount | None, TreeCount | None]:
        before = count_tree(self.store.root, self.profile_key) if walk else None
        TALLY.reset()
        SIM.clear()
        MERGE_PEAKS.clear()
        with mock.patch.object(defs_stages, "record_materializations",
                               timed("bookkeeping", defs_stages.record_materializations)):
            reset_peak()
            start_mib = peak_mib("VmRSS")
            started = self.started = time.perf_counter()
            cpu_started = time.process_time()
            result = self.materialize(asset, resources, expect_failure)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            peak = peak_mib()
        after = count_tree(self.store.root, self.profile_key) if walk else None
        metadata = materialization_metadata(result, asset)
        row = StageRow(
            size=size, run=run, stage=label, wall_s=wall, peak_mib=peak, start_mib=start_mib, cpu_s=cpu,
            requests={k: v for k, v in TALLY.calls.items()},
            store_s=sum(v for k, v in TALLY.seconds.items() if k.startswith("store.")),
            bookkeeping_s=TALLY.seconds["bookkeeping"], progress_log_s=TALLY.seconds["progress_log"],
            worker_files=(after.files - before.files) if walk else None,
            sim_compute_s=SIM["compute_wall_s"], sim_worker_s=SIM["worker_s"],
            merge_peak_mib=max(MERGE_PEAKS, default=None),
        )
        if label == "frames" and metadata:
            row.computed, row.cached = metadata.get("computed_scenes"), metadata.get("cached_scenes")
            row.chunks = metadata.get("chunks", 0)
            row.note = f"{row.chunks:,d} chunks"
        if label == "merge" and metadata:
            row.parts_merged = metadata.get("rewritten_parts")
            row.note = f"{metadata.get('parts', 0)} parts"
        if label == "catalog" and metadata:
            row.note = f"{metadata.get('logs', 0):,d} logs"
        if label == "plan" and metadata:
            row.note = f"{metadata.get('scenes', 0):,d} scenes, {metadata.get('parts', 0)} parts"
        return row, before, after


def materialization_metadata(result, asset: str) -> dict:
    for event in result.all_events:
        if event.is_step_materialization and event.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in event.step_materialization_data.materialization.metadata.items()}
    return {}


def failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause and error.cls_name != "SplitDone":
                error = error.cause
            return f"{error.cls_name}: {error.message.strip()}"
    return "run failed"


def build(bench: Bench, result: SizeResult, run: str) -> None:
    """Materialize the six stages once (a full build or a rebuild) and add their rows."""
    for label, asset in STAGES:
        walk = label in ("frames", "merge")
        row, before, after = bench.stage(result.size, run, label, asset, walk=walk)
        result.rows.append(row)
        result.copies += row.requests.get("copy", 0)
        if label == "merge" and run == "full":
            result.frames_before_merge, result.frames_after_merge = before, after
        print_row(row)


def print_row(row: StageRow) -> None:
    print(f"  {row.run:14s} {row.stage:8s} {row.wall_s:8.2f} s  peak {row.peak_mib:7.0f} MiB  "
          f"{row.total_requests:>9,d} requests  {row.note}", flush=True)


def manifest_parse_s(store: ObjectStore) -> float | None:
    """Seconds a real worker spends reading its chunk from a full manifest object (read_manifest
    parses all 1,000 chunks of the object), on the largest object of the latest sampling run."""
    objects = sorted(store.root.glob(f"runs/*/{STAGE_SAMPLED}/chunks/*.json"), key=lambda p: p.stat().st_size)
    if not objects:
        return None
    key = objects[-1].relative_to(store.root).as_posix()
    started = time.perf_counter()
    for _ in range(3):
        worker.read_manifest(store, f"{key}#0")
    return (time.perf_counter() - started) / 3


def run_size(size: int, root: Path, instance: dg.DagsterInstance, registry_url: str, *, include_can_bus: bool,
             workers: int, rebuilds: bool, plan_only: bool = False, grow: bool = True) -> SizeResult:
    """A full build of `size` scenes and, with rebuilds, a rebuild with nothing new and (grow) one
    after 1 % new scenes; or only the catalog, the plan and the Split (plan_only)."""
    bench = Bench(root, instance, registry_url, spec_data(include_can_bus), workers)
    result = SizeResult(size)
    started = time.perf_counter()
    bench.add_scenes(size)
    print(f"{size:,d} scenes: catalog tables written in {time.perf_counter() - started:.1f} s", flush=True)
    if plan_only:
        for label, asset in STAGES[:2]:
            row, _, _ = bench.stage(size, "plan+split", label, asset)
            result.rows.append(row)
        SPLIT.clear()
        stop = {"compute": SimulatedCompute(workers=workers, stop_at_dispatch=True)}
        row, _, _ = bench.stage(size, "plan+split", "split", "dataset_frames", resources=stop, expect_failure=SplitDone)
        row.note = (f"{SPLIT.get('chunks', 0):,d} chunks in {row.requests.get('put_bytes', 0)} manifest objects, "
                    f"dispatched {SPLIT.get('dispatched_at', bench.started) - bench.started:.1f} s into the stage")
        result.rows.append(row)
        for row in result.rows:
            print(f"  plan+split {row.stage:8s} {row.wall_s:8.2f} s (run process CPU {row.cpu_s:.2f} s)  "
                  f"peak {row.peak_mib:7.0f} MiB  {row.note}", flush=True)
        return result
    build(bench, result, "full")
    result.chunks = result.row("full", "frames").chunks
    result.manifest_parse_s = manifest_parse_s(bench.store)
    result.index_scenes, result.catalog_scenes, result.table_scenes = published(bench.store)
    result.plan_parts = len(read_record(bench.store, plan_key(NAME), DatasetPlan).parts)
    result.can_bus_bytes = sum(p.stat().st_size for p in bench.store.root.glob(
        f"{sampled_root_key(bench.profile_key)}/v1.0-*/can_bus/*"))
    if rebuilds:
        for label, asset in STAGES[1:]:  # nothing new: no log changed, so the catalog is not rebuilt
            row, _, _ = bench.stage(size, "nothing new", label, asset, walk=label in ("frames", "merge"))
            result.rows.append(row)
            result.copies += row.requests.get("copy", 0)
            print_row(row)
    if rebuilds and grow:
        bench.add_scenes(max(1, size // 100))
        build(bench, result, "+1 % scenes")
        result.index_scenes_after, result.catalog_scenes_after, _ = published(bench.store)
    return result


def published(store: LocalStore) -> tuple[int, int, int]:
    """(scenes index.json lists, scenes in the catalog, catalog scenes scenes.parquet maps)."""
    index = read_record(store, index_key(NAME), DatasetIndex)
    table = pd.read_parquet(store.path(scene_table_key(NAME)), columns=["scene_id"])
    catalog = pd.read_parquet(store.path(CATALOG_KEY), columns=["scene_id"])
    return index.scenes, len(catalog), int(catalog["scene_id"].isin(set(table["scene_id"])).sum())


# ---------------------------------------------------------------------------------------------
# Services and reporting.


@contextlib.contextmanager
def services(backend: str, root: Path) -> Iterator[Callable[[str], tuple[dict | None, str]]]:
    """A factory of (Dagster instance overrides, registry URL) per label: databases of their own on
    one PostgreSQL server (started here), or SQLite files under root (overrides None)."""
    with contextlib.ExitStack() as stack:
        server = None
        if backend == "postgres":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from services.postgres import start_postgres

            server = stack.enter_context(start_postgres())

        def databases(label: str) -> tuple[dict | None, str]:
            if server is None:
                return None, f"sqlite:///{root / f'registry-{label}.db'}"
            import yaml

            overrides = yaml.safe_load(server.new_database(f"dagster_{label}").dagster_yaml(inline_password=True))
            return overrides, server.new_database(f"registry_{label}").url

        yield databases


@contextlib.contextmanager
def open_instance(folder: Path, overrides: dict | None) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance in folder, its storage per overrides (None: SQLite in folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(folder), overrides=overrides) as instance:
        yield instance


def run_size_alone(size: int, folder: Path, overrides: dict | None, registry_url: str, **options) -> SizeResult:
    """run_size in a fresh process, so that each size's peak RSS starts from a bare interpreter and
    not from what an earlier size left in this one's heap."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_run_size_child, args=(send, size, folder, overrides, registry_url, options))
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    except BaseException:  # interrupted: Dagster's in-process run in the child defers SIGINT and SIGTERM
        child.kill()
        child.join()
        raise
    child.join()
    if result is None:
        raise RuntimeError(f"the run of {size:,d} scenes ended without a result (exit code {child.exitcode})")
    if isinstance(result, BaseException):
        raise result
    return result


def _run_size_child(send, size: int, folder: Path, overrides: dict | None, registry_url: str, options: dict) -> None:
    try:
        with open_instance(folder / "dagster", overrides) as instance:
            send.send(run_size(size, folder, instance, registry_url, **options))
    except BaseException:
        send.send(RuntimeError(traceback.format_exc()))
        raise


def fmt_requests(requests: Mapping[str, int]) -> str:
    short = {"exists": "exists", "read_json": "read", "get_bytes": "get", "put_bytes": "put", "write_json": "write",
             "list_children": "list", "list_keys": "list_keys", "delete_prefix": "delete", "staged_output": "staged",
             "download_file": "download", "upload_file": "upload", "copy": "copy"}
    return ", ".join(f"{short.get(k, k)} {v:,d}" for k, v in sorted(requests.items(), key=lambda kv: -kv[1]))


def print_size(result: SizeResult) -> None:
    print(f"\n### {result.size:,d} scenes — {SIMULATED}\n")
    print("| run | stage | wall s | run CPU s | run peak RSS MiB (at start) | store requests (this process) | worker files | "
          "computed / cached | parts merged | bookkeeping s (% of stage) | progress log s | merge worker peak MiB | note |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in result.rows:
        cc = f"{r.computed:,d} / {r.cached:,d}" if r.computed is not None else ""
        book = f"{r.bookkeeping_s:.2f} ({100 * r.bookkeeping_s / r.wall_s:.1f} %)" if r.bookkeeping_s else "0"
        print(f"| {r.run} | {r.stage} | {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.peak_mib:,.0f} ({r.start_mib:,.0f}) | "
              f"{r.total_requests:,d} ({fmt_requests(r.requests)}) | "
              f"{'' if r.worker_files is None else f'{r.worker_files:,d}'} | {cc} | "
              f"{'' if r.parts_merged is None else r.parts_merged} | {book} | {r.progress_log_s:.2f} | "
              f"{'' if r.merge_peak_mib is None else f'{r.merge_peak_mib:,.0f}'} | {r.note} |")
    for run in result.runs():
        rows = [r for r in result.rows if r.run == run]
        print(f"| {run} | **total** | {result.total(run):.2f} | {sum(r.cpu_s for r in rows):.2f} | "
              f"{max(r.peak_mib for r in rows):,.0f} | "
              f"{sum(r.total_requests for r in rows):,d} | "
              f"{sum(r.worker_files or 0 for r in rows):,d} | | | {sum(r.bookkeeping_s for r in rows):.2f} | "
              f"{sum(r.progress_log_s for r in rows):.2f} | | |")


def print_can_bus(with_can: SizeResult, without: SizeResult) -> None:
    """What include_can_bus adds to the merge, per scene, and at a part's and a dataset's size."""
    a, b = with_can.row("full", "merge"), without.row("full", "merge")
    scenes = with_can.index_scenes
    per_scene_s = (a.wall_s - b.wall_s) / scenes
    per_scene_b = with_can.can_bus_bytes / scenes
    print(f"\n### include_can_bus at {scenes:,d} scenes (one part) — {SIMULATED}\n")
    print("| include_can_bus | merge wall s | merge worker peak MiB | can_bus/ bytes | files written by the merge |")
    print("|---|---:|---:|---:|---:|")
    for flag, r, res in (("true", a, with_can), ("false", b, without)):
        print(f"| {flag} | {r.wall_s:.2f} | {r.merge_peak_mib or 0:,.0f} | {res.can_bus_bytes:,d} | {r.worker_files:,d} |")
    print(f"\nCAN bus adds {1000 * per_scene_s:.0f} ms of merge time and {per_scene_b / 1e6:.2f} MB per scene: "
          f"{per_scene_s * 9890 / 60:.0f} min and {per_scene_b * 9890 / 1e9:.1f} GB for a full part of 9,890 scenes, "
          f"{per_scene_s * 1e6 / 3600:,.0f} CPU h and {per_scene_b * 1e6 / 1e12:.1f} TB for 1,000,000 scenes.")


def print_findings(result: SizeResult, workers: int) -> None:
    if result.frames_before_merge is None:
        return
    frames = result.row("full", "frames")
    scenes = frames.computed or 0
    real = scenes * REAL_SAMPLING_CPU_S
    b, log, sim = frames.bookkeeping_s, frames.progress_log_s, frames.sim_worker_s
    print(f"\n{result.size:,d} scenes — {SIMULATED}:")
    print(f"- bookkeeping (record_materializations): {b:.2f} s for {scenes:,d} scenes ({1000 * b / max(scenes, 1):.2f} ms a "
          f"scene) = {100 * b / max(sim, 1e-9):.1f} % of the simulated compute ({sim:.1f} worker s) and "
          f"{100 * b / max(real, 1e-9):.3f} % of the real compute it records (>= {real:,.0f} CPU s at "
          f"{REAL_SAMPLING_CPU_S} CPU s a scene); the per-chunk progress log (context.log.info) adds {log:.2f} s "
          f"for {frames.note} ({1000 * log / max(result.chunks, 1):.0f} ms a chunk, "
          f"{100 * log / max(real, 1e-9):.3f} % of the real compute)")
    fb, fa = result.frames_before_merge, result.frames_after_merge
    same = fb.frames == fa.frames and fb.frame_inodes == fa.frame_inodes
    print(f"- frame copies: {result.copies} copy requests; frames before/after the merge {fb.frames:,d}/{fa.frames:,d}, "
          f"inode checksum {'unchanged' if same else 'CHANGED'}; .jpg files in version folders: {fa.jpgs_in_parts}")
    print(f"- index lists {result.index_scenes:,d} scenes ({result.plan_parts} parts); scenes.parquet maps "
          f"{result.table_scenes:,d} of the catalog's {result.catalog_scenes:,d}"
          + (f"; after +1 %: index {result.index_scenes_after:,d} of {result.catalog_scenes_after:,d}"
             if result.catalog_scenes_after else ""))
    if result.manifest_parse_s is not None:
        print(f"- a real worker's read_manifest of a full manifest object: {1000 * result.manifest_parse_s:.0f} ms per chunk")
    merge = result.row("full", "merge")
    print(f"- merge: {merge.wall_s:.1f} s for {result.plan_parts} parts; peak RSS of the largest merge worker "
          f"{merge.merge_peak_mib or 0:,.0f} MiB; the run process peaked at {merge.peak_mib:,.0f} MiB")
    full = result.total("full")
    real_full = full - frames.sim_compute_s + real / workers
    for run in result.runs()[1:]:
        total = result.total(run)
        again = result.row(run, "frames")
        real_run = total - again.sim_compute_s + (again.computed or 0) * REAL_SAMPLING_CPU_S / workers
        print(f"- rebuild '{run}': {total:.2f} s = {100 * total / full:.1f} % of the full build ({full:.2f} s with "
              f"simulated sampling); with real sampling ({REAL_SAMPLING_CPU_S} CPU s a scene on {workers} workers "
              f"instead of the simulated run_chunks wall) {real_run:,.1f} s of {real_full:,.0f} s = "
              f"{100 * real_run / real_full:.2f} %")


def print_growth(results: list[SizeResult], target: int = 1_000_000) -> None:
    """Linear fit per stage of the full builds' wall and peak RSS, extrapolated to target scenes."""
    full = [r for r in results if r.frames_before_merge is not None]
    if len(full) < 2:
        return
    a, b = full[-2], full[-1]
    print(f"\n### Extrapolated to {target:,d} scenes from {a.size:,d} -> {b.size:,d} (linear in scenes) — {SIMULATED}\n")
    print("| stage | wall s at a | at b | extrapolated wall s | peak MiB at a | at b | extrapolated peak MiB | "
          "growth during the stage MiB at a | at b | extrapolated growth MiB | requests at b | extrapolated requests |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, _ in STAGES:
        ra, rb = a.row("full", label), b.row("full", label)

        def line(x, y):
            return y + (y - x) / (b.size - a.size) * (target - b.size)

        ga, gb = ra.peak_mib - ra.start_mib, rb.peak_mib - rb.start_mib
        print(f"| {label} | {ra.wall_s:.2f} | {rb.wall_s:.2f} | {line(ra.wall_s, rb.wall_s):,.0f} | {ra.peak_mib:,.0f} | "
              f"{rb.peak_mib:,.0f} | {line(ra.peak_mib, rb.peak_mib):,.0f} | {ga:,.0f} | {gb:,.0f} | {line(ga, gb):,.0f} | "
              f"{rb.total_requests:,d} | {line(ra.total_requests, rb.total_requests):,.0f} |")


def main(argv: list[str] | None = None) -> list[SizeResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rebuild-sizes", type=int, nargs="*", default=None,
                        help="sizes whose store is rebuilt twice after the full build (default: every full-build size)")
    parser.add_argument("--million-plan-only", action="store_true",
                        help="sizes of 1,000,000 and more run the catalog, the plan and the Split only")
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--workers", type=int, default=2, help="simulated sampling processes and merge workers")
    parser.add_argument("--can-bus", action="store_true",
                        help="the builds' spec writes can_bus/ (default: include_can_bus false, see --can-bus-size)")
    parser.add_argument("--can-bus-size", type=int, default=500,
                        help="scenes of two extra full builds, with and without can_bus/, to measure what it adds "
                             "to the merge (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep each size's store")
    args = parser.parse_args(argv)
    print(f"{SIMULATED}: sampling is simulated (tiny frames, no video); everything else is real. "
          f"Backend {args.backend}, {args.workers} workers, include_can_bus={args.can_bus}.", flush=True)
    root = Path(tempfile.mkdtemp(prefix="jadd-scale-", dir=args.workdir))
    results = []
    try:
        with services(args.backend, root) as databases:
            for size in args.sizes:
                plan_only = args.million_plan_only and size >= 1_000_000
                rebuilds = not plan_only and (args.rebuild_sizes is None or size in args.rebuild_sizes)
                folder = root / f"size-{size}"
                result = run_size_alone(size, folder, *databases(f"{size}"), include_can_bus=args.can_bus,
                                        workers=args.workers, rebuilds=rebuilds, plan_only=plan_only)
                results.append(result)
                print_size(result)
                print_findings(result, args.workers)
                if not args.keep:
                    shutil.rmtree(folder / "store", ignore_errors=True)
            print_growth(results)
            if args.can_bus_size:
                pair = []
                for flag in (True, False):
                    label = f"canbus{args.can_bus_size}{'on' if flag else 'off'}"
                    pair.append(run_size_alone(args.can_bus_size, root / label, *databases(label),
                                               include_can_bus=flag, workers=args.workers, rebuilds=False))
                    shutil.rmtree(root / label / "store", ignore_errors=True)
                print_can_bus(*pair)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
