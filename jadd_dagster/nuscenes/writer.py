"""Streaming nuScenes writer: scene by scene into one version folder ("part") of a dataroot.

Layout written under the dataroot:
    <version>/                         the 13 tables (JSON arrays) and splits.json
    <version>/can_bus/scene-NNNN_<message>.json   the part's CAN bus files
    <version>/maps/<map token>.png     one semantic-prior mask per log of the part
    samples/<CHANNEL>/<log>__<CHANNEL>__<µs>.jpg, sweeps/...   the frames, shared by every part
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<µs>.pcd.bin           (placed there by the sampling
                                                               workers, or hard-linked)

Memory stays flat in the number of scenes: the tables that grow with scenes are appended to their
JSON file record by record; only the part's small tables (log, map, sensor, calibrated_sensor),
the scene names and per-log pose extents stay in memory, and the poses for the map masks wait in a
temporary file per log.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from jadd_dagster.nuscenes import canbus
from jadd_dagster.nuscenes.tables import (
    MAP_CATEGORY,
    MAP_MARGIN_M,
    MAP_WINDOW_M,
    MAX_SCENE_EXTENT_M,
    STREAMED_TABLES,
    TABLE_NAMES,
    SceneTables,
    build_scene_tables,
    scene_name,
    scene_numbers,
    static_tables,
)
from jadd_dagster.nuscenes.tokens import make_token
from jadd_dagster.scene_record import SCENE_CAN, SCENE_POSE, SceneRecord

VERSION_PREFIX = "v1.0-"
SPLITS_FILE = "splits.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAP_RESOLUTION_M = 0.1  # the devkit's MapMask reads PNGs at a native 0.1 m per pixel
MAP_CORRIDOR_M = 10.0  # mask radius around the driven path
MAP_POINT_SPACING_M = 0.5
MAP_STRIP_BYTES = 32 << 20  # mask rows rendered and compressed at a time


def version_name(name: str, part: int | None = None) -> str:
    """Version folder name: v1.0-<name>, or v1.0-<name>-partNNN for one of several parts."""
    return f"{VERSION_PREFIX}{name}" if part is None else f"{VERSION_PREFIX}{name}-part{part:03d}"


class JsonArrayWriter:
    """A JSON array written one record per line, made visible (renamed into place) on close."""

    def __init__(self, path: Path):
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._file = self._tmp.open("w", encoding="utf-8")
        self._file.write("[")
        self.count = 0

    def write(self, record: Mapping) -> None:
        self._file.write(("\n" if self.count == 0 else ",\n") + json.dumps(record))
        self.count += 1

    def close(self) -> None:
        self._file.write("\n]\n" if self.count else "]\n")
        self._file.close()
        self._tmp.replace(self.path)


def write_json(path: Path, content) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link source to target (replacing another file there); copy when linking fails.

    Returns True when linked, False when copied (e.g. across file systems).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if os.path.samefile(source, target):
            return True
        target.unlink()
    try:
        os.link(source, target)
        return True
    except OSError:
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        return False


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_mask_png(path: Path, width: int, height: int, paths_px: Sequence[np.ndarray], radius_px: int) -> None:
    """8-bit grey PNG: 255 within radius_px of the polylines paths_px ((N, 2) int pixel x, y), else 0.

    Rendered and compressed in horizontal strips, so memory stays bounded for large maps.
    """
    boxes = [(p[:, 1].min() - radius_px, p[:, 1].max() + radius_px) for p in paths_px]
    strip_rows = max(1, min(height, MAP_STRIP_BYTES // max(1, width)))
    compressor = zlib.compressobj(6)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        for top in range(0, height, strip_rows):
            rows = min(strip_rows, height - top)
            canvas = np.zeros((rows, width), dtype=np.uint8)
            for points, (low, high) in zip(paths_px, boxes):
                if high < top or low >= top + rows:
                    continue
                shifted = (points - np.array([0, top])).astype(np.int32)
                if len(shifted) == 1:
                    cv2.circle(canvas, (int(shifted[0, 0]), int(shifted[0, 1])), radius_px, 255, -1)
                else:
                    cv2.polylines(canvas, [shifted.reshape(-1, 1, 2)], False, 255, thickness=2 * radius_px + 1)
            scanlines = np.zeros((rows, width + 1), dtype=np.uint8)  # filter byte 0 (None) per row
            scanlines[:, 1:] = canvas
            data = compressor.compress(scanlines.tobytes())
            if data:
                f.write(_png_chunk(b"IDAT", data))
        f.write(_png_chunk(b"IDAT", compressor.flush()))
        f.write(_png_chunk(b"IEND", b""))
    tmp.replace(path)


def _thin(xy: np.ndarray, spacing_m: float) -> np.ndarray:
    keep = [0]
    for i in range(1, len(xy)):
        if math.hypot(*(xy[i] - xy[keep[-1]])) >= spacing_m:
            keep.append(i)
    if keep[-1] != len(xy) - 1:
        keep.append(len(xy) - 1)
    return xy[keep]


class MapPaths:
    """The driven paths of each log, kept in a temporary folder until the masks are drawn."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.extent: dict[str, tuple[float, float]] = {}  # map filename -> (max x, max y) in metres

    def add(self, map_filename: str, trajectory_xy: Sequence[tuple[float, float]]) -> None:
        if not trajectory_xy:
            return
        xy = _thin(np.asarray(trajectory_xy, dtype=np.float64), MAP_POINT_SPACING_M)
        with (self.folder / (Path(map_filename).name + ".xy")).open("ab") as f:
            # A NaN row separates the paths of different scenes.
            np.concatenate([xy, [[np.nan, np.nan]]]).astype(np.float64).tofile(f)
        old = self.extent.get(map_filename, (-math.inf, -math.inf))
        self.extent[map_filename] = (max(old[0], float(xy[:, 0].max())), max(old[1], float(xy[:, 1].max())))

    def draw(self, folder: Path) -> None:
        """Write every log's mask into folder (by its file name): origin bottom-left at map
        (0, 0), 0.1 m per pixel (MapMask)."""
        for map_filename, (max_x, max_y) in sorted(self.extent.items()):
            width = max(1, math.ceil((max_x + MAP_MARGIN_M) / MAP_RESOLUTION_M))
            height = max(1, math.ceil((max_y + MAP_MARGIN_M) / MAP_RESOLUTION_M))
            xy = np.fromfile(self.folder / (Path(map_filename).name + ".xy"), dtype=np.float64).reshape(-1, 2)
            breaks = np.flatnonzero(np.isnan(xy[:, 0]))
            paths, start = [], 0
            for end in breaks:
                if end > start:
                    pixels = np.round(xy[start:end] / MAP_RESOLUTION_M).astype(np.int64)
                    pixels[:, 1] = height - pixels[:, 1]  # MapMask: row = height - y / resolution
                    paths.extend(pixels[i : i + 256] for i in range(0, max(1, len(pixels) - 1), 255))
                start = end + 1
            target = folder / Path(map_filename).name
            target.parent.mkdir(parents=True, exist_ok=True)
            write_mask_png(target, width, height, paths, round(MAP_CORRIDOR_M / MAP_RESOLUTION_M))


class MapWindows:
    """Keeps every map raster within MAP_WINDOW_M square whatever a drive's extent (a two-hour log
    spans tens of kilometres; one raster from the map's origin over 10 km x 10 km was 10
    gigapixels and 199 s).

    The scenes of a log share the log's map while their paths fit in its window at map (0, 0):
    their poses are written as recorded. A scene that does not fit opens (or joins) another window
    of the log, centred on it: a log record and map of their own, and every global position of the
    scene (ego poses, boxes, CAN bus pose and route, the map's path) moved by the window's origin,
    so the devkit's map, render and CAN bus functions agree. Windows are found from the scene's
    own path, in the order scenes are added, so a part's output does not depend on other parts.
    """

    def __init__(self):
        self.origins: dict[str, list[tuple[float, float]]] = {}

    def place(self, log_id: str, trajectory_xy: Sequence[tuple[float, float]]) -> tuple[float, float]:
        """The origin (metres) of the window that holds this path of log_id."""
        if not trajectory_xy:
            return (0.0, 0.0)
        xy = np.asarray(trajectory_xy, dtype=np.float64)
        low, high = xy.min(axis=0), xy.max(axis=0)
        if float((high - low).max()) > MAX_SCENE_EXTENT_M:
            raise ValueError(f"a scene of {log_id} spans {float((high - low).max()):,.0f} m, more than a map window")

        def fits(origin: tuple[float, float]) -> bool:
            return bool(np.all(low >= origin) and np.all(high + MAP_MARGIN_M <= np.asarray(origin) + MAP_WINDOW_M))

        windows = self.origins.setdefault(log_id, [])
        for origin in [(0.0, 0.0), *windows]:
            if fits(origin):
                return origin
        centre = (low + high) / 2
        origin = (float(np.floor(centre[0] - MAP_WINDOW_M / 2)), float(np.floor(centre[1] - MAP_WINDOW_M / 2)))
        windows.append(origin)
        return origin


def move_to_window(tables: SceneTables, log_id: str, origin: tuple[float, float]) -> None:
    """Give a scene's records the log and map of its window and move its global positions by the
    window's origin (MapWindows)."""
    dx, dy = origin
    log = make_token("log", log_id, "window", dx, dy)
    map_ = make_token("map", log_id, "window", dx, dy)
    tables.log = {**tables.log, "token": log}
    tables.scene["log_token"] = log
    tables.map = {"token": map_, "log_tokens": [log], "category": MAP_CATEGORY, "filename": f"maps/{map_}.png"}
    for record in (*tables.ego_poses, *tables.sample_annotations):
        x, y, *rest = record["translation"]
        record["translation"] = [x - dx, y - dy, *rest]
    tables.trajectory_xy = [(x - dx, y - dy) for x, y in tables.trajectory_xy]


@dataclass
class PreparedScene:
    """A scene read and checked, ready to be written: its records, frames folder and CAN bus files."""

    record: SceneRecord
    scene_dir: Path
    tables: SceneTables
    can_bus: dict | None


def prepare_scene(
    record: SceneRecord,
    scene_dir: Path,
    annotations: Sequence[Mapping] = (),
    include_can_bus: bool = True,
    frame_exists: Callable[[Path, str], bool] | None = None,
) -> PreparedScene:
    """Build and check everything of one scene without writing; raises on any problem of the scene.

    frame_exists(scene_dir, frame path) says whether a frame exists; by default it looks in
    scene_dir (a store whose frames are not on this machine passes its own).
    """
    exists = frame_exists or (lambda folder, source: (folder / source).is_file())
    tables = build_scene_tables(record, annotations)
    for source, _ in tables.links:
        relative = PurePosixPath(source)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"frame path {source} leaves the scene folder")
        if not exists(scene_dir, source):
            raise FileNotFoundError(f"frame {source} is missing")
    messages = None
    if include_can_bus:
        can, pose = canbus.read_scene_tables(scene_dir / SCENE_CAN, scene_dir / SCENE_POSE)
        messages = canbus.can_bus_messages(can, pose)
    return PreparedScene(record, scene_dir, tables, messages)


@dataclass(frozen=True)
class WrittenScene:
    name: str
    scene_id: str


class PartWriter:
    """Writes one part: a self-contained version folder <dataroot>/<version>/ holding the 13 tables,
    splits.json, can_bus/ and maps/; add() each PreparedScene, then close() once.

    Scene names scene-NNNN are given in the order of add(), skipping numbers the devkit's CAN bus API
    blacklists, so a part holds at most MAX_SCENES scenes. The part's CAN bus files live in its own
    folder (NuScenesCanBus(dataroot=<dataroot>/<version>)) and its map masks too (the map records
    name <version>/maps/<token>.png), so parts never share a file and any number of them can sit in
    one dataroot. A version folder of the same name left by an earlier merge is replaced.
    """

    def __init__(
        self,
        dataroot: Path,
        version: str,
        include_can_bus: bool = True,
        link_image: Callable[[Path, str, str], bool] | None = None,
        folder: Path | None = None,
    ):
        """link_image(scene_dir, frame path, filename in the dataroot) puts a frame into the
        dataset without re-encoding it and says whether that avoided a copy; by default frames are
        hard-linked into dataroot (a caller whose frames are already in the dataroot passes a
        no-op). folder is where the version folder's content is written, dataroot/version by
        default (a staging folder that is published as dataroot/version later)."""
        if not NAME_PATTERN.match(version):
            raise ValueError(f"version name {version!r}: use letters, digits, '.', '_' and '-'")
        self.dataroot = Path(dataroot)
        self.version = version
        self.folder = Path(folder) if folder is not None else self.dataroot / version
        self.include_can_bus = include_can_bus
        self.link_image = link_image or (lambda folder, source, filename: link_or_copy(folder / source, self.dataroot / filename))
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=self.folder.parent))
        self._maps = MapPaths(self._tmp)
        self._windows = MapWindows()
        self._numbers = scene_numbers()
        self.streams = {table: JsonArrayWriter(self.folder / f"{table}.json") for table in STREAMED_TABLES}
        self.small: dict[str, dict[str, dict]] = {"sensor": {}, "calibrated_sensor": {}, "log": {}, "map": {}}
        self.scenes: list[WrittenScene] = []
        self.counts = {"samples": 0, "sample_data": 0, "images": 0, "copied_images": 0, "sample_annotations": 0}

    def add(self, prepared: PreparedScene) -> str:
        """Write one scene (images, CAN bus files, records); returns its scene name."""
        number = next(self._numbers, None)
        if number is None:
            raise ValueError(f"no 4-digit scene name left in part {self.version}: start another part")
        name = scene_name(number)
        tables = prepared.tables
        origin = self._windows.place(prepared.record.log_id, tables.trajectory_xy)
        can_bus = prepared.can_bus
        if origin != (0.0, 0.0):
            move_to_window(tables, prepared.record.log_id, origin)
            can_bus = canbus.shifted_messages(can_bus, *origin) if can_bus is not None else None
        tables.scene["name"] = name
        tables.map["filename"] = f"{self.version}/{tables.map['filename']}"
        for source, filename in tables.links:
            linked = self.link_image(prepared.scene_dir, source, filename)
            self.counts["images"] += 1
            self.counts["copied_images"] += 0 if linked else 1
        if self.include_can_bus and can_bus is not None:
            canbus.write_can_bus(self.folder / "can_bus", name, can_bus)
        for table, records in (
            ("scene", [tables.scene]),
            ("sample", tables.samples),
            ("sample_data", tables.sample_data),
            ("ego_pose", tables.ego_poses),
            ("instance", tables.instances),
            ("sample_annotation", tables.sample_annotations),
        ):
            for record in records:
                self.streams[table].write(record)
        for table, records in (
            ("sensor", tables.sensors),
            ("calibrated_sensor", tables.calibrated_sensors),
            ("log", [tables.log]),
            ("map", [tables.map]),
        ):
            for record in records:
                self.small[table].setdefault(record["token"], record)
        self._maps.add(tables.map["filename"], tables.trajectory_xy)
        self.scenes.append(WrittenScene(name, prepared.record.scene_id))
        self.counts["samples"] += len(tables.samples)
        self.counts["sample_data"] += len(tables.sample_data)
        self.counts["sample_annotations"] += len(tables.sample_annotations)
        return name

    def close(self, splits: Mapping[str, str]) -> None:
        """Finish the tables, draw the map masks and write splits.json.

        splits maps each written scene's scene_id to its split name."""
        try:
            for table, records in {**static_tables(), **{t: list(r.values()) for t, r in self.small.items()}}.items():
                write_json(self.folder / f"{table}.json", records)
            for stream in self.streams.values():
                stream.close()
            assert all((self.folder / f"{t}.json").exists() for t in TABLE_NAMES)
            self._maps.draw(self.folder / "maps")
            part_splits: dict[str, list[str]] = {}
            for scene in self.scenes:
                part_splits.setdefault(splits[scene.scene_id], []).append(scene.name)
            write_json(self.folder / SPLITS_FILE, part_splits)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        """Drop the temporary files after a failure (the partly written output stays)."""
        for stream in self.streams.values():
            stream._file.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
