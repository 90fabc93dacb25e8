"""2D detections to 3D boxes on the ground plane: a flat-world lift, refined by lidar when present.

The world is flat (z = 0 in the global frame), so the ray through the bottom-centre of a 2D box
meets the ground where the object stands, at its nearest face. With a lidar sweep of the keyframe,
the points that project into the 2D box, stand above the ground and lie near that first guess tell
the nearest face's distance directly (their LIDAR_NEAR_PERCENTILE along the ray): lidar ranges are
centimetres off where the flat-ground lift is metres off at 50 m. The box's size comes from its
class's mean size (categories.CLASSES); its centre lies half the box's depth further along the
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
from jadd_dagster.categories import CLASS_BY_CATEGORY

MAX_RANGE_M = 80.0  # contact points further than this are too uncertain to keep
# Detection boxes are pixel edges, and an object's colour bleeds about a pixel below its true
# bottom (JPEG's half-resolution chroma and the undistortion's bilinear remap): the ground contact
# is taken this far above the box's bottom edge (measured on the synthetic logs: it removes the
# along-ray bias of the centres at 320x180).
BOTTOM_INSET_PX = 1.75
# A detection less than this share of the height its class would have at the range it lifts to is
# not that object (flat blobs of paint or JPEG colour noise on the road lift to a few metres away).
MIN_HEIGHT_SHARE = 0.3
MIN_LIDAR_POINTS = 3  # fewer points in a detection than this and the flat-ground lift stands
LIDAR_NEAR_PERCENTILE = 5.0  # of the points' distances along the ray: the nearest face, not noise
LIDAR_MIN_HEIGHT_M = 0.2  # points lower than this are the ground
LIDAR_WINDOW_M = 3.0  # points further than this from the flat-ground guess are something else ...
LIDAR_WINDOW_PER_RANGE = 0.25  # ... plus this share of its range (the guess is less sure far off)


@dataclass(frozen=True)
class LiftedBox:
    """One detection placed on the ground: contact (x, y) of its near face, the horizontal unit
    viewing direction (dx, dy) from the camera, class mean size [w, l, h], default yaw (rad),
    range_m the contact's horizontal distance from the camera (its error grows with it); channel
    and pixel_box the camera and 2D box it came from; lidar_points the points that placed it (0:
    placed by the flat-ground lift alone)."""

    keyframe_index: int
    category: str
    contact: tuple[float, float]
    ray: tuple[float, float]
    size: tuple[float, float, float]
    yaw: float
    score: float
    range_m: float = 0.0
    channel: str = ""
    pixel_box: tuple[float, float, float, float] | None = None
    lidar_points: int = 0

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
        return Box3D(
            self.keyframe_index, self.category, (x, y, z), self.size, float(yaw), self.score, instance_id,
            channel=self.channel, pixel_box=self.pixel_box,
        )


def ego_yaw(rotation: tuple[float, float, float, float] | np.ndarray) -> float:
    """Heading (rad about global z) of an ego rotation [w, x, y, z]."""
    m = matrix_from_quaternion(rotation)
    return float(math.atan2(m[1, 0], m[0, 0]))


def camera_pose(calibration: CameraCalibration, ego_translation, ego_rotation) -> tuple[np.ndarray, np.ndarray]:
    """The camera's centre (3,) in the global frame and its camera-to-global rotation (3, 3), for an
    ego pose (metres, [w, x, y, z] ego-to-global)."""
    ego_to_global = matrix_from_quaternion(ego_rotation)
    origin = ego_to_global @ np.asarray(calibration.translation, dtype=np.float64)
    return origin + np.asarray(ego_translation, dtype=np.float64), ego_to_global @ matrix_from_quaternion(calibration.rotation)


def pixel_positions(cam: np.ndarray, calibration: CameraCalibration) -> np.ndarray:
    """Pixel positions (N, 2) of camera-frame points (N, 3), z > 0, in a pinhole image, measured
    like detection boxes: from pixel edges (the camera matrix puts pixel centres at integers)."""
    k = calibration.camera_matrix
    u = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2] + 0.5
    v = k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2] + 0.5
    return np.stack([u, v], axis=1)


def lift_to_3d(
    detections: list[Detection2D],
    calibration: CameraCalibration,
    ego_translation: tuple[float, float, float] | np.ndarray,
    ego_rotation: tuple[float, float, float, float] | np.ndarray,
    keyframe_index: int = 0,
    points: np.ndarray | None = None,
) -> list[LiftedBox]:
    """Lift one image's detections onto the ground (see the module docstring).

    calibration: the image's pinhole calibration (camera-to-ego mounting); ego pose: ego-to-global
    at the frame, metres and [w, x, y, z]; points: the keyframe's lidar points (N, 3) in the global
    frame, or None. Detections of unknown categories, whose ray does not reach the ground ahead,
    lands beyond MAX_RANGE_M, or that are far flatter than their class at that range
    (MIN_HEIGHT_SHARE) are dropped.
    """
    if not detections:
        return []
    if calibration.is_distorted:
        raise ValueError(f"{calibration.channel}: lifting needs an undistorted (pinhole) image")
    origin, cam_to_global = camera_pose(calibration, ego_translation, ego_rotation)
    k_inv = np.linalg.inv(calibration.camera_matrix)
    heading = ego_yaw(ego_rotation)
    pixels, above = _project(points, origin, cam_to_global, calibration) if points is not None else (None, None)
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
        ray = flat / distance
        used = 0
        if pixels is not None:
            distance, used = _lidar_distance(det.box, pixels, above, origin, ray, distance, cls.size[2])
        expected_px = calibration.camera_matrix[1, 1] * cls.size[2] / distance  # (range ≥ depth: lenient)
        if det.box[1] > 0 and det.box[3] - det.box[1] < MIN_HEIGHT_SHARE * expected_px:
            continue  # far too flat for its class at that range, and not cut off by the image's top
        contact = origin[:2] + ray * distance
        lifted.append(LiftedBox(
            keyframe_index=keyframe_index, category=det.category,
            contact=(float(contact[0]), float(contact[1])), ray=(float(ray[0]), float(ray[1])),
            size=cls.size, yaw=heading, score=det.score, range_m=distance,
            channel=calibration.channel, pixel_box=tuple(float(v) for v in det.box), lidar_points=used,
        ))
    return lifted


def _project(
    points: np.ndarray, origin: np.ndarray, cam_to_global: np.ndarray, calibration: CameraCalibration
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions (M, 2) of the points above the ground and in front of the camera, and
    those points (M, 3) in the global frame."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    xyz = xyz[xyz[:, 2] >= LIDAR_MIN_HEIGHT_M]
    cam = (xyz - origin) @ cam_to_global  # rows: global -> camera
    front = cam[:, 2] > 0.5
    return pixel_positions(cam[front], calibration), xyz[front]


def _lidar_distance(
    box: tuple[float, float, float, float], pixels: np.ndarray, points: np.ndarray, origin: np.ndarray,
    ray: np.ndarray, guess_m: float, height_m: float,
) -> tuple[float, int]:
    """The near face's horizontal distance (metres) along ray from the lidar points in the 2D box,
    and how many points gave it; (guess_m, 0) when too few."""
    x0, y0, x1, y1 = box
    inside = (pixels[:, 0] >= x0) & (pixels[:, 0] <= x1) & (pixels[:, 1] >= y0) & (pixels[:, 1] <= y1)
    inside &= points[:, 2] <= height_m + 0.5
    along = (points[inside, :2] - origin[:2]) @ ray
    along = along[np.abs(along - guess_m) <= LIDAR_WINDOW_M + LIDAR_WINDOW_PER_RANGE * guess_m]
    if len(along) < MIN_LIDAR_POINTS:
        return guess_m, 0
    return float(np.percentile(along, LIDAR_NEAR_PERCENTILE)), len(along)
