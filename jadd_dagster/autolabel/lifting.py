"""2D detections to 3D boxes on the ground plane: a monocular flat-world lift.

The world is flat (z = 0 in the global frame), so the ray through the bottom-centre of a 2D box
meets the ground where the object stands, at its nearest face. The box's size comes from its
class's mean size (logs/objects.CLASSES); its centre lies half the box's depth further along the
(horizontal) viewing ray, a depth that depends on the box's yaw, which tracking may only learn
later: so a LiftedBox keeps the contact point and the ray, and places the centre for any yaw.

Units: metres and radians, global (map) frame; calibrations are the output (pinhole) ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jadd_dagster.autolabel.base import Box3D, Detection2D
from jadd_dagster.camera import CameraCalibration, matrix_from_quaternion
from jadd_dagster.logs.objects import CLASS_BY_CATEGORY

MAX_RANGE_M = 80.0  # contact points further than this are too uncertain to keep
# Detection boxes are pixel edges, and an object's colour bleeds about a pixel below its true
# bottom (JPEG's half-resolution chroma and the undistortion's bilinear remap): the ground contact
# is taken this far above the box's bottom edge (measured on the synthetic logs: it removes the
# along-ray bias of the centres at 320x180).
BOTTOM_INSET_PX = 1.75


@dataclass(frozen=True)
class LiftedBox:
    """One detection placed on the ground: contact (x, y) of its near face, the horizontal unit
    viewing direction (dx, dy) from the camera, class mean size [w, l, h], default yaw (rad),
    range_m the contact's horizontal distance from the camera (its error grows with it)."""

    keyframe_index: int
    category: str
    contact: tuple[float, float]
    ray: tuple[float, float]
    size: tuple[float, float, float]
    yaw: float
    score: float
    range_m: float = 0.0

    def centre(self, yaw: float | None = None) -> np.ndarray:
        """Box centre (3,) for a box with the given yaw (default: self.yaw): the contact point
        pushed back along the ray by the box's half extent in that direction."""
        yaw = self.yaw if yaw is None else yaw
        width, length, height = self.size
        dx, dy = self.ray
        along = abs(dx * math.cos(yaw) + dy * math.sin(yaw))
        across = abs(-dx * math.sin(yaw) + dy * math.cos(yaw))
        half_depth = along * length / 2 + across * width / 2
        return np.array([self.contact[0] + dx * half_depth, self.contact[1] + dy * half_depth, height / 2])

    def box(self, yaw: float | None = None, instance_id: str = "") -> Box3D:
        yaw = self.yaw if yaw is None else yaw
        x, y, z = (float(v) for v in self.centre(yaw))
        return Box3D(self.keyframe_index, self.category, (x, y, z), self.size, float(yaw), self.score, instance_id)


def ego_yaw(rotation: tuple[float, float, float, float] | np.ndarray) -> float:
    """Heading (rad about global z) of an ego rotation [w, x, y, z]."""
    m = matrix_from_quaternion(rotation)
    return float(math.atan2(m[1, 0], m[0, 0]))


def lift_to_3d(
    detections: list[Detection2D],
    calibration: CameraCalibration,
    ego_translation: tuple[float, float, float] | np.ndarray,
    ego_rotation: tuple[float, float, float, float] | np.ndarray,
    keyframe_index: int = 0,
) -> list[LiftedBox]:
    """Lift one image's detections onto the ground (see the module docstring).

    calibration: the image's pinhole calibration (camera-to-ego mounting); ego pose: ego-to-global
    at the frame, metres and [w, x, y, z]. Detections of unknown categories, whose ray does not
    reach the ground ahead, or lands beyond MAX_RANGE_M, are dropped.
    """
    if not detections:
        return []
    if calibration.is_distorted:
        raise ValueError(f"{calibration.channel}: lifting needs an undistorted (pinhole) image")
    cam_to_ego = matrix_from_quaternion(calibration.rotation)
    ego_to_global = matrix_from_quaternion(ego_rotation)
    cam_to_global = ego_to_global @ cam_to_ego
    origin = ego_to_global @ np.asarray(calibration.translation, dtype=np.float64)
    origin += np.asarray(ego_translation, dtype=np.float64)
    k_inv = np.linalg.inv(calibration.camera_matrix)
    heading = ego_yaw(ego_rotation)
    lifted = []
    for det in detections:
        cls = CLASS_BY_CATEGORY.get(det.category)
        if cls is None:
            continue
        x0, _, x1, y1 = det.box
        # (Camera matrices put pixel centres at integers, hence the half pixel on u.)
        direction = cam_to_global @ (k_inv @ np.array([(x0 + x1) / 2 - 0.5, y1 - BOTTOM_INSET_PX, 1.0]))
        if direction[2] >= -1e-6:
            continue  # at or above the horizon: the ray never meets the ground
        hit = origin + direction * (-origin[2] / direction[2])
        flat = hit[:2] - origin[:2]
        distance = float(np.hypot(*flat))
        if distance > MAX_RANGE_M or distance < 1e-3:
            continue
        lifted.append(LiftedBox(
            keyframe_index=keyframe_index, category=det.category,
            contact=(float(hit[0]), float(hit[1])), ray=(float(flat[0] / distance), float(flat[1] / distance)),
            size=cls.size, yaw=heading, score=det.score, range_m=distance,
        ))
    return lifted
