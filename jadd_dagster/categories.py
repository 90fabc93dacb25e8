"""The ten nuScenes detection classes: their category names, mean sizes and physical limits.

Shared by everything that names or sizes an object: the auto-labeller (lifting takes a class's mean
size, tracking its top speed), the ground truth read from a log's objects.parquet, the evaluation,
and the demo world of jadd_dagster.sim. Categories are nuScenes category names (e.g.
'vehicle.car'); sizes are nuScenes' [width, length, height] in metres.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectClass:
    """A detection class: nuScenes category name, mean size [w, l, h] in metres, and the physical
    limits any of its objects keeps (speed m/s, total acceleration m/s²)."""

    name: str
    category: str
    size: tuple[float, float, float]
    max_speed: float
    max_accel: float


# Mean sizes are the nuScenes training-set means of each detection class.
CLASSES = (
    ObjectClass("car", "vehicle.car", (1.95, 4.62, 1.73), 25.0, 6.0),
    ObjectClass("truck", "vehicle.truck", (2.51, 6.93, 2.84), 20.0, 6.0),
    ObjectClass("bus", "vehicle.bus.rigid", (2.94, 11.19, 3.47), 16.0, 6.0),
    ObjectClass("trailer", "vehicle.trailer", (2.90, 12.28, 3.87), 20.0, 6.0),
    ObjectClass("construction_vehicle", "vehicle.construction", (2.73, 6.37, 3.19), 12.0, 6.0),
    ObjectClass("pedestrian", "human.pedestrian.adult", (0.67, 0.73, 1.77), 2.0, 2.0),
    ObjectClass("motorcycle", "vehicle.motorcycle", (0.77, 2.11, 1.47), 25.0, 6.0),
    ObjectClass("bicycle", "vehicle.bicycle", (0.60, 1.70, 1.28), 8.0, 4.0),
    ObjectClass("traffic_cone", "movable_object.trafficcone", (0.41, 0.41, 1.07), 0.0, 0.0),
    ObjectClass("barrier", "movable_object.barrier", (2.53, 0.50, 0.98), 0.0, 0.0),
)
CLASS_BY_NAME = {c.name: c for c in CLASSES}
CLASS_BY_CATEGORY = {c.category: c for c in CLASSES}
CLASS_INDEX = {c.category: i for i, c in enumerate(CLASSES)}
DETECTION_CLASSES = tuple(c.name for c in CLASSES)  # the devkit's detection names, in its order
