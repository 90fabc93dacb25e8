"""Camera images for the synthetic logs: ray casting through the real (distorted) lens, and H.264.

Every pixel of the raw, distorted image is traced back to its viewing ray (visibility.camera_rays),
so straight world lines come out curved exactly as the calibration says. The world is flat ground
(z = 0 in the map frame) with a painted texture, and a sky above the horizon. Rendering is split
into "how far along each ray is the ground" and "what colour is there"; the world's objects
(sim/world.py) are boxes hit-tested along the same rays (visibility.box_hits), nearest hit wins (a
depth buffer that starts at the ground distance). Each box face has its own shade of its class colour (CLASS_RGB,
FACE_SHADES), and objects fade into the haze with distance like the ground.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np

from jadd_dagster.autolabel.baseline import CLASS_HUE_DEG
from jadd_dagster.camera import CameraCalibration
from jadd_dagster.categories import CLASSES
from jadd_dagster.geometry import yaw_matrix
from jadd_dagster.logs.tracks import Boxes, Tracks
from jadd_dagster.visibility import (  # noqa: F401  (camera_rays re-exported: the renderer's entry)
    OBJECT_RANGE_M,
    CameraRays,
    box_hits,
    camera_rays,
    ground_hits,
    nearest_hits,
)

TILE_M = 2.0  # asphalt patches with their own shade, metres
LANE_SPACING_M = 3.5  # painted lines on a square grid, metres
LANE_WIDTH_M = 0.25
TEXTURE_PERIOD_M = 56.0  # the ground pattern repeats every 56 m (a multiple of 2 m and 3.5 m)
TEXEL_M = 0.05
TEXTURE_LEVELS = 6  # mipmap levels: texels of 5 cm up to 1.6 m (1120 texels halve 5 times)
FOG_M = 60.0  # distance at which the ground keeps 1/e of its own colour, metres
HAZE_RGB = np.array([196, 204, 212], dtype=np.float32)
ZENITH_RGB = np.array([70, 120, 200], dtype=np.float32)
WHITE_LINE_RGB = np.array([235, 235, 230], dtype=np.float32)
YELLOW_LINE_RGB = np.array([230, 190, 40], dtype=np.float32)
# Object colours: one hue per detection class (the colour code the baseline detector reads,
# autolabel/baseline.CLASS_HUE_DEG); faces (geometry.FACES order: front, back, left, right, top,
# bottom) are shades of it.
FACE_SHADES = (0.9, 0.7, 0.8, 0.6, 1.0, 0.5)


def _class_rgb(hue_deg: float) -> np.ndarray:
    hsv = np.array([[[hue_deg / 2, 230, 235]]], dtype=np.uint8)  # OpenCV hue is 0..179
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


CLASS_RGB = {c.name: _class_rgb(CLASS_HUE_DEG[c.name]) for c in CLASSES}
# (class index, face) -> colour before haze, float32 RGB; class index -1 (unknown) is grey.
_FACE_RGB = np.array([[CLASS_RGB[c.name] * shade for shade in FACE_SHADES] for c in CLASSES] + [[np.full(3, 128.0)] * 6],
                     dtype=np.float32)
_FOG_STEP_M = 0.25  # objects' haze is looked up in distance steps this long (< 1 grey level apart)
_FOG_STEPS = int(OBJECT_RANGE_M * 1.5 / _FOG_STEP_M)


def _fogged_face_rgb() -> np.ndarray:
    """(class index * 6 + face, distance step) -> uint8 RGB after haze, the ground's fog law."""
    keep = np.exp(-(np.arange(_FOG_STEPS) + 0.5) * _FOG_STEP_M / FOG_M)[None, :, None]
    base = _FACE_RGB.reshape(-1, 1, 3)
    return (base * keep + HAZE_RGB * (1 - keep) + 0.5).astype(np.uint8)


_FOGGED_RGB = _fogged_face_rgb()
_RGB_ITEM = np.dtype("V3")
_FOGGED_ITEMS = np.ascontiguousarray(_FOGGED_RGB).view(_RGB_ITEM).ravel()  # (class * 6 + face) * steps + step

# A fixed encoder setup keeps the bytes reproducible: one encoder thread, a constant GOP of one
# second and no scene-cut keyframes (real dash cameras also write fixed GOPs).
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23", "x264-params": "keyint=30:min-keyint=30:scenecut=0"}


@dataclass(frozen=True)
class RenderView:
    """What a camera sees that depends only on its height and tilt, not on where it is or faces.

    distance: (N,) float32 metres along each of the N rays to the ground (0 where it misses);
    ground: (M,) flat indices of the pixels that see the ground, grouped by texture level (mipmap);
    level_starts: (TEXTURE_LEVELS + 1,) where each level's group starts in `ground` (and the end);
    offsets: (3, M) float32 ego-frame vectors (metres) from the camera to those pixels' ground hits;
    keep: (M, 3) float32 share of the ground's own colour left after haze;
    haze: (M, 3) float32 the haze's share of those pixels' colour (plus 0.5 for rounding);
    backdrop: (H, W, 3) uint8 the image without ground paint: sky gradient and haze;
    depth: (N,) float32 the distance to the ground, inf where the ray sees sky (objects' depth test).
    """

    distance: np.ndarray
    depth: np.ndarray
    ground: np.ndarray
    level_starts: np.ndarray
    offsets: np.ndarray
    keep: np.ndarray
    haze: np.ndarray
    backdrop: np.ndarray


def render_frame(
    rays: CameraRays, ego_translation: np.ndarray, ego_rotation: np.ndarray, boxes: Boxes | None = None
) -> np.ndarray:
    """RGB image (H, W, 3) uint8 seen by a camera when the ego is at the given map pose.

    ego_translation: (3,) metres in the map frame; ego_rotation: (3, 3) ego-to-map rotation;
    boxes: the objects at that time, in the map frame.
    """
    rotation = np.asarray(ego_rotation, dtype=np.float64)
    origin = rotation @ rays.origin_ego + np.asarray(ego_translation, dtype=np.float64)
    view = render_view(rays, rotation[2], origin[2])
    # Sums of products rather than a matmul keep BLAS (and its threads) out of the per-frame work.
    hit_x, hit_y = (
        np.float32(origin[row]) + sum(np.float32(rotation[row, c]) * view.offsets[c] for c in range(3))
        for row in (0, 1)
    )
    paint = ground_texture(hit_x, hit_y, view.level_starts)
    image = view.backdrop.copy()
    # keep + haze shares sum to 1, so the result stays within 0..255 without clipping.
    image.reshape(-1, 3)[view.ground] = (paint * view.keep + view.haze).astype(np.uint8)
    if boxes is not None and len(boxes):
        draw_boxes(image, rays, view.depth, np.asarray(ego_translation, dtype=np.float64), rotation, boxes)
    return image


def draw_boxes(
    image: np.ndarray, rays: CameraRays, depth: np.ndarray, ego_translation: np.ndarray,
    ego_rotation: np.ndarray, boxes: Boxes,
) -> None:
    """Paint the boxes (map frame) into image where they are the nearest thing along each ray.

    depth (H*W,) float32 metres: what each ray already hits (the ground; inf for sky). The ego must
    be level (ego_rotation a yaw about z), like the boxes. Each box is tested against the rays of
    the pixels it can cover only, all boxes at once (see _candidate_pixels).
    """
    pixel, box, t, face = box_hits(rays, depth, ego_translation, ego_rotation, boxes)
    if len(pixel) == 0:
        return
    front = nearest_hits(rays, pixel, t)
    pixel, box, t, face = pixel[front], box[front], t[front], face[front]
    step = np.minimum(t * np.float32(1 / _FOG_STEP_M), np.float32(_FOG_STEPS - 1)).astype(np.int64)
    # Whole RGB triplets as single 3-byte items: one scatter instead of a row-by-row copy.
    triplets = image.reshape(-1, 3).view(_RGB_ITEM).ravel()
    colour = (np.take(boxes.class_index.astype(np.int64), box) * 6 + face) * _FOG_STEPS + step
    triplets[pixel] = np.take(_FOGGED_ITEMS, colour)


def render_view(rays: CameraRays, up_row: np.ndarray, height_m: float) -> RenderView:
    """The RenderView of a camera at height_m whose ego-to-map rotation has third row up_row."""
    key = (tuple(np.round(up_row, 9)), round(float(height_m), 6))
    if key in rays.views:
        return rays.views[key]
    up = sum(np.float32(up_row[c]) * rays.directions_ego[c] for c in range(3))
    distance, ground = ground_hits(height_m, up)
    hits = distance * rays.directions_ego  # ego-frame offsets: their lengths do not depend on yaw
    # The ground distance between neighbouring pixels' hits picks the texture level with about
    # one texel per pixel, so far-away paint does not flicker (and the encoder's bits go where
    # the detail is). The geometric mean of the two steps keeps lines along the view sharp.
    grid = hits.reshape(3, rays.height, rays.width)
    step = np.sqrt(np.linalg.norm(np.gradient(grid, axis=2), axis=0) * np.linalg.norm(np.gradient(grid, axis=1), axis=0))
    with np.errstate(divide="ignore"):
        level = np.clip(np.round(np.log2(step.ravel() / TEXEL_M)), 0, TEXTURE_LEVELS - 1)
    flat = np.flatnonzero(ground)
    flat = flat[np.argsort(level[flat], kind="stable")]
    # Capped so that exp never produces float32 subnormals, which are ~100x slower.
    keep = np.exp(np.minimum(distance[flat], np.float32(40 * FOG_M)) * np.float32(-1 / FOG_M))[:, None]
    t = np.sqrt(np.clip(up, 0, 1))[:, None]
    backdrop = HAZE_RGB * (1 - t) + ZENITH_RGB * t
    backdrop[flat] = HAZE_RGB
    rays.views.clear()
    rays.views[key] = RenderView(
        distance=distance,
        depth=np.where(ground, distance, np.float32(np.inf)).astype(np.float32),
        ground=flat,
        level_starts=np.searchsorted(level[flat], np.arange(TEXTURE_LEVELS + 1)),
        offsets=np.ascontiguousarray(hits[:, flat]),
        keep=np.repeat(keep, 3, axis=1).astype(np.float32),
        haze=(HAZE_RGB * (1 - keep) + 0.5).astype(np.float32),
        backdrop=(backdrop + 0.5).astype(np.uint8).reshape(rays.height, rays.width, 3),
    )
    return rays.views[key]


_REMAP_COLUMNS = 32_000  # cv2.remap wants fewer than SHRT_MAX (32,767) columns


def ground_texture(x: np.ndarray, y: np.ndarray, level_starts: np.ndarray) -> np.ndarray:
    """Ground colour (N, 3) uint8 at map points x, y (N,) metres, bilinear between texels.

    Points level_starts[k]:level_starts[k + 1] are sampled from texture level k, whose texels are
    2**k times TEXEL_M; level_starts[-1] must be N.
    """
    out = np.empty((len(x), 3), dtype=np.uint8)
    # Wrap into one period first: remap keeps coordinates as 16-bit fixed point internally.
    texel_x = _fraction(x, TEXTURE_PERIOD_M) * np.float32(1 / TEXEL_M)
    texel_y = _fraction(y, TEXTURE_PERIOD_M) * np.float32(1 / TEXEL_M)
    for k, texture in enumerate(_ground_textures()):
        start, end = level_starts[k], level_starts[k + 1]
        if start == end:
            continue
        # Texel centres of level k sit at (i + 0.5) * 2**k level-0 texels.
        map_x = texel_x[start:end] * np.float32(0.5**k) - np.float32(0.5)
        map_y = texel_y[start:end] * np.float32(0.5**k) - np.float32(0.5)
        for lo in range(0, end - start, _REMAP_COLUMNS):  # remap's maps are at most 32,766 wide
            hi = min(lo + _REMAP_COLUMNS, end - start)
            sampled = cv2.remap(texture, map_x[None, lo:hi], map_y[None, lo:hi], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_WRAP)
            out[start + lo : start + hi] = sampled.reshape(-1, 3)
    return out


def ground_pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Colour (N, 3) uint8 of the painted ground at map points x, y (N,) metres.

    Asphalt patches of TILE_M get a hashed shade; white lines run along x (at y = k * 3.5 m) and
    yellow lines along y (at x = k * 3.5 m), so both motion and lens curvature are visible.
    """
    tiles = int(TEXTURE_PERIOD_M / TILE_M)
    tile_x = (np.floor(x / TILE_M).astype(np.int64) % tiles).astype(np.uint32)
    tile_y = (np.floor(y / TILE_M).astype(np.int64) % tiles).astype(np.uint32)
    h = (tile_x * np.uint32(73856093)) ^ (tile_y * np.uint32(19349663))
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    shade = 62.0 + (40 / 255) * (h >> np.uint32(24)).astype(np.float64)
    rgb = np.stack([shade, shade, shade + 6.0], axis=1)  # slightly bluish grey
    rgb[_fraction(x, LANE_SPACING_M) < LANE_WIDTH_M] = YELLOW_LINE_RGB
    rgb[_fraction(y, LANE_SPACING_M) < LANE_WIDTH_M] = WHITE_LINE_RGB
    return np.round(rgb).astype(np.uint8)


@lru_cache(maxsize=1)
def _ground_textures() -> list[np.ndarray]:
    """ground_pattern over one period as a mipmap: level k is (T/2**k, T/2**k, 3) uint8, texel
    (i, j) centred at x = (j + 0.5) * TEXEL_M * 2**k, y = (i + 0.5) * TEXEL_M * 2**k."""
    texels = int(round(TEXTURE_PERIOD_M / TEXEL_M))
    centres = (np.arange(texels) + 0.5) * TEXEL_M
    x, y = np.meshgrid(centres, centres)
    levels = [ground_pattern(x.ravel(), y.ravel()).reshape(texels, texels, 3)]
    for _ in range(1, TEXTURE_LEVELS):
        # The pattern is periodic: pad by wrapping so that each level stays seamless.
        padded = np.pad(levels[-1], ((8, 8), (8, 8), (0, 0)), mode="wrap")
        levels.append(cv2.pyrDown(padded)[4:-4, 4:-4])
    return levels


def _fraction(values: np.ndarray, period: float) -> np.ndarray:
    """values modulo period, in [0, period); np.mod is several times slower on float32."""
    dtype = values.dtype.type
    return values - np.floor(values * dtype(1 / period)) * dtype(period)


def render_video(
    path: Path, calib: CameraCalibration, frame_us: np.ndarray,
    t_us: np.ndarray, x: np.ndarray, y: np.ndarray, yaw: np.ndarray, objects: Tracks | None = None,
) -> int:
    """Render and encode one camera's video; returns the number of frames.

    frame_us: frame times; t_us, x, y, yaw: the ego's level pose (µs on the same clock, metres,
    rad), interpolated linearly at each frame time; objects: tracks on the same clock, drawn as
    Tracks.at gives them at each frame time.
    """
    rays = camera_rays(calib)
    xs, ys, yaws = (np.interp(frame_us, t_us, values) for values in (x, y, yaw))

    def frames():
        for t, xi, yi, yaw_i in zip(frame_us, xs, ys, yaws):
            boxes = objects.at(int(t)) if objects is not None and len(objects) else None
            yield render_frame(rays, np.array([xi, yi, 0.0]), yaw_matrix(yaw_i), boxes)

    return write_video(path, frames(), calib.width, calib.height)


def write_video(path: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: int = 30) -> int:
    """Encode RGB frames (H, W, 3) uint8 into an H.264 mp4 at fps; returns the number of frames.

    width and height must be even (yuv420p).
    """
    count = 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        stream.options = dict(ENCODER_OPTIONS)
        for rgb in frames:
            yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count
