"""How much of each ground-truth object a log's cameras see: camera rays against boxes, and
nuScenes visibility levels.

Every pixel of a camera's raw (distorted) image is traced back to its viewing ray (camera_rays);
boxes are hit-tested along those rays, nearest hit wins, over a flat ground plane (z = 0 in the map
frame) that hides what lies below it. Nothing else occludes: buildings and terrain are not known,
so on real logs the shares are those the labelled boxes alone leave. The demo renderer of
jadd_dagster.sim draws its objects with these same rays and hits.

nuScenes gives every annotation the share of it that is visible in the camera images, in four
bins (v0-40, v40-60, v60-80, v80-100). ObjectVisibility tests each camera at most TEST_WIDTH_PX
wide: an object's whole pixels are those its box covers, its visible pixels those where it is also
the nearest object. Its visible share is visible / whole summed over the cameras; parts outside
every image count in neither (truncation is not occlusion). An object no camera covers has share 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from jadd_dagster.camera import CameraCalibration, matrix_from_quaternion, pixel_rays, resized_calibration
from jadd_dagster.geometry import ray_boxes
from jadd_dagster.logs.tracks import Boxes

TEST_WIDTH_PX = 400  # images are tested at most this wide: a 1600x900 camera at 400x225 rays
TILE_PX = 16  # pixels are culled per TILE_PX x TILE_PX tile against each object's bounding sphere
OBJECT_RANGE_M = 150.0  # objects farther from the camera are not hit-tested


@dataclass(frozen=True)
class CameraRays:
    """Viewing rays of every raw-image pixel of one camera, in the ego frame.

    origin_ego: the camera centre (3,) in metres; directions_ego: unit vectors as planes (3, H*W),
    pixels row-major over the image; width, height: image size in pixels; tile_directions (T, 3)
    unit mean ray of each TILE_PX tile, tile_angle (T,) rad the widest angle from it to a ray of the
    tile, tile_pixels (T, TILE_PX**2) the tile's flat pixel indices (-1 pads tiles at the edges);
    calibration: the camera's, for projecting box corners; ego_to_camera (3, 3) rotates row vectors
    from the ego frame into the camera frame (the calibration's rotation); view_axis (3,) the mean ray and
    view_angle (rad) the widest angle from it to any ray (a cone that holds the whole view).
    """

    origin_ego: np.ndarray
    directions_ego: np.ndarray
    width: int
    height: int
    tile_directions: np.ndarray
    tile_angle: np.ndarray
    tile_pixels: np.ndarray
    calibration: CameraCalibration
    ego_to_camera: np.ndarray
    view_axis: np.ndarray
    view_angle: float
    # What a user of the rays derives per (map-frame up row of the rotation, camera height) and
    # keeps: on level ground it stays valid for every frame of a drive (the demo renderer's view).
    views: dict = field(default_factory=dict, compare=False, repr=False)


def camera_rays(calib: CameraCalibration) -> CameraRays:
    """Precompute a camera's rays once; each frame then only rotates them into the map frame."""
    rays_cam = pixel_rays(calib).reshape(-1, 3)
    rays_ego = rays_cam @ matrix_from_quaternion(calib.rotation).T
    rays_ego /= np.linalg.norm(rays_ego, axis=1, keepdims=True)
    rows, cols = -(-calib.height // TILE_PX), -(-calib.width // TILE_PX)
    index = np.full((rows * TILE_PX, cols * TILE_PX), -1, dtype=np.int64)
    index[:calib.height, :calib.width] = np.arange(calib.width * calib.height).reshape(calib.height, calib.width)
    tiles = index.reshape(rows, TILE_PX, cols, TILE_PX).transpose(0, 2, 1, 3).reshape(rows * cols, TILE_PX * TILE_PX)
    padded = np.concatenate([rays_ego, np.full((1, 3), np.nan)])[tiles]  # (T, P, 3), NaN where padded
    mean = np.nanmean(padded, axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    cosines = np.clip(np.nanmin(np.einsum("tpc,tc->tp", padded, mean), axis=1), -1.0, 1.0)
    axis = rays_ego.mean(axis=0)
    axis /= np.linalg.norm(axis)
    return CameraRays(
        origin_ego=np.asarray(calib.translation, dtype=np.float64),
        directions_ego=np.ascontiguousarray(rays_ego.T, dtype=np.float32),
        width=calib.width,
        height=calib.height,
        tile_directions=mean,
        tile_angle=np.arccos(cosines) + 1e-3,
        tile_pixels=tiles,
        calibration=calib,
        ego_to_camera=matrix_from_quaternion(calib.rotation),
        view_axis=axis,
        view_angle=float(np.arccos(np.clip((rays_ego @ axis).min(), -1.0, 1.0))) + 1e-3,
    )


def object_pixels(
    rays: CameraRays, ego_translation: np.ndarray, ego_rotation: np.ndarray, boxes: Boxes
) -> tuple[np.ndarray, np.ndarray]:
    """(visible, whole): (N,) int64 pixel counts of each box in the camera's image, where it is the
    nearest object and where it is at all (in front of the ground), with the ego level at the given
    pose (metres; (3, 3) ego-to-map)."""
    visible = np.zeros(len(boxes), dtype=np.int64)
    whole = np.zeros(len(boxes), dtype=np.int64)
    if not len(boxes):
        return visible, whole
    origin = ego_rotation @ rays.origin_ego + np.asarray(ego_translation, dtype=np.float64)
    depth = ground_depth(rays, ego_rotation[2], origin[2])
    pixel, box, t, _ = box_hits(rays, depth, np.asarray(ego_translation, dtype=np.float64), ego_rotation, boxes)
    if len(pixel):
        whole += np.bincount(box, minlength=len(boxes))
        visible += np.bincount(box[nearest_hits(rays, pixel, t)], minlength=len(boxes))
    return visible, whole


def box_hits(
    rays: CameraRays, depth: np.ndarray, ego_translation: np.ndarray, ego_rotation: np.ndarray, boxes: Boxes
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pixel, box, t, face): every pixel whose ray hits a box nearer than depth, the box, the
    distance (metres) and the face it enters by; a pixel may appear once per box it hits."""
    if abs(ego_rotation[2, 2] - 1.0) > 1e-9:  # (np.allclose costs more than the check is worth)
        raise ValueError("objects are drawn for a level ego pose only (a rotation about z)")
    # einsum, not matmul: BLAS (and its threads) stays out of the per-frame work.
    centres = np.einsum("ni,ij->nj", boxes.centre - ego_translation, ego_rotation)  # ego frame
    yaws = boxes.yaw - np.arctan2(ego_rotation[1, 0], ego_rotation[0, 0])
    pixel, box = candidate_pixels(rays, centres, yaws, boxes.size)
    if len(pixel) == 0:
        return pixel, box, np.zeros(0, np.float32), np.zeros(0, np.int8)
    # np.take: several times faster than fancy indexing for these gathers.
    t, face = ray_boxes(rays.origin_ego, np.take(rays.directions_ego, pixel, axis=1), box, centres, yaws, boxes.size)
    nearer = t < np.take(depth, pixel)
    return pixel[nearer], box[nearer], t[nearer], face[nearer]


def nearest_hits(rays: CameraRays, pixel: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(M,) bool: the hits that are the nearest along their pixel's ray (a z-buffer)."""
    zbuffer = np.full(rays.width * rays.height, np.inf, dtype=np.float32)
    np.minimum.at(zbuffer, pixel, t)
    return t == np.take(zbuffer, pixel)


# Box corners and edge midpoints in units of the half size: their projections bound the box's
# image (the lens bends edges, so midpoints too, and a margin for what bulges between them).
_OUTLINE = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)
                     if sorted((abs(x), abs(y), abs(z))) in ([0, 1, 1], [1, 1, 1])], dtype=np.float64)
_OUTLINE_MARGIN_PX = 2


def _distort(points_cam: np.ndarray, calib: CameraCalibration) -> np.ndarray:
    """Pixel coordinates (..., 2) of camera-frame points (..., 3) with z > 0 through the lens
    (OpenCV's radial-tangential model, as camera.project_points; numpy is faster for few points)."""
    x, y = points_cam[..., 0] / points_cam[..., 2], points_cam[..., 1] / points_cam[..., 2]
    k1, k2, p1, p2, k3 = calib.distortion
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    k = calib.camera_matrix
    return np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=-1)


def candidate_pixels(rays: CameraRays, centres: np.ndarray, yaws: np.ndarray, sizes: np.ndarray):
    """(pixel, box) pairs to hit-test: for a box wholly in front of the camera, the pixels of the
    bounding rectangle of its projected outline; for one reaching behind it, the pixels of every
    TILE_PX tile whose rays come within its bounding sphere."""
    calib = rays.calibration
    to_box = centres - rays.origin_ego
    distance = np.linalg.norm(to_box, axis=1)
    radius = 0.5 * np.linalg.norm(sizes, axis=1)
    # Within range, and the bounding sphere reaches into the cone that holds the whole view.
    inside = distance <= radius + 0.05
    angle = np.arccos(np.clip(np.einsum("ni,i->n", to_box, rays.view_axis) / np.maximum(distance, 1e-6), -1.0, 1.0))
    reach = np.arcsin(np.clip(radius / np.maximum(distance, 1e-6), 0.0, 1.0))
    near = np.flatnonzero((distance < OBJECT_RANGE_M + radius) & (inside | (angle <= rays.view_angle + reach)))
    if len(near) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Outline points of every near box in the camera frame: box frame -> ego -> camera, as rows.
    cos, sin = np.cos(yaws[near]), np.sin(yaws[near])
    to_ego = np.zeros((len(near), 3, 3))
    to_ego[:, 0, 0], to_ego[:, 0, 1], to_ego[:, 1, 0], to_ego[:, 1, 1], to_ego[:, 2, 2] = cos, sin, -sin, cos, 1.0
    half = sizes[near][:, [1, 0, 2]] / 2
    to_camera = np.einsum("nij,jk->nik", to_ego, rays.ego_to_camera)
    cam = np.einsum("npi,nik->npk", _OUTLINE[None] * half[:, None], to_camera)
    cam += np.einsum("ni,ik->nk", to_box[near], rays.ego_to_camera)[:, None]
    in_front = (cam[..., 2] > 0.1).all(axis=1)
    pixels, owners = [], []
    front = near[in_front]
    if len(front):
        uv = _distort(cam[in_front], calib)
        lo = np.maximum(np.floor(uv.min(axis=1)).astype(np.int64) - _OUTLINE_MARGIN_PX, 0)
        hi = np.minimum(np.ceil(uv.max(axis=1)).astype(np.int64) + _OUTLINE_MARGIN_PX, (calib.width - 1, calib.height - 1))
        extent = np.maximum(hi - lo + 1, 0)  # (B, 2): columns and rows of each rectangle
        # Every pixel of every rectangle at once, as runs along image rows: one run per rectangle row.
        run_box = np.repeat(np.arange(len(front)), extent[:, 1])
        run_row = lo[run_box, 1] + np.arange(len(run_box)) - np.repeat(np.cumsum(extent[:, 1]) - extent[:, 1], extent[:, 1])
        run_length = extent[run_box, 0]
        run_start = run_row * calib.width + lo[run_box, 0] - (np.cumsum(run_length) - run_length)
        pixels.append(np.repeat(run_start, run_length) + np.arange(run_length.sum()))
        owners.append(np.repeat(front[run_box], run_length))
    behind = near[~in_front]
    if len(behind):
        # A tile can see a box if the angle between their axes is within the tile's spread plus
        # the box's angular radius: cos(angle) >= cos(spread + radius), expanded.
        sin_r = np.clip(radius[behind] / np.maximum(distance[behind], 1e-6), 0.0, 1.0)
        cos_r = np.sqrt(1.0 - sin_r**2)
        cosine = np.einsum("ni,ti->nt", to_box[behind] / np.maximum(distance[behind], 1e-6)[:, None], rays.tile_directions)
        seen = cosine >= np.cos(rays.tile_angle)[None] * cos_r[:, None] - np.sin(rays.tile_angle)[None] * sin_r[:, None]
        seen |= (distance[behind] <= radius[behind] + 0.05)[:, None]  # the camera is inside the sphere
        which, tiles = np.nonzero(seen)
        tile_pixels = rays.tile_pixels[tiles].ravel()
        real = tile_pixels >= 0
        pixels.append(tile_pixels[real])
        owners.append(np.repeat(behind[which], rays.tile_pixels.shape[1])[real])
    if not pixels:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pixels), np.concatenate(owners)


def ground_hits(height_m: float, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (metres) along unit rays from a camera height_m above the ground plane z = 0, and
    which rays hit it; up is the rays' map-frame z component (N,).

    Rays that go up (or graze the horizon) get distance 0 and ground False.
    """
    down = (up < np.float32(-1e-4)) & (height_m > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(down, np.float32(-height_m) / up, np.float32(0.0))
    return distance.astype(np.float32), down


def ground_depth(rays: CameraRays, up_row: np.ndarray, height_m: float) -> np.ndarray:
    """(H*W,) float32 metres along each ray to the flat ground z = 0, inf where it sees above the
    horizon, for a camera height_m above the ground whose ego-to-map rotation has third row up_row.
    The last one is kept in rays.views: on flat ground every frame of a drive has the same."""
    key = ("ground_depth", tuple(np.round(up_row, 9)), round(float(height_m), 6))
    if key not in rays.views:
        for old in [k for k in rays.views if isinstance(k, tuple) and k[:1] == ("ground_depth",)]:
            del rays.views[old]
        up = sum(np.float32(up_row[c]) * rays.directions_ego[c] for c in range(3))
        distance, ground = ground_hits(height_m, up)
        rays.views[key] = np.where(ground, distance, np.float32(np.inf)).astype(np.float32)
    return rays.views[key]


@dataclass(frozen=True)
class Coverage:
    """Pixels of N objects in each camera at one instant: ids (N,) and, per channel, visible and
    whole (N,) int64 pixel counts at the tested resolution."""

    ids: np.ndarray
    visible: Mapping[str, np.ndarray]
    whole: Mapping[str, np.ndarray]

    def shares(self, channels: Iterable[str] | None = None) -> np.ndarray:
        """(N,) visible share over the given channels (default: all), 0 where none covers it."""
        names = self._channels(channels)
        visible = sum((self.visible[c] for c in names), np.zeros(len(self.ids), dtype=np.int64))
        whole = sum((self.whole[c] for c in names), np.zeros(len(self.ids), dtype=np.int64))
        return np.where(whole > 0, visible / np.maximum(whole, 1), 0.0)

    def seen(self, channels: Iterable[str] | None = None, min_pixels: int = 1) -> np.ndarray:
        """(N,) bool: at least min_pixels visible in one of the channels (default: all)."""
        names = self._channels(channels)
        best = np.max([self.visible[c] for c in names], axis=0) if names else np.zeros(len(self.ids), np.int64)
        return best >= min_pixels

    def _channels(self, channels: Iterable[str] | None) -> list[str]:
        """The given channels that were tested (all of them for None)."""
        return list(self.visible) if channels is None else [c for c in channels if c in self.visible]


class ObjectVisibility:
    """A log's cameras, ready to measure object coverage at any ego pose (rays computed once)."""

    def __init__(self, calibrations: Mapping[str, CameraCalibration], test_width_px: int = TEST_WIDTH_PX):
        self.rays: dict[str, CameraRays] = {}
        for channel, calib in calibrations.items():
            scale = min(1.0, test_width_px / calib.width)
            size = max(1, round(calib.width * scale)), max(1, round(calib.height * scale))
            self.rays[channel] = camera_rays(resized_calibration(calib, *size))

    def coverage(self, ego_translation: np.ndarray, ego_rotation: np.ndarray, boxes) -> Coverage:
        """Coverage of boxes (logs.tracks.Boxes, map frame) seen from the ego at ego_translation
        (metres) with ego_rotation (3, 3) ego-to-map, level."""
        visible, whole = {}, {}
        for channel, rays in self.rays.items():
            visible[channel], whole[channel] = object_pixels(rays, ego_translation, ego_rotation, boxes)
        return Coverage(ids=np.asarray(boxes.ids).astype(str), visible=visible, whole=whole)
