"""A classical-vision 2D detector for flat-coloured objects (no weights): the demo's default model.

It reads a colour code: every object painted in one saturated hue per class (CLASS_HUE_DEG), its
faces in shades of that hue, and the world around it in low-saturation greys (ground, haze),
yellow paint and a blue sky. The demo world's renderer (jadd_dagster.sim) paints with this code,
so the detector needs no weights and labels the demo logs; on camera images of real roads it finds
little, and a real deployment configures an ONNX model (autolabel/models.py).

So: keep saturated pixels, give each the class whose hue is nearest (rejecting the paint's and the
sky's hues), and take connected components per class. Faces of one
box share the hue, not the shade, so they join into one component. Hazed distant objects lose
saturation; MIN_SATURATION sets how far away (about 80 m) they are still found.
"""

from __future__ import annotations

import cv2
import numpy as np

from jadd_dagster.autolabel.base import Detection2D, Detector2D, box_area
from jadd_dagster.categories import CLASS_BY_NAME

# One hue (degrees) per detection class, away from the yellow paint (~47°) and the sky (~215°).
CLASS_HUE_DEG = {
    "car": 0, "truck": 28, "construction_vehicle": 80, "bus": 115, "traffic_cone": 150, "motorcycle": 180,
    "bicycle": 250, "trailer": 280, "pedestrian": 310, "barrier": 338,
}

MIN_SATURATION = 50  # 0..255; the haze and grey ground stay below ~25
MIN_VALUE = 40  # 0..255; JPEG ringing in dark corners is not an object
MAX_HUE_OFFSET_DEG = 14.0  # a pixel further than this from every class hue is left out
MIN_AREA_PX = 8  # smaller components are JPEG noise or objects too far to place
MIN_SIDE_PX = 3  # JPEG's colour fringes along edges (red against sky reads as purple) are 1-2 px thin ...
MAX_ASPECT = 6.0  # ... and long
FRINGE_INSIDE = 0.5  # a component this much inside a 4× larger one of another class is its fringe
# Hues that are not objects: yellow lane paint and the sky (the demo renderer's YELLOW_LINE_RGB, ZENITH_RGB).
BACKGROUND_HUES_DEG = (47.0, 216.0)

_CLASS_NAMES = tuple(CLASS_HUE_DEG)
_HUES = np.array([CLASS_HUE_DEG[n] for n in _CLASS_NAMES] + list(BACKGROUND_HUES_DEG), dtype=np.float32)


def hue_labels(image: np.ndarray) -> np.ndarray:
    """(H, W) int: index into CLASS_HUE_DEG's classes for object-coloured pixels, -1 elsewhere."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hue = hsv[..., 0].astype(np.float32) * 2.0  # OpenCV's 8-bit hue is degrees / 2
    offset = np.abs((hue[..., None] - _HUES + 180.0) % 360.0 - 180.0)
    nearest = offset.argmin(axis=-1)
    labels = np.where(nearest < len(_CLASS_NAMES), nearest, -1)
    keep = (hsv[..., 1] >= MIN_SATURATION) & (hsv[..., 2] >= MIN_VALUE) & (offset.min(axis=-1) <= MAX_HUE_OFFSET_DEG)
    return np.where(keep, labels, -1)


class BaselineDetector(Detector2D):
    """Colour segmentation + connected components; score is the component's fill of its box."""

    name = "baseline"
    version = "1"
    needs_gpu = False

    def __init__(self, min_area_px: int = MIN_AREA_PX):
        self.min_area_px = min_area_px

    def detect(self, images: list[np.ndarray]) -> list[list[Detection2D]]:
        return [self._detect_one(np.asarray(image)) for image in images]

    def _detect_one(self, image: np.ndarray) -> list[Detection2D]:
        labels = hue_labels(image)
        kernel = np.ones((3, 3), np.uint8)
        found = []
        for index in np.unique(labels[labels >= 0]):
            # A closing bridges the one-pixel seams JPEG leaves between two faces of one box.
            mask = cv2.morphologyEx((labels == index).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            category = CLASS_BY_NAME[_CLASS_NAMES[index]].category
            for x, y, w, h, area in stats[1:count]:
                if area < self.min_area_px or min(w, h) < MIN_SIDE_PX or max(w, h) > MAX_ASPECT * min(w, h):
                    continue
                found.append(Detection2D(
                    box=(float(x), float(y), float(x + w), float(y + h)),
                    score=float(min(1.0, area / (w * h))),
                    category=category,
                ))
        return [d for d in found if not any(_is_fringe(d, other) for other in found)]


def _is_fringe(small: Detection2D, large: Detection2D) -> bool:
    """Whether small is a colour fringe along the edge of large (another class, much larger)."""
    if small.category == large.category or box_area(large.box) < 4 * box_area(small.box):
        return False
    a, b = small.box, large.box
    inside = box_area((max(a[0], b[0] - 1), max(a[1], b[1] - 1), min(a[2], b[2] + 1), min(a[3], b[3] + 1)))
    return inside >= FRINGE_INSIDE * box_area(a)
