"""The object model and geometry of the synthetic logs' ground truth, shared by the world
simulation (logs/world.py), the camera renderer, the lidar and the auto-labeller.

CLASSES are the ten nuScenes detection classes, with their mean sizes and physical limits. Boxes
are nuScenes-style: centre (x, y, z) in metres, size [width, length, height] in metres, yaw in rad
about the frame's z axis (0 = +x, the direction of the box's length), velocity (vx, vy) in m/s.
Tracks turns a table of object samples (fmt.OBJECT_COLUMNS, timestamps in µs) into boxes at any
time; ray_boxes intersects rays with boxes, for the renderer and the lidar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jadd_dagster.logs import format as fmt


@dataclass(frozen=True)
class ObjectClass:
    """A detection class: nuScenes category name, mean size [w, l, h] in metres, and the physical
    limits any of its objects keeps (speed m/s, total acceleration m/s²)."""

    name: str
    category: str
    size: tuple[float, float, float]
    max_speed: float
    max_accel: float


# Mean sizes are the nuScenes training-set means of each detection class.
CLASSES = (
    ObjectClass("car", "vehicle.car", (1.95, 4.62, 1.73), 25.0, 6.0),
    ObjectClass("truck", "vehicle.truck", (2.51, 6.93, 2.84), 20.0, 6.0),
    ObjectClass("bus", "vehicle.bus.rigid", (2.94, 11.19, 3.47), 16.0, 6.0),
    ObjectClass("trailer", "vehicle.trailer", (2.90, 12.28, 3.87), 20.0, 6.0),
    ObjectClass("construction_vehicle", "vehicle.construction", (2.73, 6.37, 3.19), 12.0, 6.0),
    ObjectClass("pedestrian", "human.pedestrian.adult", (0.67, 0.73, 1.77), 2.0, 2.0),
    ObjectClass("motorcycle", "vehicle.motorcycle", (0.77, 2.11, 1.47), 25.0, 6.0),
    ObjectClass("bicycle", "vehicle.bicycle", (0.60, 1.70, 1.28), 8.0, 4.0),
    ObjectClass("traffic_cone", "movable_object.trafficcone", (0.41, 0.41, 1.07), 0.0, 0.0),
    ObjectClass("barrier", "movable_object.barrier", (2.53, 0.50, 0.98), 0.0, 0.0),
)
CLASS_BY_NAME = {c.name: c for c in CLASSES}
CLASS_BY_CATEGORY = {c.category: c for c in CLASSES}
CLASS_INDEX = {c.category: i for i, c in enumerate(CLASSES)}


@dataclass(frozen=True)
class Boxes:
    """N object boxes at one time: ids, category and attribute (N,) str; class_index (N,) int into
    CLASSES; centre (N, 3) metres; size (N, 3) [w, l, h] metres; yaw (N,) rad; velocity (N, 2) m/s.
    All in one frame (the map frame, unless a function says otherwise)."""

    ids: np.ndarray
    category: np.ndarray
    attribute: np.ndarray
    class_index: np.ndarray
    centre: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def to_frame(self, timestamp_us: int) -> pd.DataFrame:
        """The boxes as rows with fmt.OBJECT_COLUMNS (timestamp_us = the given time)."""
        return pd.DataFrame({
            "instance_id": self.ids.astype(str), "category": self.category.astype(str),
            "timestamp_us": np.full(len(self), timestamp_us, dtype=np.int64),
            "x": self.centre[:, 0], "y": self.centre[:, 1], "z": self.centre[:, 2], "yaw": self.yaw,
            "width": self.size[:, 0], "length": self.size[:, 1], "height": self.size[:, 2],
            "vx": self.velocity[:, 0], "vy": self.velocity[:, 1], "attribute": self.attribute.astype(str),
        }, columns=list(fmt.OBJECT_COLUMNS))


class Tracks:
    """Object tracks (rows of fmt.OBJECT_COLUMNS) indexed for boxes at any time."""

    def __init__(self, table: pd.DataFrame):
        table = table.sort_values(["instance_id", "timestamp_us"], kind="stable").reset_index(drop=True)
        self.table = table
        ids, first = np.unique(table["instance_id"].to_numpy().astype(str), return_index=True)
        self.ids = ids
        self._start = first
        self._end = np.append(first[1:], len(table))
        self._t = table["timestamp_us"].to_numpy().astype(np.int64)
        self._t0 = int(self._t.min()) if len(table) else 0
        inst = np.repeat(np.arange(len(ids)), self._end - self._start)
        self._key = inst.astype(np.int64) * (1 << 40) + (self._t - self._t0)
        self.first_us = self._t[self._start] if len(ids) else np.zeros(0, np.int64)
        self.last_us = self._t[self._end - 1] if len(ids) else np.zeros(0, np.int64)
        self._xyz = table[["x", "y", "z"]].to_numpy(np.float64)
        self._yaw = table["yaw"].to_numpy(np.float64)
        self._size = table[["width", "length", "height"]].to_numpy(np.float64)
        self._vel = table[["vx", "vy"]].to_numpy(np.float64)
        self._category = table["category"].to_numpy().astype(str)
        self._attribute = table["attribute"].to_numpy().astype(str)
        self._class_index = np.array([CLASS_INDEX.get(c, -1) for c in self._category], dtype=np.int16)

    def __len__(self) -> int:
        return len(self.ids)

    def at(self, timestamp_us: int) -> Boxes:
        """Boxes of the objects that exist at timestamp_us (µs): position, size and velocity
        interpolated linearly between their two neighbouring samples, yaw the shorter way round,
        category and attribute from the nearer sample."""
        t = int(timestamp_us)
        live = np.flatnonzero((self.first_us <= t) & (self.last_us >= t))
        key = live.astype(np.int64) * (1 << 40) + (t - self._t0)
        row = np.searchsorted(self._key, key, side="right") - 1
        nxt = np.minimum(row + 1, self._end[live] - 1)
        span = (self._t[nxt] - self._t[row]).astype(np.float64)
        w = np.where(span > 0, (t - self._t[row]) / np.where(span > 0, span, 1.0), 0.0)
        wc = w[:, None]
        dyaw = wrap_angle(self._yaw[nxt] - self._yaw[row])
        near = np.where(w < 0.5, row, nxt)
        return Boxes(
            ids=self.ids[live], category=self._category[near], attribute=self._attribute[near],
            class_index=self._class_index[near],
            centre=self._xyz[row] * (1 - wc) + self._xyz[nxt] * wc,
            size=self._size[row] * (1 - wc) + self._size[nxt] * wc,
            yaw=wrap_angle(self._yaw[row] + w * dyaw),
            velocity=self._vel[row] * (1 - wc) + self._vel[nxt] * wc,
        )


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (rad) into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


# --- rays against boxes -------------------------------------------------------------------------

FACES = ("front", "back", "left", "right", "top", "bottom")  # +x (heading), -x, +y, -y, +z, -z


def ray_boxes(
    origin: np.ndarray, directions: np.ndarray, box: np.ndarray,
    centres: np.ndarray, yaws: np.ndarray, sizes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where rays enter boxes (the slab test): for ray n and box box[n], the distance along the
    ray (metres, inf where it misses or the box is behind the origin) and the face it enters
    through (index into FACES).

    origin (3,) and directions (3, N) float32 unit vectors (as planes) in a frame F whose z axis is
    up; box (N,) indices into the boxes: centres (B, 3) in F, yaws (B,) rad about F's z axis, sizes
    (B, 3) [w, l, h] metres (length along the box's own x axis).
    """
    cos, sin = np.cos(yaws), np.sin(yaws)
    rel = np.asarray(origin, dtype=np.float64) - centres
    # The origin and the rays in each box's own frame (x along its length, y left, z up).
    offset = np.stack([cos * rel[:, 0] + sin * rel[:, 1], -sin * rel[:, 0] + cos * rel[:, 1], rel[:, 2]])
    half = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 2]]) / 2
    lo_edge, hi_edge = (-half - offset).astype(np.float32), (half - offset).astype(np.float32)
    c, s = np.take(cos.astype(np.float32), box), np.take(sin.astype(np.float32), box)
    local = (c * directions[0] + s * directions[1], c * directions[1] - s * directions[0], directions[2])
    entry, leave = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            # A ray parallel to a slab gets +-inf (inside or outside it for all t); one that also
            # starts exactly on its plane gets NaN, which compares false: a miss.
            inv = np.float32(1.0) / local[axis]
            t1, t2 = np.take(lo_edge[axis], box) * inv, np.take(hi_edge[axis], box) * inv
            entry.append(np.minimum(t1, t2))
            leave.append(np.maximum(t1, t2))
    first = np.maximum(entry[0], entry[1])
    t_near = np.maximum(first, entry[2])
    t_far = np.minimum(np.minimum(leave[0], leave[1]), leave[2])
    # Which slab the ray enters last is the face it enters through: the near side of that axis.
    along_y, along_z = entry[1] > entry[0], entry[2] > first
    axis = np.where(along_z, np.int8(2), along_y.astype(np.int8))
    forward = np.where(along_z, local[2] > 0, np.where(along_y, local[1] > 0, local[0] > 0))
    faces = 2 * axis + forward.astype(np.int8)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.float32(np.inf)).astype(np.float32), faces


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation (3, 3) by yaw rad about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
