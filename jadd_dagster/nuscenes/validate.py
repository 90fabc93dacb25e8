"""Invariant checks of a nuScenes version folder, read straight from its JSON (not from the writer).

validate_dataset(dataroot, version) returns human-readable problems; an empty list means valid.
Checked: the 13 tables exist and are lists of records with unique tokens (32 hex digits, except
nuScenes' visibility tokens "1".."4"); every token reference resolves; prev/next chains of samples,
of each channel's sample_data and of each instance's annotations are reciprocal, ordered in time,
one per scene (or instance) and never cross a scene boundary; no two scenes start at the same time
(the devkit's list_scenes fails on a tie); every sample has exactly one keyframe
per channel of its scene; a sweep belongs to the following sample (the earliest sample of its scene
at or after it); timestamps are integer µs; quaternions have 4 components and unit norm; filenames
are relative and exist; a camera's calibration has a 3x3 intrinsic and a lidar's []; fileformat fits the
sensor modality (jpg, pcd); scene and instance counts match; splits.json names existing scenes
under split names the devkit does not reserve (nuscenes/splits.py).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from jadd_dagster.nuscenes.splits import RESERVED, SPLITS
from jadd_dagster.nuscenes.tables import FILE_FORMATS, TABLE_NAMES
from jadd_dagster.nuscenes.tokens import is_token

MAX_PER_KIND = 20
QUATERNION_TOLERANCE = 1e-6
SCENE_NAME = re.compile(r"^scene-\d{4}$")

# (table, field, referenced table): must resolve.
REFERENCES = (
    ("calibrated_sensor", "sensor_token", "sensor"),
    ("sample", "scene_token", "scene"),
    ("sample_data", "sample_token", "sample"),
    ("sample_data", "ego_pose_token", "ego_pose"),
    ("sample_data", "calibrated_sensor_token", "calibrated_sensor"),
    ("scene", "log_token", "log"),
    ("scene", "first_sample_token", "sample"),
    ("scene", "last_sample_token", "sample"),
    ("instance", "category_token", "category"),
    ("instance", "first_annotation_token", "sample_annotation"),
    ("instance", "last_annotation_token", "sample_annotation"),
    ("sample_annotation", "sample_token", "sample"),
    ("sample_annotation", "instance_token", "instance"),
)
# May also be '' (none).
OPTIONAL_REFERENCES = (
    ("sample", "prev", "sample"),
    ("sample", "next", "sample"),
    ("sample_data", "prev", "sample_data"),
    ("sample_data", "next", "sample_data"),
    ("sample_annotation", "prev", "sample_annotation"),
    ("sample_annotation", "next", "sample_annotation"),
    ("sample_annotation", "visibility_token", "visibility"),
)
LIST_REFERENCES = (("sample_annotation", "attribute_tokens", "attribute"), ("map", "log_tokens", "log"))
TIMESTAMPED = ("sample", "sample_data", "ego_pose")
ROTATIONS = ("ego_pose", "calibrated_sensor", "sample_annotation")


class _Problems:
    """Problems grouped by kind, at most MAX_PER_KIND listed per kind."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_PER_KIND:
            self.items.append(f"{kind}: {message}")

    def result(self) -> list[str]:
        more = [f"{kind}: ... and {n - MAX_PER_KIND} more" for kind, n in self.counts.items() if n > MAX_PER_KIND]
        return self.items + more


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _load_tables(folder: Path, problems: _Problems) -> dict[str, list[dict]] | None:
    tables: dict[str, list[dict]] = {}
    for table in TABLE_NAMES:
        path = folder / f"{table}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.add("table", f"{table}.json is missing")
            continue
        except ValueError as exc:
            problems.add("table", f"{table}.json is not valid JSON ({exc})")
            continue
        if not isinstance(data, list) or not all(isinstance(r, dict) and "token" in r for r in data):
            problems.add("table", f"{table}.json must be a list of records with a token")
            continue
        tables[table] = data
    return tables if len(tables) == len(TABLE_NAMES) else None


def _index(tables: dict[str, list[dict]], problems: _Problems) -> dict[str, dict[str, dict]]:
    index: dict[str, dict[str, dict]] = {}
    for table, records in tables.items():
        index[table] = {}
        for record in records:
            token = record["token"]
            valid = token in ("1", "2", "3", "4") if table == "visibility" else is_token(token)
            if not valid:
                problems.add("token", f"{table} token {token!r} is not 32 lowercase hex digits")
            if token in index[table]:
                problems.add("token", f"{table} token {token} appears twice")
            index[table][str(token)] = record
    return index


def _check_references(tables, index, problems: _Problems) -> None:
    for table, field, target in REFERENCES + OPTIONAL_REFERENCES:
        optional = (table, field, target) in OPTIONAL_REFERENCES
        for record in tables[table]:
            if field not in record:
                problems.add("reference", f"{table} {record['token']} has no {field}")
                continue
            value = record[field]
            if optional and value == "":
                continue
            if not isinstance(value, str) or value not in index[target]:
                problems.add("reference", f"{table} {record['token']}.{field} = {value!r} is not a {target} token")
    for table, field, target in LIST_REFERENCES:
        for record in tables[table]:
            values = record.get(field)
            if not isinstance(values, list):
                problems.add("reference", f"{table} {record['token']}.{field} must be a list")
                continue
            for value in values:
                if not isinstance(value, str) or value not in index[target]:
                    problems.add("reference", f"{table} {record['token']}.{field} has {value!r}, not a {target} token")
    if not tables["map"]:
        problems.add("reference", "the map table is empty (the devkit needs one map)")
    maps_of_log = Counter(
        log for m in tables["map"] if isinstance(m.get("log_tokens"), list) for log in m["log_tokens"]
    )
    for log in tables["log"]:
        if maps_of_log[log["token"]] != 1:
            problems.add("reference", f"log {log['token']} is in {maps_of_log[log['token']]} maps, not 1")


def _check_values(tables, index, problems: _Problems) -> None:
    for table in TIMESTAMPED:
        for record in tables[table]:
            if not _is_int(record.get("timestamp")) or record["timestamp"] < 0:
                value = record.get("timestamp")
                problems.add("timestamp", f"{table} {record['token']} timestamp {value!r} is not integer µs")
    for table in ROTATIONS:
        for record in tables[table]:
            q = record.get("rotation")
            if not isinstance(q, list) or len(q) != 4 or not all(_is_number(v) for v in q):
                problems.add("quaternion", f"{table} {record['token']} rotation {q!r} needs 4 numbers [w, x, y, z]")
            elif abs(math.sqrt(sum(v * v for v in q)) - 1.0) > QUATERNION_TOLERANCE:
                problems.add("quaternion", f"{table} {record['token']} rotation {q} is not a unit quaternion")
            t = record.get("translation")
            if not isinstance(t, list) or len(t) != 3 or not all(_is_number(v) for v in t):
                problems.add("translation", f"{table} {record['token']} translation {t!r} needs 3 numbers")
    for cs in tables["calibrated_sensor"]:
        sensor = index["sensor"].get(cs.get("sensor_token"))
        k = cs.get("camera_intrinsic")
        if sensor and sensor.get("modality") == "camera":
            if not (isinstance(k, list) and len(k) == 3 and all(isinstance(r, list) and len(r) == 3 for r in k)):
                problems.add("intrinsic", f"calibrated_sensor {cs['token']} camera_intrinsic {k!r} is not 3x3")
        elif sensor and k != []:
            problems.add("intrinsic", f"calibrated_sensor {cs['token']} of a {sensor.get('modality')} has camera_intrinsic {k!r}, not []")
    for sd in tables["sample_data"]:
        if not isinstance(sd.get("is_key_frame"), bool):
            problems.add("sample_data", f"{sd['token']} is_key_frame must be true or false")
        if not (_is_int(sd.get("width")) and _is_int(sd.get("height"))):
            problems.add("sample_data", f"{sd['token']} width and height must be integers")
        cs = index["calibrated_sensor"].get(sd.get("calibrated_sensor_token"), {})
        modality = index["sensor"].get(cs.get("sensor_token"), {}).get("modality")
        if modality in FILE_FORMATS and sd.get("fileformat") != FILE_FORMATS[modality][0]:
            problems.add("sample_data", f"{sd['token']} of a {modality} has fileformat {sd.get('fileformat')!r}")
        pose = index["ego_pose"].get(sd.get("ego_pose_token"))
        if pose is not None and pose.get("timestamp") != sd.get("timestamp"):
            problems.add("timestamp", f"sample_data {sd['token']} and its ego_pose have different timestamps")


def _check_files(dataroot: Path, tables, problems: _Problems, file_exists=None) -> None:
    exists = file_exists or (lambda name: (dataroot / name).is_file())
    for table in ("sample_data", "map"):
        for record in tables[table]:
            name = record.get("filename")
            relative = PurePosixPath(name) if isinstance(name, str) else None
            if relative is None or not name or relative.is_absolute() or ".." in relative.parts or "\\" in name:
                problems.add("file", f"{table} {record['token']} filename {name!r} is not relative to the dataroot")
            elif not exists(name):
                problems.add("file", f"{table} {record['token']} file {name} does not exist")


def _check_chain(table: str, records: list[dict], index: dict[str, dict], group_of, problems: _Problems) -> None:
    """prev/next reciprocal, increasing `order`, within one group, one chain per group covering it."""
    members: dict[object, list[dict]] = defaultdict(list)
    for record in records:
        members[group_of(record)].append(record)
    for record in records:
        nxt = index.get(record.get("next", ""))
        if nxt is not None:
            if nxt.get("prev") != record["token"]:
                problems.add("chain", f"{table} {record['token']}.next {nxt['token']} does not point back by prev")
            if group_of(nxt) != group_of(record):
                problems.add("chain", f"{table} {record['token']}.next crosses a scene or channel boundary")
            if _order(nxt) <= _order(record):
                problems.add("chain", f"{table} {record['token']}.next is not later in time")
        prv = index.get(record.get("prev", ""))
        if prv is not None and prv.get("next") != record["token"]:
            problems.add("chain", f"{table} {record['token']}.prev {prv['token']} does not point back by next")
    for group, items in members.items():
        heads = [r for r in items if r.get("prev") == ""]
        if len(heads) != 1:
            problems.add("chain", f"{table} group {group} has {len(heads)} chain starts, not 1")
            continue
        seen, record = 0, heads[0]
        while record is not None and seen <= len(items):
            seen += 1
            record = index.get(record.get("next", ""))
        if seen != len(items):
            problems.add("chain", f"{table} group {group}: the chain visits {seen} of {len(items)} records")


def _order(record: dict) -> float:
    value = record.get("_order", record.get("timestamp"))
    return float(value) if _is_number(value) else math.nan


def _check_scenes(tables, index, problems: _Problems) -> None:
    samples = index["sample"]
    _check_chain("sample", tables["sample"], samples, lambda r: r.get("scene_token"), problems)
    per_scene = Counter(s.get("scene_token") for s in tables["sample"])
    names = Counter(scene.get("name") for scene in tables["scene"])
    starts: dict[object, list] = defaultdict(list)
    for scene in tables["scene"]:
        token = scene["token"]
        if not isinstance(scene.get("name"), str) or not SCENE_NAME.match(scene["name"]):
            problems.add("scene", f"scene {token} name {scene.get('name')!r} is not scene-NNNN")
        elif names[scene["name"]] > 1:
            problems.add("scene", f"scene name {scene['name']} is used {names[scene['name']]} times")
        if scene.get("nbr_samples") != per_scene[token]:
            count = scene.get("nbr_samples")
            problems.add("scene", f"scene {token} nbr_samples {count} but {per_scene[token]} samples")
        first, last = samples.get(scene.get("first_sample_token")), samples.get(scene.get("last_sample_token"))
        if first is not None:
            starts[first.get("timestamp")].append(scene.get("name"))
        if first is not None and (first.get("prev") != "" or first.get("scene_token") != token):
            problems.add("scene", f"scene {token} first_sample_token is not the first sample of the scene")
        if last is not None and (last.get("next") != "" or last.get("scene_token") != token):
            problems.add("scene", f"scene {token} last_sample_token is not the last sample of the scene")

    for start, scenes in starts.items():
        if len(scenes) > 1:
            # NuScenes.list_scenes sorts (timestamp, scene record) pairs and fails on a tie.
            problems.add("scene", f"scenes {sorted(map(str, scenes))} start at the same timestamp {start}")


def _check_sample_data(tables, index, problems: _Problems) -> None:
    samples = index["sample"]

    def channel_of(sd: dict):
        cs = index["calibrated_sensor"].get(sd.get("calibrated_sensor_token"), {})
        return index["sensor"].get(cs.get("sensor_token"), {}).get("channel")

    def scene_of(sd: dict):
        return samples.get(sd.get("sample_token"), {}).get("scene_token")

    _check_chain(
        "sample_data", tables["sample_data"], index["sample_data"], lambda r: (scene_of(r), channel_of(r)), problems
    )
    scene_channels: dict[str, set] = defaultdict(set)
    keyframes: Counter[tuple[str, object]] = Counter()
    for sd in tables["sample_data"]:
        scene_channels[scene_of(sd)].add(channel_of(sd))
        if sd.get("is_key_frame") is True:
            keyframes[(sd.get("sample_token"), channel_of(sd))] += 1
    for sample in tables["sample"]:
        for channel in sorted(scene_channels.get(sample.get("scene_token"), ()), key=str):
            n = keyframes[(sample["token"], channel)]
            if n != 1:
                problems.add("keyframe", f"sample {sample['token']} has {n} keyframes of {channel}, not 1")
    times_of_scene: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for sample in tables["sample"]:
        if _is_int(sample.get("timestamp")):
            times_of_scene[sample.get("scene_token")].append((sample["timestamp"], sample["token"]))
    for items in times_of_scene.values():
        items.sort()
    for sd in tables["sample_data"]:
        if sd.get("is_key_frame") is not False or not _is_int(sd.get("timestamp")):
            continue
        sample = samples.get(sd.get("sample_token"))
        if sample is None or not _is_int(sample.get("timestamp")):
            continue
        ordered = times_of_scene[sample.get("scene_token")]
        at = bisect.bisect_left(ordered, (sd["timestamp"], ""))
        expected = ordered[at][1] if at < len(ordered) else None
        if sample["timestamp"] < sd["timestamp"]:
            problems.add("sweep", f"sweep {sd['token']} points to sample {sample['token']} that lies before it")
        elif expected != sample["token"]:
            problems.add(
                "sweep", f"sweep {sd['token']} points to {sample['token']}, not the following sample {expected}"
            )


def _check_annotations(tables, index, problems: _Problems) -> None:
    annotations = index["sample_annotation"]
    records = [
        dict(a, _order=index["sample"].get(a.get("sample_token"), {}).get("timestamp", 0))
        for a in tables["sample_annotation"]
    ]
    ordered = {r["token"]: r for r in records}
    _check_chain("sample_annotation", records, ordered, lambda r: r.get("instance_token"), problems)
    per_instance = Counter(a.get("instance_token") for a in annotations.values())
    for instance in tables["instance"]:
        if instance.get("nbr_annotations") != per_instance[instance["token"]]:
            problems.add(
                "instance",
                f"instance {instance['token']} nbr_annotations {instance.get('nbr_annotations')} "
                f"but {per_instance[instance['token']]} annotations",
            )


def _check_splits(folder: Path, tables, problems: _Problems) -> None:
    path = folder / "splits.json"
    if not path.is_file():
        problems.add("splits", "splits.json is missing")
        return
    try:
        splits = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        problems.add("splits", f"splits.json is not valid JSON ({exc})")
        return
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        problems.add("splits", "splits.json must map split names to lists of scene names")
        return
    names = {scene.get("name") for scene in tables["scene"]}
    split_of: dict[str, str] = {}
    for split, scenes in splits.items():
        if split in RESERVED:
            problems.add("splits", f"split {split!r} is one the devkit reserves for the official nuScenes scenes "
                         f"(its evaluation would not read it from splits.json); ours are {list(SPLITS)}")
        for name in scenes:
            if name not in names:
                problems.add("splits", f"split {split} names {name!r}, which is not a scene of this version")
            if name in split_of:
                problems.add("splits", f"{name} is in both {split_of[name]} and {split}")
            split_of[name] = split


def validate_dataset(dataroot: Path, version: str, file_exists: Callable[[str], bool] | None = None) -> list[str]:
    """Problems of dataroot/version as nuScenes data (empty list: all invariants hold).

    file_exists(filename relative to the dataroot) says whether a referenced file exists; by default
    it looks in dataroot. A dataset whose images live in an object store passes its own.
    """
    dataroot = Path(dataroot)
    folder = dataroot / version
    problems = _Problems()
    if not folder.is_dir():
        return [f"version: {folder} is not a folder"]
    tables = _load_tables(folder, problems)
    if tables is None:
        return problems.result()
    index = _index(tables, problems)
    checks = (
        lambda: _check_references(tables, index, problems),
        lambda: _check_values(tables, index, problems),
        lambda: _check_files(dataroot, tables, problems, file_exists),
        lambda: _check_scenes(tables, index, problems),
        lambda: _check_sample_data(tables, index, problems),
        lambda: _check_annotations(tables, index, problems),
        lambda: _check_splits(folder, tables, problems),
    )
    for check in checks:
        try:
            check()
        except (TypeError, KeyError, AttributeError, ValueError) as exc:  # malformed records of unexpected types
            problems.add("malformed", f"a check stopped on malformed data: {type(exc).__name__}: {exc}")
    return problems.result()
