"""The auto-labelling interfaces: a 2D detector, and what a labelled keyframe box is.

Units: pixels for 2D boxes (x0, y0, x1, y1 in the image as written, i.e. after undistortion),
metres and radians in the global (map) frame for 3D boxes; sizes are nuScenes' [width, length,
height]; categories are nuScenes category names (e.g. 'vehicle.car').
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

# The version of what turns any detector's 2D boxes into labels (lifting, tracking, attributes,
# visibility, point counts: autolabel/lifting.py, tracking.py); part of every model's cache key, so
# a change there relabels as a new model version would. 2: lidar refinement and per-box attributes.
LABELLER_VERSION = "2"
# num_lidar_pts of a box when there is no lidar to count with (auto-labels of a camera-only scene,
# observable ground truth of a log without lidar): the devkit's evaluation and training tools drop
# boxes with no points, so a box that should count must have one.
NO_LIDAR_POINTS = 1


@dataclass(frozen=True)
class Detection2D:
    """One object found in one image."""

    box: tuple[float, float, float, float]
    score: float
    category: str


@dataclass(frozen=True)
class Box3D:
    """One object at one keyframe, in the global frame; instance_id groups boxes into a track.

    velocity: (vx, vy) m/s in the global frame; attributes: nuScenes attribute names; visibility:
    a nuScenes visibility level ('v0-40'...'v80-100') or '' when unknown; num_lidar_pts: lidar
    points inside the box; channel and pixel_box: the camera and the 2D box (pixels) it was found
    in, for estimating its visibility.
    """

    keyframe_index: int
    category: str
    translation: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    score: float
    instance_id: str = ""
    velocity: tuple[float, float] = (0.0, 0.0)
    attributes: tuple[str, ...] = ()
    visibility: str = ""
    num_lidar_pts: int = 0
    channel: str = ""
    pixel_box: tuple[float, float, float, float] | None = None

    def annotation(self) -> dict:
        """The annotation dict that jadd_dagster.merge writes as a sample_annotation (score and
        velocity are kept for evaluation; nuScenes tables have no field for them)."""
        half = self.yaw / 2
        return {
            "instance_id": self.instance_id,
            "keyframe_index": self.keyframe_index,
            "category": self.category,
            "translation": list(self.translation),
            "size": list(self.size),
            "rotation": [float(np.cos(half)), 0.0, 0.0, float(np.sin(half))],
            "velocity": [float(v) for v in self.velocity],
            "attributes": list(self.attributes),
            "visibility": self.visibility,
            "num_lidar_pts": int(self.num_lidar_pts),
            "num_radar_pts": 0,
            "score": float(self.score),
        }


def box_area(box: tuple[float, float, float, float]) -> float:
    """Area (px²) of a 2D box (x0, y0, x1, y1); 0 when it is empty."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


class Detector2D(ABC):
    """A 2D object detector; its name and version are the cache key of its labels."""

    name: str
    version: str
    needs_gpu: bool = False

    @abstractmethod
    def detect(self, images: list[np.ndarray]) -> list[list[Detection2D]]:
        """Detections per image; images are H×W×3 uint8 RGB."""
