"""The lens model: inverting it, and the undistorted camera that shows only valid pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic, undistorted_points, undistortion_maps

WIDTH, HEIGHT = 1600, 900
LENSES = {
    "simulator's (70°)": (70.0, (-0.30, 0.07, 0.001, -0.001, 0.0)),
    "wide (100°)": (100.0, (-0.28, 0.08, 0.0005, -0.0005, 0.0)),
    "mild (90°)": (90.0, (-0.05, 0.0, 0.0, 0.0, 0.0)),
}


def lens(name: str) -> CameraCalibration:
    hfov, distortion = LENSES[name]
    return CameraCalibration("CAM_FRONT", WIDTH, HEIGHT, pinhole_intrinsic(WIDTH, HEIGHT, hfov), distortion=distortion)


@pytest.mark.parametrize("name", list(LENSES))
def test_undistorted_points_project_back_onto_their_pixels_up_to_the_corners(name):
    calib = lens(name)
    pixels = np.mgrid[0:WIDTH:37, 0:HEIGHT:23].reshape(2, -1).T.astype(np.float64)
    pixels = np.concatenate([pixels, [[0, 0], [WIDTH - 1, 0], [0, HEIGHT - 1], [WIDTH - 1, HEIGHT - 1]]])
    rays = np.concatenate([undistorted_points(pixels, calib), np.ones((len(pixels), 1))], axis=1)
    back, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), calib.camera_matrix, calib.dist_coeffs)
    assert np.abs(back.reshape(-1, 2) - pixels).max() < 1e-6


@pytest.mark.parametrize("name", list(LENSES))
@pytest.mark.parametrize("out_size", [None, (800, 450)], ids=["native", "half"])
def test_an_undistorted_frame_shows_only_pixels_of_the_source_and_nearly_all_its_width(name, out_size):
    """Every output pixel samples inside the source image (OpenCV's estimate reached 77 pixels
    past the left and right edges of the wide lens, filled by repeating the edge), and the
    rectangle is not needlessly small: it reaches within 1 % of each source edge."""
    calib = lens(name)
    map_x, map_y, out = undistortion_maps(calib, out_size, undistort=True)
    assert map_x.min() >= -0.5 and map_x.max() <= WIDTH - 0.5
    assert map_y.min() >= -0.5 and map_y.max() <= HEIGHT - 0.5
    assert map_x.min() < 0.01 * WIDTH and map_x.max() > 0.99 * WIDTH - 1
    assert map_y.min() < 0.01 * HEIGHT and map_y.max() > 0.99 * HEIGHT - 1
    assert out.distortion == (0.0,) * 5 and (out.width, out.height) == (out_size or (WIDTH, HEIGHT))
