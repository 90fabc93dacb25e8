"""Lifted boxes per keyframe to tracked 3D boxes with instance ids, and a whole scene labelled.

Per keyframe, detections of one object by two cameras (same class, centres within
DUPLICATE_M) are merged first. Tracks then take, greedily by distance, the boxes of their class
nearest to where they are predicted (constant velocity, global frame); a box no track takes
starts a new track. A track may miss MAX_MISSES keyframes before it ends. Boxes of a track that
moves (MOVING_M and MOVING_MEAN_MPS over its life) face along its motion and carry its velocity,
the others face along the ego heading and stand still. Attributes follow from the motion: a
moving track's boxes are
'moving' (a cycle 'with_rider') while faster than MOVING_MPS, else 'stopped'; a track that never
moves is 'parked', 'standing' or 'without_rider'.

label_scene also fills in what nuScenes keeps per box beyond its pose: num_lidar_pts (points of
the keyframe's sweep inside the box, when the scene has LIDAR_TOP) and an estimated visibility:
the share of the box's projected outline that its detection covers (estimate_visibility).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from jadd_dagster.autolabel.base import NO_LIDAR_POINTS, Box3D, Detector2D, box_area
from jadd_dagster.autolabel.lifting import LiftedBox, camera_pose, lift_to_3d, pixel_positions
from jadd_dagster.camera import CameraCalibration, matrix_from_quaternion
from jadd_dagster.categories import CLASS_BY_CATEGORY
from jadd_dagster.geometry import points_in_box
from jadd_dagster.logs.format import LidarCalibration
from jadd_dagster.logs.sweeps import CHANNEL, read_sweep, sweep_to_ego
from jadd_dagster.nuscenes.tables import visibility_level
from jadd_dagster.scene_record import SceneRecord

DUPLICATE_M = 2.0  # two cameras' boxes of one class this close at one keyframe are one object
GATE_M = 3.0  # how far a box may be from a track's predicted position, metres ...
GATE_PER_RANGE = 0.1  # ... plus this share of the box's range (flat-ground lifting is less sure far off) ...
VELOCITY_SPAN = 3  # keyframes over which a track's velocity is averaged (single steps are noisy)
GATE_UNKNOWN_SPEED = 0.6  # ... plus this share of the class's top speed × time, before a track has a velocity
MAX_MISSES = 1  # keyframes a track may go unseen and still continue
MOVING_M = 2.0  # a track that travels this far faces along its motion
MOVING_MPS = 1.0  # a moving track's box faster than this is 'moving' (lifting noise stays below it)
MOVING_MEAN_MPS = 0.5  # ... and a moving track averages at least this over its life
LIDAR_MARGIN_M = 0.1  # boxes are grown by this when counting points (returns lie on the surface)
# Attributes (moving, still-after-moving, never moving) by the class's nuScenes category prefix.
_ATTRIBUTES = (
    ("vehicle.bicycle", ("cycle.with_rider", "cycle.with_rider", "cycle.without_rider")),
    ("vehicle.motorcycle", ("cycle.with_rider", "cycle.with_rider", "cycle.without_rider")),
    ("vehicle.", ("vehicle.moving", "vehicle.stopped", "vehicle.parked")),
    ("human.pedestrian.", ("pedestrian.moving", "pedestrian.standing", "pedestrian.standing")),
)


@dataclass
class _Track:
    id: str
    category: str
    boxes: list[LiftedBox] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    keyframes: list[int] = field(default_factory=list)

    def predict(self, keyframe: int, keyframe_hz: float) -> np.ndarray:
        """Where the track should be at a keyframe: constant velocity, no faster than its class
        can go (lifting noise alone makes standing objects seem to move)."""
        if len(self.positions) < 2:
            return self.positions[-1]
        first = max(0, len(self.positions) - 1 - VELOCITY_SPAN)
        velocity = (self.positions[-1] - self.positions[first]) / (self.keyframes[-1] - self.keyframes[first])
        top = CLASS_BY_CATEGORY[self.category].max_speed / keyframe_hz  # metres per keyframe
        speed = float(np.hypot(*velocity))
        if speed > top:
            velocity = velocity * (top / speed)
        return self.positions[-1] + velocity * (keyframe - self.keyframes[-1])


def merge_duplicates(boxes: list[LiftedBox]) -> list[LiftedBox]:
    """One box per object at one keyframe: the best-scored of boxes of a class within DUPLICATE_M."""
    kept: list[LiftedBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        centre = box.centre()[:2]
        if not any(k.category == box.category and np.hypot(*(k.centre()[:2] - centre)) < DUPLICATE_M for k in kept):
            kept.append(box)
    return kept


def track(boxes_per_keyframe: list[list[LiftedBox]], keyframe_hz: float = 2.0) -> list[Box3D]:
    """Tracked boxes (instance ids 'track-NNNN') of all keyframes; boxes_per_keyframe[i] holds the
    lifted boxes of keyframe i from every camera."""
    live: list[_Track] = []
    done: list[_Track] = []
    for keyframe, boxes in enumerate(boxes_per_keyframe):
        boxes = merge_duplicates(boxes)
        centres = [b.centre()[:2] for b in boxes]
        pairs = []
        for t, tr in enumerate(live):
            predicted = tr.predict(keyframe, keyframe_hz)
            gate = GATE_M * (keyframe - tr.keyframes[-1])
            if len(tr.positions) < 2:
                gate += GATE_UNKNOWN_SPEED * CLASS_BY_CATEGORY[tr.category].max_speed / keyframe_hz
            for b, box in enumerate(boxes):
                distance = float(np.hypot(*(centres[b] - predicted)))
                if box.category == tr.category and distance <= gate + GATE_PER_RANGE * box.range_m:
                    pairs.append((distance, t, b))
        taken_tracks, taken_boxes = set(), set()
        for _, t, b in sorted(pairs):
            if t in taken_tracks or b in taken_boxes:
                continue
            taken_tracks.add(t)
            taken_boxes.add(b)
            _extend(live[t], boxes[b], centres[b], keyframe)
        for b, box in enumerate(boxes):
            if b not in taken_boxes:
                tr = _Track(id=f"track-{len(live) + len(done):04d}", category=box.category)
                _extend(tr, box, centres[b], keyframe)
                live.append(tr)
        still = [tr for tr in live if keyframe - tr.keyframes[-1] <= MAX_MISSES]
        done.extend(tr for tr in live if keyframe - tr.keyframes[-1] > MAX_MISSES)
        live = still
    return [box for tr in sorted(done + live, key=lambda tr: tr.id) for box in _final_boxes(tr, keyframe_hz)]


def _extend(tr: _Track, box: LiftedBox, centre: np.ndarray, keyframe: int) -> None:
    tr.boxes.append(box)
    tr.positions.append(centre)
    tr.keyframes.append(keyframe)


def _final_boxes(tr: _Track, keyframe_hz: float) -> list[Box3D]:
    """The track's boxes facing along its motion (central differences) when it moves (and its class
    can move at all: cones and barriers face the default heading), with velocity and attributes."""
    points = np.array(tr.positions)
    travelled = float(np.hypot(*(points[-1] - points[0])))
    life_s = (tr.keyframes[-1] - tr.keyframes[0]) / keyframe_hz
    # A track that drifts a few metres over a long life is lifting noise (or hops between parked
    # neighbours), not motion: it must also average MOVING_MEAN_MPS.
    moves = (CLASS_BY_CATEGORY[tr.category].max_speed > 0 and travelled >= MOVING_M
             and travelled >= MOVING_MEAN_MPS * life_s)
    if len(points) < 2 or not moves:
        still = _attribute(tr.category, 2)
        return [replace(b.box(instance_id=tr.id), attributes=still) for b in tr.boxes]
    out = []
    for i, b in enumerate(tr.boxes):
        lo, hi = max(i - 1, 0), min(i + 1, len(points) - 1)
        dx, dy = points[hi] - points[lo]
        yaw = math.atan2(dy, dx) if math.hypot(dx, dy) > 1e-3 else b.yaw
        seconds = (tr.keyframes[hi] - tr.keyframes[lo]) / keyframe_hz
        velocity = (float(dx / seconds), float(dy / seconds))
        attributes = _attribute(tr.category, 0 if math.hypot(*velocity) > MOVING_MPS else 1)
        out.append(replace(b.box(yaw=yaw, instance_id=tr.id), velocity=velocity, attributes=attributes))
    return out


def _attribute(category: str, motion: int) -> tuple[str, ...]:
    """The attribute of a box of category: motion 0 moving, 1 still after moving, 2 never moving."""
    for prefix, names in _ATTRIBUTES:
        if category.startswith(prefix):
            return (names[motion],)
    return ()


def estimate_visibility(box: Box3D, calibration: CameraCalibration, ego_rotation, ego_translation) -> str:
    """The nuScenes visibility level of a box from its detection: the share of its projected
    outline (clipped to the image) that the detection's 2D box covers. calibration: the pinhole
    calibration of box.channel; ego pose of that image (ego-to-global). '' without a pixel_box."""
    if box.pixel_box is None:
        return ""
    origin, cam_to_global = camera_pose(calibration, ego_translation, ego_rotation)
    width, length, height = box.size
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    corners = np.array([(x * length / 2, y * width / 2, z * height / 2)
                        for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    corners = corners @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + np.asarray(box.translation)
    cam = (corners - origin) @ cam_to_global
    cam = cam[cam[:, 2] > 0.1]
    if len(cam) < 2:
        return ""
    u, v = pixel_positions(cam, calibration).T
    outline = (max(u.min(), 0.0), max(v.min(), 0.0), min(u.max(), calibration.width), min(v.max(), calibration.height))
    whole = box_area(outline)
    if whole <= 0:
        return ""
    seen = box_area(tuple(f(a, b) for f, a, b in zip((max, max, min, min), box.pixel_box, outline)))
    return visibility_level(min(1.0, seen / whole))


def label_scene(scene_dir: Path, detector: Detector2D | None = None, frames_root: Path | None = None) -> list[dict]:
    """Annotation dicts (Box3D.annotation()) of a sampled scene folder (scene_record layout): every
    camera's keyframes detected, lifted with the output calibration, the frame's ego pose and the
    keyframe's lidar sweep when the scene has LIDAR_TOP, then tracked; each box gets its lidar
    point count and estimated visibility. The scene must be sampled undistorted; detector defaults
    to the BaselineDetector. frames_root is where the record's frame paths lead: the profile's
    dataroot for a scene in the store (scene_outputs.py), the folder itself (default) for one that
    sample_scene just wrote."""
    if detector is None:
        from jadd_dagster.autolabel.baseline import BaselineDetector

        detector = BaselineDetector()
    scene_dir = Path(scene_dir)
    frames = Path(frames_root) if frames_root is not None else scene_dir
    record = SceneRecord.load(scene_dir)
    # Cameras only: a LIDAR_TOP entry has no intrinsics and its frames are point clouds.
    calibrations = {c: CameraCalibration.from_json(data) for c, data in record.cameras.items() if "intrinsic" in data}
    sweeps = _keyframe_sweeps(frames, record)
    per_keyframe: list[list[LiftedBox]] = [[] for _ in record.keyframe_times_us]
    keyframes = [f for f in record.frames if f.is_key_frame and f.keyframe_index is not None and f.channel in calibrations]
    poses = {(f.channel, f.keyframe_index): f.ego_pose for f in keyframes}
    for frame in keyframes:
        bgr = cv2.imread(str(frames / frame.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{frames / frame.path}: missing or unreadable keyframe image")
        detections = detector.detect([cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])[0]
        per_keyframe[frame.keyframe_index].extend(lift_to_3d(
            detections, calibrations[frame.channel], frame.ego_pose.translation, frame.ego_pose.rotation,
            frame.keyframe_index, sweeps.get(frame.keyframe_index),
        ))
    boxes = []
    for box in track(per_keyframe, record.keyframe_hz):
        pose = poses.get((box.channel, box.keyframe_index))
        visibility = ""
        if pose is not None:
            visibility = estimate_visibility(box, calibrations[box.channel], pose.rotation, pose.translation)
        sweep = sweeps.get(box.keyframe_index)
        points = NO_LIDAR_POINTS if sweep is None else points_in_box(sweep, box.translation, box.size, box.yaw, LIDAR_MARGIN_M)
        boxes.append(replace(box, visibility=visibility, num_lidar_pts=points).annotation())
    return boxes


def _keyframe_sweeps(frames: Path, record: SceneRecord) -> dict[int, np.ndarray]:
    """The scene's LIDAR_TOP keyframe sweeps as global-frame points (N, 3), by keyframe index;
    empty when the scene has no lidar."""
    if CHANNEL not in record.cameras:
        return {}
    mount = LidarCalibration.from_json(record.cameras[CHANNEL])
    sweeps = {}
    for frame in record.frames:
        if frame.channel == CHANNEL and frame.is_key_frame and frame.keyframe_index is not None:
            ego = sweep_to_ego(read_sweep(frames / frame.path), mount)
            pose = frame.ego_pose
            sweeps[frame.keyframe_index] = ego @ matrix_from_quaternion(pose.rotation).T + np.asarray(pose.translation)
    return sweeps
