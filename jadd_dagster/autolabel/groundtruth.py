"""Ground-truth 3D boxes of a sampled scene, straight from the synthetic log's objects.

Used as the dataset's sample_annotations when the log has ground truth (the generator's logs), and
as the reference the autolabels are evaluated against.
"""

from __future__ import annotations

import math

import numpy as np

from jadd_dagster.logs.lidar import CHANNEL, lidar_points_per_object
from jadd_dagster.sampling.lidar import nearest_sweeps
from jadd_dagster.scene_record import SceneRecord

MAX_DISTANCE_M = 60.0  # beyond every nuScenes detection class range (50 m at most)
VISIBILITY = "v80-100"  # not computed: the synthetic world has no occlusion model to read it from
NO_LIDAR_POINTS = 1  # num_lidar_pts of every box when the log has no lidar, so the evaluation keeps it


def yaw_quaternion(yaw: float) -> list[float]:
    """Box-to-map rotation [w, x, y, z] of a yaw (rad) about the map z axis."""
    return [math.cos(yaw / 2.0), 0.0, 0.0, math.sin(yaw / 2.0)]


def _lidar_sweeps(log, record: SceneRecord, channel: str) -> list[int] | None:
    """The sweep time (µs) behind each keyframe: the record's own channel keyframes when sampled,
    else the nearest sweeps of the log; None when the log has no such lidar."""
    own = {f.keyframe_index: int(f.timestamp_us) for f in record.frames if f.channel == channel and f.is_key_frame}
    if len(own) == len(record.keyframe_times_us):
        return [own[i] for i in range(len(record.keyframe_times_us))]
    if channel not in getattr(log.manifest, "lidar_channels", ()):
        return None
    return nearest_sweeps(log.lidar_timestamps(channel), [int(t) for t in record.keyframe_times_us])


def ground_truth_annotations(
    log, record: SceneRecord, max_distance_m: float = MAX_DISTANCE_M, channel: str = CHANNEL
) -> list[dict]:
    """Annotation dicts (nuscenes.tables.annotation_tables) of the log's objects at each keyframe.

    log is a logs.reader.DriveLog with objects (none: no annotations). Boxes are the objects at the
    keyframe time within max_distance_m (metres, horizontal) of the ego. num_lidar_pts counts the
    points of the keyframe's lidar sweep inside the box (lidar_points_per_object); boxes with 0
    points are kept (the nuScenes evaluation drops them). When the log has no lidar every box gets
    NO_LIDAR_POINTS, so the evaluation keeps all of them. num_radar_pts is 0; visibility VISIBILITY.
    """
    times = [int(t) for t in record.keyframe_times_us]
    sweeps = _lidar_sweeps(log, record, channel)
    positions, _ = log.pose_at(np.asarray(times, dtype=np.int64))
    annotations: list[dict] = []
    for index, t in enumerate(times):
        boxes = log.objects_at(t)
        if boxes.empty:
            continue
        distance = np.hypot(boxes["x"].to_numpy() - positions[index, 0], boxes["y"].to_numpy() - positions[index, 1])
        boxes = boxes[distance <= max_distance_m]
        points = lidar_points_per_object(log, sweeps[index], channel) if sweeps is not None else None
        for row in boxes.itertuples(index=False):
            lidar_points = NO_LIDAR_POINTS if points is None else int(points.get(row.instance_id, 0))
            annotations.append(
                {
                    "instance_id": str(row.instance_id),
                    "keyframe_index": index,
                    "category": str(row.category),
                    "translation": [float(row.x), float(row.y), float(row.z)],
                    "size": [float(row.width), float(row.length), float(row.height)],
                    "rotation": yaw_quaternion(float(row.yaw)),
                    "attributes": [str(row.attribute)] if row.attribute else [],
                    "visibility": VISIBILITY,
                    "num_lidar_pts": lidar_points,
                    "num_radar_pts": 0,
                }
            )
    return annotations
