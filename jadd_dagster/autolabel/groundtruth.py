"""Ground-truth 3D boxes of a sampled scene, straight from its log's objects.

The reference the auto-labels are evaluated against (autolabel/quality.py), for logs that carry
ground truth (objects.parquet: a labelled drive, or the demo world's objects).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jadd_dagster.autolabel.base import NO_LIDAR_POINTS
from jadd_dagster.autolabel.lifting import ego_yaw
from jadd_dagster.geometry import yaw_matrix
from jadd_dagster.logs.sweeps import CHANNEL, lidar_points_per_object, read_sweep
from jadd_dagster.sampling.lidar import nearest_sweeps
from jadd_dagster.nuscenes.tables import visibility_level
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.visibility import ObjectVisibility

MAX_DISTANCE_M = 60.0  # beyond every nuScenes detection class range (50 m at most)
MIN_SEEN_PX = 2  # visible pixels (at visibility.TEST_WIDTH_PX) that make a box observable


def yaw_quaternion(yaw: float) -> list[float]:
    """Box-to-map rotation [w, x, y, z] of a yaw (rad) about the map z axis."""
    return [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]


def _lidar_sweeps(log, record: SceneRecord, channel: str) -> list[tuple[int, str | None]] | None:
    """The sweep behind each keyframe, as (time µs, its file in the scene folder): the record's own
    channel keyframes when sampled, else the nearest sweeps of the log (no file); None when the
    log has no such lidar."""
    own = {f.keyframe_index: f for f in record.frames if f.channel == channel and f.is_key_frame}
    if len(own) == len(record.keyframe_times_us):
        return [(int(own[i].timestamp_us), own[i].path) for i in range(len(record.keyframe_times_us))]
    if channel not in getattr(log.manifest, "lidar_channels", ()):
        return None
    return [(t, None) for t in nearest_sweeps(log.lidar_timestamps(channel), [int(t) for t in record.keyframe_times_us])]


def ground_truth_annotations(
    log, record: SceneRecord, max_distance_m: float = MAX_DISTANCE_M, channel: str = CHANNEL,
    cameras: ObjectVisibility | None = None, scene_dir: Path | None = None,
) -> list[dict]:
    """Annotation dicts (nuscenes.tables.annotation_tables) of the log's objects at each keyframe.

    log is a logs.reader.DriveLog with objects (none: no annotations). Boxes are the objects at the
    keyframe time within max_distance_m (metres, horizontal) of the ego. visibility is the share of
    the box the log's cameras see (jadd_dagster.visibility; pass cameras, an ObjectVisibility of the log's
    calibration, to reuse its rays).
    num_lidar_pts counts the points of the keyframe's lidar sweep inside the box
    (lidar_points_per_object; the sweep is read from scene_dir, the sampled scene, when it has the
    channel, else from the log); boxes with 0 points are kept (the nuScenes evaluation drops them).
    When the log has no lidar, a box gets NO_LIDAR_POINTS if one of the record's cameras sees at
    least MIN_SEEN_PX of it, else 0. num_radar_pts is 0.
    """
    times = [int(t) for t in record.keyframe_times_us]
    sweeps = _lidar_sweeps(log, record, channel)
    positions, rotations = log.pose_at(np.asarray(times, dtype=np.int64))
    cameras = cameras or ObjectVisibility(log.calibration)
    dataset_cameras = [c for c, data in record.cameras.items() if "intrinsic" in data]
    annotations: list[dict] = []
    for index, t in enumerate(times):
        objects = log.boxes_at(t)
        if objects is None or not len(objects):
            continue
        coverage = cameras.coverage(positions[index], yaw_matrix(ego_yaw(rotations[index])), objects)
        shares, seen = coverage.shares(), coverage.seen(dataset_cameras, MIN_SEEN_PX)
        distance = np.hypot(objects.centre[:, 0] - positions[index, 0], objects.centre[:, 1] - positions[index, 1])
        points = None
        if sweeps is not None:
            stamp, sampled = sweeps[index]
            sweep = read_sweep(Path(scene_dir) / sampled) if scene_dir is not None and sampled else None
            points = lidar_points_per_object(log, stamp, channel, sweep=sweep)
        for i in np.flatnonzero(distance <= max_distance_m):
            instance_id = str(objects.ids[i])
            if points is not None:
                lidar_points = int(points.get(instance_id, 0))
            else:
                lidar_points = NO_LIDAR_POINTS if seen[i] else 0
            annotations.append(
                {
                    "instance_id": instance_id,
                    "keyframe_index": index,
                    "category": str(objects.category[i]),
                    "translation": [float(v) for v in objects.centre[i]],
                    "size": [float(v) for v in objects.size[i]],
                    "rotation": yaw_quaternion(float(objects.yaw[i])),
                    "velocity": [float(v) for v in objects.velocity[i]],
                    "attributes": [str(objects.attribute[i])] if objects.attribute[i] else [],
                    "visibility": visibility_level(float(shares[i])),
                    "num_lidar_pts": lidar_points,
                    "num_radar_pts": 0,
                }
            )
    return annotations

