"""Memory and time the nuscenes-devkit needs to open one dataset part, by spec shape and scene count.

What it measures: for each spec shape and scene count, one version folder is written whose 13
tables hold exactly the records a build writes for that many 20 s scenes. The records of one
scene come from the project's own builders (build_scene_tables on a synthetic SceneRecord with the
shape's channels, rates and boxes, static_tables(), log/map/calibrated_sensor records per log of
SCENES_PER_LOG scenes); every further scene is that scene's JSON with fresh tokens and its own
scene name, so the records have their real size and shape (a 3-scene part of each shape passes
the project's validator first; all scenes share the template's timestamps, which the load never
compares). A fresh Python child process then
imports the devkit and runs NuScenes(version=..., dataroot=..., verbose=False); the table reports
the child's peak RSS (its VmHWM: interpreter, imports and load together; wait4's ru_maxrss would count the
forked copy of the parent before exec too), its
peak after the imports alone, and the CPU and wall seconds of the NuScenes() call (the tables were
just written, so they are read from the page cache, not the disk; the devkit's imports, ~4 s, are
not in these seconds). No image or point-cloud files exist: loading does not open them; the map
masks are 1x1 PNGs (MapMask reads them lazily).

Memory above the imports' peak and CPU seconds are fitted linearly in the part's records, per
shape. The constants of jadd_dagster/nuscenes/parts.py follow from the fits (budget_from): the
shape without boxes gives the cost of a plain record; a box record (instance, sample_annotation)
costs the most that any shape with boxes needs on top. Time constants use CPU seconds because wall
time on this shared 2-core machine also counts other people's work; the half budget (30 s of 60 s)
leaves room for wall time up to twice the CPU time, and the table shows the largest ratio seen.

Usage: python bench/bench_part_load.py [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from jadd_dagster.part_merge import expected_frames_per_channel
from jadd_dagster.camera import CameraCalibration, camera_to_ego_rotation, pinhole_intrinsic, quaternion_from_matrix
from jadd_dagster.logs.format import CAMERA_CHANNELS, LIDAR_CHANNELS, LidarCalibration
from jadd_dagster.nuscenes.parts import BOX_TABLES, MEASURED, PartBudget, default_scenes_per_part, records_per_scene
from jadd_dagster.nuscenes.tables import (
    STREAMED_TABLES,
    build_scene_tables,
    calibrated_sensor_record,
    log_record,
    map_record,
    scene_numbers,
    sensor_record,
    static_tables,
)
from jadd_dagster.nuscenes.validate import validate_dataset
from jadd_dagster.nuscenes.writer import write_json, write_mask_png
from jadd_dagster.scene_record import EgoPose, FrameRecord, SceneRecord, scene_id

SCENE_LENGTH_S = 20.0
SCENES_PER_LOG = 45  # 15-minute logs
LOG_ID = "log-0000"  # the template scene's log; each part's logs get their own log, map and calibrated_sensor records
VERSION = "v1.0-bench"
LOG_START_US = 1_700_000_000_000_000
BOX_CATEGORIES = (
    ("vehicle.car", ["vehicle.moving"]),
    ("vehicle.car", ["vehicle.parked"]),
    ("human.pedestrian.adult", ["pedestrian.moving"]),
    ("vehicle.truck", ["vehicle.stopped"]),
    ("vehicle.bicycle", ["cycle.with_rider"]),
)
# A scene's own tokens become their first 24 hex digits and this placeholder, replaced per scene.
SCENE_MARK = "@@@@@@@@"
NAME_MARK = "scene-####"
# The child process: peak RSS after the imports and after NuScenes(), and the call's wall and CPU time.
CHILD = r"""
import json, re, sys, time
from nuscenes.nuscenes import NuScenes

def peak_mib():
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

imported = peak_mib()
t, cpu = time.perf_counter(), time.process_time()
NuScenes(version=sys.argv[1], dataroot=sys.argv[2], verbose=False)
print(json.dumps({"import_mib": imported, "peak_mib": peak_mib(), "load_s": time.perf_counter() - t,
                  "load_cpu_s": time.process_time() - cpu}))
"""


@dataclass(frozen=True)
class Shape:
    """A dataset spec's shape: channels, rates (Hz) and boxes per keyframe, and the scene counts to measure."""

    name: str
    cameras: int
    lidars: int
    keyframe_hz: int
    sweep_hz: int
    boxes_per_keyframe: int
    scenes: tuple[int, ...]

    def records_per_scene(self) -> dict[str, int]:
        return records_per_scene(self.cameras, self.lidars, self.keyframe_hz, self.sweep_hz, self.boxes_per_keyframe)


SHAPES = (
    Shape("default: 1 cam 10/2 Hz, no boxes", 1, 0, 2, 10, 0, (500, 1000, 2000, 4000, 8000)),
    Shape("heavy: 6 cam + lidar 10/2 Hz, 40 boxes", 6, 1, 2, 10, 40, (50, 100, 200, 400)),
    Shape("extreme: 6 cam 30/10 Hz, 40 boxes", 6, 0, 10, 30, 40, (20, 40, 80, 120)),
)
QUICK_SCENES = {0: (250, 500, 1000), 1: (25, 50, 100), 2: (8, 15, 30)}


def calibrations(shape: Shape) -> dict[str, dict]:
    """Channel -> calibration JSON of the shape's 1600x900 cameras (60° apart) and lidars."""
    result = {}
    for c, channel in enumerate(CAMERA_CHANNELS[: shape.cameras]):
        yaw = 60.0 * c
        result[channel] = CameraCalibration(
            channel=channel,
            width=1600,
            height=900,
            intrinsic=pinhole_intrinsic(1600, 900, 70.0),
            translation=(1.5 * math.cos(math.radians(yaw)), 0.5 * math.sin(math.radians(yaw)), 1.6),
            rotation=quaternion_from_matrix(camera_to_ego_rotation(yaw)),
        ).to_json()
    for channel in LIDAR_CHANNELS[: shape.lidars]:
        result[channel] = LidarCalibration(channel, (0.94, 0.0, 1.84), (0.7071, 0.0, 0.0, 0.7071)).to_json()
    return result


def synthetic_scene(shape: Shape) -> tuple[SceneRecord, list[dict]]:
    """One 20 s scene of the shape: frames a few ms off the keyframe times as the sampler picks
    them, and boxes_per_keyframe tracks seen at every keyframe (annotations as annotation_tables takes them)."""
    rng = random.Random(7)
    start = LOG_START_US + 3_600_000_000
    keyframes = int(round(SCENE_LENGTH_S * shape.keyframe_hz))
    kf_us, sweep_us = 1_000_000 // shape.keyframe_hz, 1_000_000 // shape.sweep_hz
    times = [start + i * kf_us for i in range(keyframes)]
    frames: list[FrameRecord] = []

    def pose(t: int) -> EgoPose:
        d = 8.0 * (t - start) / 1e6
        return EgoPose((300.0 + d * 0.866 + rng.random() * 1e-3, 200.0 + d * 0.5, 0.0), (0.9659, 0.0, 0.0, 0.2588))

    for c, channel in enumerate(CAMERA_CHANNELS[: shape.cameras]):
        offset = 1_000 + 3_137 * c
        per_keyframe = kf_us // sweep_us
        count = expected_frames_per_channel(SCENE_LENGTH_S, shape.keyframe_hz, shape.sweep_hz)
        for k in range(count):
            t = start + k * sweep_us + offset
            key = k % per_keyframe == 0
            frames.append(FrameRecord(channel, t, key, k // per_keyframe if key else None, f"{channel}/{t}.jpg", 1600, 900, pose(t)))
    for channel in LIDAR_CHANNELS[: shape.lidars]:
        for i, t in enumerate(times):
            t += 17_211
            frames.append(FrameRecord(channel, t, True, i, f"{channel}/{t}.pcd.bin", 0, 0, pose(t)))
    record = SceneRecord(
        scene_id=scene_id(LOG_ID, 0),
        log_id=LOG_ID,
        scene_index=0,
        location="bench-town",
        vehicle="jadd-bench-car",
        date_captured="2023-11-14",
        log_start_time_us=LOG_START_US,
        start_time_us=start,
        end_time_us=start + int(SCENE_LENGTH_S * 1e6),
        profile="0123456789abcdef",
        keyframe_hz=float(shape.keyframe_hz),
        sweep_hz=float(shape.sweep_hz),
        cameras=calibrations(shape),
        keyframe_times_us=times,
        frames=frames,
    )
    annotations = []
    for b in range(shape.boxes_per_keyframe):
        category, attributes = BOX_CATEGORIES[b % len(BOX_CATEGORIES)]
        x, y, yaw = rng.uniform(250, 450), rng.uniform(150, 300), rng.uniform(-math.pi, math.pi)
        for i in range(keyframes):
            annotations.append(
                {
                    "instance_id": f"track-{b:04d}",
                    "keyframe_index": i,
                    "category": category,
                    "translation": [x + 0.4 * i + rng.gauss(0, 0.05), y + rng.gauss(0, 0.05), 0.8 + rng.gauss(0, 0.02)],
                    "size": [1.9 + rng.random() * 0.1, 4.6 + rng.random() * 0.2, 1.6 + rng.random() * 0.1],
                    "rotation": [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)],
                    "attributes": attributes,
                    "visibility": "v80-100" if i % 3 else "v60-80",
                    "num_lidar_pts": rng.randrange(0, 400),
                }
            )
    return record, annotations


@dataclass
class Template:
    """One scene's streamed tables as JSON text (one record per line), with placeholders for the
    scene's own tokens, its scene name and the tokens of its log's records."""

    chunks: dict[str, str]
    counts: dict[str, int]


def scene_template(shape: Shape) -> Template:
    record, annotations = synthetic_scene(shape)
    tables = build_scene_tables(record, annotations)
    tables.scene["name"] = NAME_MARK
    by_table = {
        "scene": [tables.scene],
        "sample": tables.samples,
        "sample_data": tables.sample_data,
        "ego_pose": tables.ego_poses,
        "instance": tables.instances,
        "sample_annotation": tables.sample_annotations,
    }
    own = {r["token"] for records in by_table.values() for r in records}
    assert len({t[:24] for t in own}) == len(own), "token prefixes collide"
    log_tokens = {tables.log["token"]: "L" * 32}
    log_tokens.update({c["token"]: f"C{i:02d}".ljust(32, "C") for i, c in enumerate(tables.calibrated_sensors)})

    def mark(match: re.Match) -> str:
        token = match.group(1)
        if token in own:
            return f'"{token[:24]}{SCENE_MARK}"'
        return f'"{log_tokens.get(token, token)}"'

    chunks = {
        table: re.sub(r'"([0-9a-f]{32})"', mark, ",\n".join(json.dumps(r) for r in records))
        for table, records in by_table.items()
    }
    return Template(chunks, {table: len(records) for table, records in by_table.items()})


def log_tables(shape: Shape, log_index: int) -> tuple[dict, dict, list[dict], list[dict], dict[str, str]]:
    """log, map, sensors and calibrated_sensors of one log, and its placeholder -> token map."""
    record, _ = synthetic_scene(Shape(shape.name, 0, 0, shape.keyframe_hz, shape.sweep_hz, 0, ()))
    log_id = f"log-{log_index:04d}"
    log = log_record(replace(record, log_id=log_id))
    channels = sorted(calibrations(shape).items())
    calibrated = [calibrated_sensor_record(log_id, {**c, "channel": ch}) for ch, c in channels]
    tokens = {"L" * 32: log["token"]}
    tokens.update({f"C{i:02d}".ljust(32, "C"): c["token"] for i, c in enumerate(calibrated)})
    return log, map_record(log_id), [sensor_record(ch) for ch, _ in channels], calibrated, tokens


def write_part(shape: Shape, template: Template, scenes: int, dataroot: Path) -> dict[str, int]:
    """Write one version folder of `scenes` scenes under dataroot; returns the records per table (all 13)."""
    folder = dataroot / VERSION
    folder.mkdir(parents=True)
    streams = {table: (folder / f"{table}.json").open("w", encoding="utf-8") for table in STREAMED_TABLES}
    written = dict.fromkeys(STREAMED_TABLES, 0)
    for f in streams.values():
        f.write("[")
    small: dict[str, list[dict]] = {"log": [], "map": [], "sensor": [], "calibrated_sensor": []}
    numbers = scene_numbers()
    log_tokens: dict[str, str] = {}
    for i in range(scenes):
        if i % SCENES_PER_LOG == 0:
            log, map_, sensors, calibrated, log_tokens = log_tables(shape, i // SCENES_PER_LOG)
            small["log"].append(log)
            small["map"].append(map_)
            small["sensor"] = sensors
            small["calibrated_sensor"].extend(calibrated)
            (dataroot / map_["filename"]).parent.mkdir(parents=True, exist_ok=True)
            write_mask_png(dataroot / map_["filename"], 1, 1, [], 0)
        for table, chunk in template.chunks.items():
            if not chunk:
                continue
            text = chunk.replace(SCENE_MARK, f"{i:08x}")
            if table == "scene":
                text = text.replace(NAME_MARK, f"scene-{next(numbers):04d}")
            for mark, token in log_tokens.items():
                if mark in text:
                    text = text.replace(mark, token)
            streams[table].write(("\n" if written[table] == 0 else ",\n") + text)
            written[table] += template.counts[table]
    for table, f in streams.items():
        f.write("\n]\n" if written[table] else "]\n")
        f.close()
    for table, records in {**static_tables(), **small}.items():
        write_json(folder / f"{table}.json", records)
    return {**written, **{table: len(records) for table, records in {**static_tables(), **small}.items()}}


def check_part(shape: Shape, template: Template, work: Path) -> None:
    """Raise unless a 3-scene part of the shape passes the project's validator, but for what the
    bench leaves out on purpose: splits.json, the frame files and distinct scene start times."""
    dataroot = work / "check"
    write_part(shape, template, 3, dataroot)
    expected = ("splits: splits.json is missing", "start at the same timestamp")
    problems = [p for p in validate_dataset(dataroot, VERSION, file_exists=lambda _: True) if not any(e in p for e in expected)]
    shutil.rmtree(dataroot)
    if problems:
        raise RuntimeError(f"{shape.name}: the generated part is not what a build writes: {problems[:5]}")


@dataclass(frozen=True)
class Load:
    """One devkit load in a fresh child: peak RSS after the imports and in all (MiB), the wall and
    CPU seconds of the NuScenes() call, and the child's wall seconds from start to exit."""

    import_mib: float
    peak_mib: float
    load_s: float
    load_cpu_s: float
    child_s: float


def load_in_child(dataroot: Path, version: str = VERSION) -> Load:
    """Open dataroot/version with NuScenes() in a fresh Python process and measure it."""
    t = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CHILD, version, str(dataroot)], stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, _ = os.wait4(child.pid, 0)
    child_s = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"devkit load failed with exit code {child.returncode}")
    result = json.loads(out)
    # The child's own VmHWM: wait4's ru_maxrss also counts the forked copy of this process before
    # exec, so it grows with the parent (a test suite's process reached 700 MiB) and is not used.
    return Load(result["import_mib"], result["peak_mib"], result["load_s"], result["load_cpu_s"], child_s)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys against xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


@dataclass(frozen=True)
class ShapeFit:
    """Per-shape linear fits in the part's records: memory above the imports' peak (bytes), the
    NuScenes() CPU seconds (what the constants use) and its wall seconds (shown beside them)."""

    shape: Shape
    bytes_per_record: float
    bytes_base: float
    seconds_per_record: float
    seconds_base: float
    wall_per_record: float
    wall_base: float

    def split(self, per_record: float, plain_per_record: float) -> float:
        """The per-box-record figure that, with plain_per_record for the other records, gives this
        shape's per-scene figure per_record × records per scene."""
        counts = self.shape.records_per_scene()
        boxes = sum(counts[t] for t in BOX_TABLES)
        plain = sum(counts.values()) - boxes
        return (per_record * (plain + boxes) - plain_per_record * plain) / boxes


def budget_from(fits: list[ShapeFit], import_mib: float) -> PartBudget:
    """Constants for parts.py: plain records cost what the shape without boxes costs per record;
    box records cost the most any shape with boxes needs on top (so the model is not below any
    measured shape); the bases are the imports' peak plus the largest intercept (never negative)."""
    plain = next(f for f in fits if f.shape.boxes_per_keyframe == 0)
    boxed = [f for f in fits if f.shape.boxes_per_keyframe > 0]
    return PartBudget(  # seconds: CPU, see the module docstring
        max_bytes=MEASURED.max_bytes,
        max_seconds=MEASURED.max_seconds,
        bytes_per_record=plain.bytes_per_record,
        bytes_per_box_record=max(f.split(f.bytes_per_record, plain.bytes_per_record) for f in boxed),
        seconds_per_record=plain.seconds_per_record,
        seconds_per_box_record=max(f.split(f.seconds_per_record, plain.seconds_per_record) for f in boxed),
        base_bytes=import_mib * 2**20 + max(0.0, max(f.bytes_base for f in fits)),
        base_seconds=max(0.0, max(f.seconds_base for f in fits)),
        source=MEASURED.source,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where parts are written (one at a time)")
    parser.add_argument("--quick", action="store_true", help="three small scene counts per shape")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-part-", dir=args.workdir))
    rows, fits, imports = [], [], []
    try:
        for index, shape in enumerate(SHAPES):
            template = scene_template(shape)
            expected = shape.records_per_scene()
            assert template.counts == expected, f"{shape.name}: built {template.counts}, parts.py says {expected}"
            check_part(shape, template, work)
            xs, used, cpu, wall = [], [], [], []
            for scenes in QUICK_SCENES[index] if args.quick else shape.scenes:
                dataroot = work / f"{index}-{scenes}"
                records = write_part(shape, template, scenes, dataroot)
                size_mib = sum(f.stat().st_size for f in (dataroot / VERSION).iterdir()) / 2**20
                load = load_in_child(dataroot)
                shutil.rmtree(dataroot)
                rows.append((shape, scenes, sum(records.values()), size_mib, load))
                xs.append(sum(records.values()))
                used.append((load.peak_mib - load.import_mib) * 2**20)
                cpu.append(load.load_cpu_s)
                wall.append(load.load_s)
                imports.append(load.import_mib)
                print(f"  {shape.name}: {scenes} scenes, {sum(records.values()):,} records, {size_mib:.0f} MiB JSON, "
                      f"peak RSS {load.peak_mib:.0f} MiB (imports {load.import_mib:.0f}), "
                      f"NuScenes() {load.load_s:.2f} s wall, {load.load_cpu_s:.2f} s CPU", flush=True)
            fits.append(ShapeFit(shape, *fit(xs, used), *fit(xs, cpu), *fit(xs, wall)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\nWhat is measured: peak RSS of a fresh process that imports nuscenes-devkit and runs NuScenes() on one")
    print("part (imports included), and the wall (and CPU) seconds of the NuScenes() call; tables in the page cache.\n")
    print("| spec shape | scenes | records | JSON MiB | peak RSS MiB | NuScenes() s | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape, scenes, records, size_mib, load in rows:
        print(f"| {shape.name} | {scenes:,} | {records:,} | {size_mib:,.0f} | {load.peak_mib:,.0f} | "
              f"{load.load_s:.2f} | {load.load_cpu_s:.2f} |")
    print("\nLinear fits in the part's records, per shape (memory above the imports' peak; NuScenes() CPU and wall time):\n")
    print("| spec shape | records / scene | bytes / record | intercept MiB | CPU µs / record | intercept s | wall µs / record | intercept s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for f in fits:
        print(f"| {f.shape.name} | {sum(f.shape.records_per_scene().values()):,} | {f.bytes_per_record:,.0f} | "
              f"{f.bytes_base / 2**20:,.1f} | {f.seconds_per_record * 1e6:.2f} | {f.seconds_base:.2f} | "
              f"{f.wall_per_record * 1e6:.2f} | {f.wall_base:.2f} |")
    print(f"\nlargest wall / CPU of a NuScenes() call: {max(load.load_s / load.load_cpu_s for *_, load in rows):.2f}")
    budget = budget_from(fits, max(imports))
    print(f"\nFitted constants (imports' peak {max(imports):.0f} MiB):\n    {budget}")
    print(f"In parts.py:\n    {MEASURED}\n")
    print("| spec shape | records / scene | scenes in 4 GiB | scenes in 30 s CPU | default_scenes_per_part: this run | parts.py |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        counts = shape.records_per_scene()
        by_memory = (budget.max_bytes - budget.base_bytes) / budget.bytes_for(counts)
        by_time = (budget.max_seconds - budget.base_seconds) / budget.seconds_for(counts)
        args = (shape.cameras, shape.lidars, shape.keyframe_hz, shape.sweep_hz, shape.boxes_per_keyframe)
        now = f"{default_scenes_per_part(*args):,}" if MEASURED.bytes_per_record > 0 else "-"
        print(f"| {shape.name} | {sum(counts.values()):,} | {by_memory:,.0f} | {by_time:,.0f} | "
              f"{default_scenes_per_part(*args, budget=budget):,} | {now} |")


if __name__ == "__main__":
    main()
