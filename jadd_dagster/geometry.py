"""Box geometry in a frame whose z axis is up: yaw rotations, rays entering boxes, points inside them.

Boxes are nuScenes-style: centre (x, y, z) in metres, size [width, length, height] in metres, yaw
in rad about the frame's z axis (0 = +x, the direction of the box's length).
"""

from __future__ import annotations

import numpy as np

FACES = ("front", "back", "left", "right", "top", "bottom")  # +x (heading), -x, +y, -y, +z, -z


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation (3, 3) by yaw rad about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (rad) into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


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


def points_in_box(points: np.ndarray, centre, size, yaw: float, margin: float = 0.0) -> int:
    """How many points (N, >= 3; x, y, z metres) lie in a box (centre (3,), size [w, l, h] metres,
    yaw rad about z), all in one frame, the box grown by margin metres on every side."""
    return int(count_points_in_boxes(points, np.asarray([centre]), np.asarray([size]), np.asarray([yaw]), margin)[0])


def count_points_in_boxes(
    points: np.ndarray, centres: np.ndarray, sizes: np.ndarray, yaws: np.ndarray, margin: float = 0.0
) -> np.ndarray:
    """Points (N, >= 3) inside each of B boxes (centres (B, 3), sizes (B, 3) [w, l, h], yaws (B,)),
    all in one frame with z up; (B,) int64."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    counts = np.zeros(len(centres), dtype=np.int64)
    for b, (centre, size, yaw) in enumerate(zip(centres, sizes, yaws)):
        rel = xyz - centre
        c, s = np.cos(yaw), np.sin(yaw)
        along, across = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        inside = ((np.abs(along) <= size[1] / 2 + margin) & (np.abs(across) <= size[0] / 2 + margin)
                  & (np.abs(rel[:, 2]) <= size[2] / 2 + margin))
        counts[b] = int(inside.sum())
    return counts
