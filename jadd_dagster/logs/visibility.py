"""How much of each ground-truth object the log's cameras see: nuScenes visibility levels.

nuScenes gives every annotation the share of it that is visible in the camera images, in four
bins (v0-40, v40-60, v60-80, v80-100). Here each camera's pixel rays are hit-tested against the
object boxes the way the renderer draws them (logs/render.py), at most TEST_WIDTH_PX wide:
an object's whole pixels are those its box covers, its visible pixels those where it is also the
nearest object. Its visible share is visible / whole summed over the cameras; parts outside every
image count in neither (truncation is not occlusion). An object no camera covers has share 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from jadd_dagster.camera import CameraCalibration, resized_calibration
from jadd_dagster.logs.render import CameraRays, camera_rays, object_pixels

TEST_WIDTH_PX = 400  # images are tested at most this wide: a 1600x900 camera at 400x225 rays


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
        """Coverage of boxes (logs.objects.Boxes, map frame) seen from the ego at ego_translation
        (metres) with ego_rotation (3, 3) ego-to-map, level."""
        visible, whole = {}, {}
        for channel, rays in self.rays.items():
            visible[channel], whole[channel] = object_pixels(rays, ego_translation, ego_rotation, boxes)
        return Coverage(ids=np.asarray(boxes.ids).astype(str), visible=visible, whole=whole)
