"""Camera calibration and the lens model shared by the log generator and the sampler.

Frames follow nuScenes: the camera frame has x right, y down, z forward (metres); the ego frame has
x forward, y left, z up (metres); rotations are unit quaternions written [w, x, y, z] and map sensor
coordinates into the ego frame. Distortion uses OpenCV's radial-tangential model with coefficients
(k1, k2, p1, p2, k3).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

DISTORTION_MODEL = "opencv_radtan"
DISTORTION_NAMES = ("k1", "k2", "p1", "p2", "k3")

# Plausible calibrations (values outside these are refused at ingest, naming the field):
MIN_IMAGE_SIDE = 16  # pixels, as the smallest output a spec may ask for
MAX_IMAGE_SIDE = 8192  # pixels
MAX_IMAGE_PIXELS = 7680 * 4320  # 8K UHD: the remap tables of one camera stay under 270 MB
MAX_FOCAL_FACTOR = 100.0  # fx, fy at most this many image widths/heights (a field of view above ~0.6°)
MAX_RADIAL = 50.0  # |k1|, |k2|, |k3|
MAX_TANGENTIAL = 1.0  # |p1|, |p2|
MAX_MOUNT_OFFSET_M = 100.0  # a sensor this far from the ego origin is not on the vehicle (logs/reader.py)
MAX_RECTIFIED_SCALE = 10.0  # the rectified focal length within this factor of the raw one


def quaternion_from_matrix(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion [w, x, y, z] of a 3x3 rotation matrix (w >= 0)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    arr = np.array(q)
    arr /= np.linalg.norm(arr)
    if arr[0] < 0:
        arr = -arr
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def matrix_from_quaternion(q: tuple[float, float, float, float] | list[float]) -> np.ndarray:
    """3x3 rotation matrix of a quaternion [w, x, y, z] (normalised first)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_quaternion(yaw_rad: float) -> tuple[float, float, float, float]:
    """Quaternion [w, x, y, z] of a rotation by yaw_rad about the z (up) axis."""
    return (math.cos(yaw_rad / 2), 0.0, 0.0, math.sin(yaw_rad / 2))


def camera_to_ego_rotation(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """Rotation (3x3) from the camera frame to the ego frame of a camera looking along yaw_deg.

    yaw 0 looks forward (ego +x), 90 looks left (ego +y); pitch > 0 tilts the camera down.
    """
    # Columns are the camera axes expressed in the ego frame for a forward-looking camera.
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    pitch = math.radians(pitch_deg)
    tilt = np.array(  # rotation about the camera x axis (pointing right): positive looks down
        [[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]]
    )
    yaw = math.radians(yaw_deg)
    about_up = np.array(
        [[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]]
    )
    return about_up @ base @ tilt.T


@dataclass(frozen=True)
class CameraCalibration:
    """One camera's intrinsics, lens distortion and mounting on the vehicle.

    intrinsic: 3x3 camera matrix in pixels; distortion: OpenCV (k1, k2, p1, p2, k3);
    translation: sensor origin in the ego frame (metres); rotation: sensor-to-ego [w, x, y, z];
    width, height: image size in pixels.
    """

    channel: str
    width: int
    height: int
    intrinsic: tuple[tuple[float, float, float], ...]
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 1.5)
    rotation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    distortion_model: str = field(default=DISTORTION_MODEL)

    @property
    def camera_matrix(self) -> np.ndarray:
        return np.asarray(self.intrinsic, dtype=np.float64)

    @property
    def dist_coeffs(self) -> np.ndarray:
        return np.asarray(self.distortion, dtype=np.float64)

    @property
    def is_distorted(self) -> bool:
        return any(abs(c) > 0 for c in self.distortion)

    def to_json(self) -> dict:
        return {
            "channel": self.channel,
            "width": self.width,
            "height": self.height,
            "intrinsic": [list(row) for row in self.intrinsic],
            "distortion_model": self.distortion_model,
            "distortion": list(self.distortion),
            "translation": list(self.translation),
            "rotation": list(self.rotation),
        }

    @classmethod
    def from_json(cls, data: dict) -> "CameraCalibration":
        intrinsic = tuple(tuple(float(v) for v in row) for row in data["intrinsic"])
        if len(intrinsic) != 3 or any(len(row) != 3 for row in intrinsic):
            raise ValueError(f"{data.get('channel')}: intrinsic must be a 3x3 matrix")
        return cls(
            channel=str(data["channel"]),
            width=int(data["width"]),
            height=int(data["height"]),
            intrinsic=intrinsic,
            distortion=tuple(float(v) for v in data.get("distortion", (0, 0, 0, 0, 0))),
            translation=tuple(float(v) for v in data["translation"]),  # type: ignore[arg-type]
            rotation=tuple(float(v) for v in data["rotation"]),  # type: ignore[arg-type]
            distortion_model=str(data.get("distortion_model", DISTORTION_MODEL)),
        )


def implausible_fields(calib: CameraCalibration) -> Iterator[str]:
    """A message naming each field of a camera's lens and image that cannot be right: non-finite
    or out-of-range intrinsics, distortion or image size, and a lens whose rectification
    degenerates (a NaN coefficient once gave a rectified fx of 4.7e-37). The
    mounting (translation, rotation) is checked with the log (logs/reader.py)."""
    width, height = calib.width, calib.height
    size_ok = True
    for name, side in (("width", width), ("height", height)):
        if not MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE:
            size_ok = False
            yield f"{name} {side} pixels must be {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE}"
    if size_ok and width * height > MAX_IMAGE_PIXELS:
        size_ok = False
        yield f"width x height {width}x{height} is more than {MAX_IMAGE_PIXELS} pixels"
    k = calib.camera_matrix
    intrinsic_ok = bool(np.all(np.isfinite(k))) and np.allclose(k[1, 0], 0) and np.allclose(k[2], (0, 0, 1))
    if not intrinsic_ok:
        yield f"intrinsic {k.tolist()} is not a finite camera matrix (rows fx s cx, 0 fy cy, 0 0 1)"
    else:
        for name, focal, side in (("fx", k[0, 0], width), ("fy", k[1, 1], height)):
            if not 0 < focal <= MAX_FOCAL_FACTOR * max(side, 1):
                intrinsic_ok = False
                yield f"intrinsic {name} {focal:g} pixels must be positive and at most {MAX_FOCAL_FACTOR:g} x the image"
        for name, centre, side in (("cx", k[0, 2], width), ("cy", k[1, 2], height)):
            if not 0 <= centre <= side:
                intrinsic_ok = False
                yield f"intrinsic {name} {centre:g} is outside the image (0..{side})"
    distortion_ok = True
    for i, value in enumerate(calib.distortion):
        name = DISTORTION_NAMES[i] if i < len(DISTORTION_NAMES) else str(i)
        bound = MAX_TANGENTIAL if name in ("p1", "p2") else MAX_RADIAL
        if not (math.isfinite(value) and abs(value) <= bound):
            distortion_ok = False
            yield f"distortion {name} {value!r} must be finite and within ±{bound:g}"
    if size_ok and intrinsic_ok and distortion_ok and len(calib.distortion) == 5:
        problem = rectification_problem(calib)
        if problem is not None:
            yield problem


# Inverting the lens model (pixel -> normalised coordinates) iterates to this precision.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-9)


def rectified_intrinsic(calib: CameraCalibration) -> np.ndarray:
    """Camera matrix (3x3) of the undistorted pinhole image that shows only valid pixels: the
    axis-aligned rectangle bounded by the innermost points of the undistorted image border, mapped
    onto the same width x height (what cv2.getOptimalNewCameraMatrix with alpha=0 estimates).

    OpenCV's own estimate inverts the lens on a 9 x 9 grid by fixed-point iteration, which does not
    converge near the corners of a wide lens: for one 100° across (k1 -0.28, k2 0.08) its rectangle
    reached 77 pixels past the left and right edges, which the remap filled by repeating the edge.
    Here every pixel of the border is inverted by Newton's method (undistorted_points).
    """
    width, height = calib.width, calib.height
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    edges = {
        "left": (np.zeros_like(ys), ys), "right": (np.full_like(ys, width - 1), ys),
        "top": (xs, np.zeros_like(xs)), "bottom": (xs, np.full_like(xs, height - 1)),
    }
    normalised = {name: undistorted_points(np.stack(uv, axis=1), calib) for name, uv in edges.items()}
    left, right = normalised["left"][:, 0].max(), normalised["right"][:, 0].min()
    top, bottom = normalised["top"][:, 1].max(), normalised["bottom"][:, 1].min()
    fx, fy = (width - 1) / (right - left), (height - 1) / (bottom - top)
    return np.array([[fx, 0.0, -fx * left], [0.0, fy, -fy * top], [0.0, 0.0, 1.0]])


def undistorted_points(pixels: np.ndarray, calib: CameraCalibration, iterations: int = 20) -> np.ndarray:
    """Normalised undistorted coordinates (N, 2) of distorted pixel positions (N, 2): the lens model
    inverted by Newton's method from OpenCV's estimate, to a thousandth of a pixel or better where
    the model is invertible."""
    k = calib.camera_matrix
    k1, k2, p1, p2, k3 = (list(calib.distortion) + [0.0] * 5)[:5]
    target = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    xd = (target[:, 0] - k[0, 2] - k[0, 1] * (target[:, 1] - k[1, 2]) / k[1, 1]) / k[0, 0]
    yd = (target[:, 1] - k[1, 2]) / k[1, 1]
    guess = cv2.undistortPointsIter(target.reshape(-1, 1, 2), k, calib.dist_coeffs, None, None, _UNDISTORT_CRITERIA)
    x, y = guess.reshape(-1, 2).T.copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xd
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - yd
        j11 = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
        j12 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        j21 = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
        j22 = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
        det = j11 * j22 - j12 * j21
        x, y = x - (j22 * fx - j12 * fy) / det, y - (j11 * fy - j21 * fx) / det
    return np.stack([x, y], axis=1)


def rectification_problem(calib: CameraCalibration) -> str | None:
    """Why undistorting this camera would give a degenerate pinhole image, or None."""
    if not calib.is_distorted:
        return None
    with np.errstate(all="ignore"):
        new_k = rectified_intrinsic(calib)
    fx, fy = calib.camera_matrix[0, 0], calib.camera_matrix[1, 1]
    scales = (new_k[0, 0] / fx, new_k[1, 1] / fy)
    if not (
        np.all(np.isfinite(new_k))
        and all(1 / MAX_RECTIFIED_SCALE <= s <= MAX_RECTIFIED_SCALE for s in scales)
        and 0 <= new_k[0, 2] <= calib.width
        and 0 <= new_k[1, 2] <= calib.height
    ):
        return (
            f"distortion {list(calib.distortion)} does not rectify: the undistorted camera would have "
            f"fx={new_k[0, 0]:.4g}, fy={new_k[1, 1]:.4g}, cx={new_k[0, 2]:.4g}, cy={new_k[1, 2]:.4g}"
        )
    return None


def resized_calibration(calib: CameraCalibration, width: int, height: int) -> CameraCalibration:
    """The calibration of the same camera's image resized to width x height pixels (the lens
    distortion acts on normalised coordinates, so only the camera matrix scales)."""
    scale = np.array([[width / calib.width, 0, 0], [0, height / calib.height, 0], [0, 0, 1]])
    k = scale @ calib.camera_matrix
    return replace(calib, width=width, height=height, intrinsic=tuple(tuple(float(v) for v in row) for row in k))


def pinhole_intrinsic(width: int, height: int, hfov_deg: float) -> tuple[tuple[float, ...], ...]:
    """Camera matrix of a centred pinhole with the given horizontal field of view."""
    fx = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return ((fx, 0.0, width / 2), (0.0, fx, height / 2), (0.0, 0.0, 1.0))


def project_points(points_cam: np.ndarray, calib: CameraCalibration, distorted: bool = True) -> np.ndarray:
    """Pixel coordinates (N, 2) of camera-frame points (N, 3) with z > 0."""
    pts = np.asarray(points_cam, dtype=np.float64).reshape(-1, 1, 3)
    dist = calib.dist_coeffs if distorted else np.zeros(5)
    pixels, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), calib.camera_matrix, dist)
    return pixels.reshape(-1, 2)


def pixel_rays(calib: CameraCalibration) -> np.ndarray:
    """Unit-z ray directions (H, W, 3) in the camera frame for every pixel of the distorted image."""
    u, v = np.meshgrid(np.arange(calib.width, dtype=np.float64), np.arange(calib.height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    norm = cv2.undistortPointsIter(pix, calib.camera_matrix, calib.dist_coeffs, None, None, _UNDISTORT_CRITERIA)
    norm = norm.reshape(-1, 2)
    rays = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
    return rays.reshape(calib.height, calib.width, 3)


def undistortion_maps(
    calib: CameraCalibration, out_size: tuple[int, int] | None = None, undistort: bool = True
) -> tuple[np.ndarray, np.ndarray, CameraCalibration]:
    """Remap tables that turn a raw frame into the output frame, and the output calibration.

    out_size is (width, height); None keeps the input size. With undistort, the output is a pinhole
    image with the rectified camera matrix (rectified_intrinsic: only valid pixels) and zero
    distortion; without it the frame is only resized and the distortion kept.
    """
    width, height = out_size or (calib.width, calib.height)
    sx, sy = width / calib.width, height / calib.height
    problems = list(implausible_fields(calib))
    if problems:  # refused at ingest already; this guards any other path to the remap tables
        raise ValueError(f"{calib.channel}: calibration cannot be used: {'; '.join(problems)}")
    if undistort:
        new_k = rectified_intrinsic(calib)
        distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
        src_dist = calib.dist_coeffs
    else:
        new_k = calib.camera_matrix.copy()
        distortion = calib.distortion
        src_dist = np.zeros(5)
    scale = np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])
    out_k = scale @ new_k
    # For an undistorted output, source pixel = distort(K_src, inverse(out_k) * p); without
    # undistortion, this is a pure scaling because both use the same (zero) distortion.
    map_x, map_y = cv2.initUndistortRectifyMap(
        calib.camera_matrix, src_dist, None, out_k, (width, height), cv2.CV_32FC1
    )
    out = CameraCalibration(
        channel=calib.channel,
        width=width,
        height=height,
        intrinsic=tuple(tuple(float(v) for v in row) for row in out_k),
        distortion=distortion,
        translation=calib.translation,
        rotation=calib.rotation,
    )
    return map_x, map_y, out
