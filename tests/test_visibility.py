"""Visibility of ground-truth objects: the share of each box the cameras see past nearer objects."""

from __future__ import annotations

import numpy as np
import pytest

from jadd_dagster.camera import CameraCalibration, camera_to_ego_rotation, pinhole_intrinsic, quaternion_from_matrix
from jadd_dagster.categories import CLASS_INDEX
from jadd_dagster.logs.tracks import Boxes
from jadd_dagster.nuscenes.tables import visibility_level
from jadd_dagster.visibility import ObjectVisibility

# A level camera looking along the ego's x axis, 1.6 m up.
FRONT = CameraCalibration("CAM_FRONT", 320, 180, pinhole_intrinsic(320, 180, 70.0), translation=(0.0, 0.0, 1.6),
                          rotation=quaternion_from_matrix(camera_to_ego_rotation(0.0, 0.0)))


def _boxes(*rows: tuple[str, float, float, tuple[float, float, float]]) -> Boxes:
    """Boxes (id, x, y, [w, l, h]) standing on the ground, facing along x."""
    n = len(rows)
    return Boxes(
        ids=np.array([r[0] for r in rows]), category=np.array(["vehicle.car"] * n), attribute=np.array([""] * n),
        class_index=np.full(n, CLASS_INDEX["vehicle.car"]),
        centre=np.array([(r[1], r[2], r[3][2] / 2) for r in rows]), size=np.array([r[3] for r in rows], dtype=float),
        yaw=np.zeros(n), velocity=np.zeros((n, 2)),
    )


def _coverage(boxes: Boxes, yaw: float = 0.0):
    visibility = ObjectVisibility({"CAM_FRONT": FRONT})
    c, s = np.cos(yaw), np.sin(yaw)
    return visibility.coverage(np.zeros(3), np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), boxes)


CAR = (1.95, 4.62, 1.73)


def test_a_lone_object_in_view_is_wholly_visible():
    coverage = _coverage(_boxes(("car", 20.0, 0.0, CAR)))
    assert coverage.whole["CAM_FRONT"][0] > 100
    assert coverage.shares()[0] == 1.0 and coverage.seen()[0]


def test_a_nearer_object_hides_what_it_covers():
    wall = (12.0, 1.0, 4.0)  # wide and tall: hides the whole car behind it
    hidden = _coverage(_boxes(("car", 20.0, 0.0, CAR), ("wall", 8.0, 0.0, wall)))
    assert hidden.whole["CAM_FRONT"][0] > 100 and hidden.shares()[0] == 0.0 and not hidden.seen()[0]
    assert hidden.shares()[1] == 1.0
    # The same wall moved aside to the car's centre line hides about half of it.
    half = _coverage(_boxes(("car", 20.0, 0.0, CAR), ("wall", 8.0, 6.0, wall)))
    assert 0.35 <= half.shares()[0] <= 0.65


def test_objects_behind_the_camera_are_not_covered():
    coverage = _coverage(_boxes(("car", -20.0, 0.0, CAR)))
    assert coverage.whole["CAM_FRONT"][0] == 0 and coverage.shares()[0] == 0.0 and not coverage.seen()[0]
    turned = _coverage(_boxes(("car", -20.0, 0.0, CAR)), yaw=np.pi)  # the ego turned round sees it
    assert turned.shares()[0] == 1.0


def test_shares_fall_into_the_nuscenes_visibility_levels():
    assert [visibility_level(s) for s in (0.0, 0.39, 0.4, 0.59, 0.6, 0.79, 0.8, 1.0)] == [
        "v0-40", "v0-40", "v40-60", "v40-60", "v60-80", "v60-80", "v80-100", "v80-100"]


def test_images_are_tested_at_most_test_width_wide():
    wide = CameraCalibration("CAM_FRONT", 1600, 900, pinhole_intrinsic(1600, 900, 70.0))
    rays = ObjectVisibility({"CAM_FRONT": wide}, test_width_px=400).rays["CAM_FRONT"]
    assert (rays.width, rays.height) == (400, 225)
    assert rays.calibration.camera_matrix[0, 0] == pytest.approx(wide.camera_matrix[0, 0] / 4)
