"""A log's ground-truth objects (objects.parquet, logs/format.py OBJECT_COLUMNS) as arrays.

Boxes are nuScenes-style: centre (x, y, z) in metres, size [width, length, height] in metres, yaw
in rad about the frame's z axis (0 = +x, the direction of the box's length), velocity (vx, vy) in
m/s. Tracks turns a table of object samples (timestamps in µs) into boxes at any time. Any log
may carry objects.parquet (a labelled drive, or the demo world of jadd_dagster.sim); the reader
(logs/reader.py) serves them through DriveLog.objects_at and DriveLog.boxes_at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from jadd_dagster.categories import CLASS_INDEX
from jadd_dagster.geometry import wrap_angle
from jadd_dagster.logs import format as fmt


@dataclass(frozen=True)
class Boxes:
    """N object boxes at one time: ids, category and attribute (N,) str; class_index (N,) int into
    categories.CLASSES; centre (N, 3) metres; size (N, 3) [w, l, h] metres; yaw (N,) rad; velocity (N, 2) m/s.
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
