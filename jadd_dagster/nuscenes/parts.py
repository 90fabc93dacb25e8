"""How many scenes one dataset part (a version folder) holds by default, from a measurement.

A part is a version folder that the nuscenes-devkit opens on its own, and NuScenes() holds every
record of its 13 tables in memory. The memory and time of that load grow with the records, and the
records per scene follow from the dataset spec, so the part size is chosen per spec: as many
scenes as keep one devkit load within half of the limits we accept (8 GiB and 60 s on the
project's standard machine), never more than the 4-digit scene names allow (MAX_SCENES).
The figures per record were measured by bench/bench_part_load.py (bench/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from jadd_dagster.nuscenes.tables import MAX_SCENES

GIB = 1 << 30
SCENE_LENGTH_S = 20.0


# The tables of tracked 3D boxes; their records (three lists of floats each) cost more than the others.
BOX_TABLES = ("instance", "sample_annotation")


@dataclass(frozen=True)
class PartBudget:
    """What one devkit load of a part may use, and what it costs (measured).

    max_bytes, max_seconds: the peak RSS (bytes) of the loading process and the seconds of the
    NuScenes() call that one part may need. bytes_per_record, seconds_per_record: the cost of one
    record of the tables without boxes (scene, sample, sample_data, ego_pose and the small ones);
    bytes_per_box_record, seconds_per_box_record: of one record of BOX_TABLES. base_bytes: the peak
    RSS without records (the interpreter and the devkit's imports); base_seconds: the NuScenes() time
    without records. The seconds are CPU seconds, which is the wall time when the load has a core to
    itself. source: where the measurement is.
    """

    max_bytes: int
    max_seconds: float
    bytes_per_record: float
    bytes_per_box_record: float
    seconds_per_record: float
    seconds_per_box_record: float
    base_bytes: float
    base_seconds: float
    source: str

    def bytes_for(self, records: Mapping[str, int]) -> float:
        """Memory (bytes) that records (table -> count) add to a devkit load, above base_bytes."""
        return sum(n * (self.bytes_per_box_record if t in BOX_TABLES else self.bytes_per_record) for t, n in records.items())

    def seconds_for(self, records: Mapping[str, int]) -> float:
        """NuScenes() time (s) that records (table -> count) add to a devkit load, above base_seconds."""
        return sum(n * (self.seconds_per_box_record if t in BOX_TABLES else self.seconds_per_record) for t, n in records.items())


# The limits are 8 GiB and 60 s on the standard machine (2 vCPUs, 24 GiB); a part is sized for half
# of each, as a margin for slower or busier machines (wall time up to twice the CPU time), other
# Python versions and the devkit's own growth.
MEASURED = PartBudget(
    max_bytes=4 * GIB,
    max_seconds=30.0,
    bytes_per_record=1219.0,
    bytes_per_box_record=2184.0,
    seconds_per_record=10.4e-6,
    seconds_per_box_record=27.2e-6,
    base_bytes=228 * 2**20,
    base_seconds=0.35,
    source='bench/RESULTS.md, "Devkit load per part"',
)


def records_per_scene(
    cameras: int,
    lidars: int,
    keyframe_hz: int,
    sweep_hz: int,
    boxes_per_keyframe: float = 0.0,
    scene_length_s: float = SCENE_LENGTH_S,
) -> dict[str, int]:
    """Records one scene adds to each table that grows with the scenes (nuscenes.tables.STREAMED_TABLES).

    Every camera frame and every lidar frame (one per keyframe) is a sample_data with its own
    ego_pose; each tracked box is an instance with one sample_annotation per keyframe.
    """
    # Imported here: build orchestrates the nuscenes package and may import this module.
    from jadd_dagster.part_merge import expected_frames_per_channel

    keyframes = int(round(scene_length_s * keyframe_hz))
    frames = cameras * expected_frames_per_channel(scene_length_s, keyframe_hz, sweep_hz) + lidars * keyframes
    return {
        "scene": 1,
        "sample": keyframes,
        "sample_data": frames,
        "ego_pose": frames,
        "instance": int(round(boxes_per_keyframe)),
        "sample_annotation": int(round(boxes_per_keyframe * keyframes)),
    }


def default_scenes_per_part(
    cameras: int,
    lidars: int,
    keyframe_hz: int,
    sweep_hz: int,
    boxes_per_keyframe: float = 0.0,
    scene_length_s: float = SCENE_LENGTH_S,
    budget: PartBudget = MEASURED,
) -> int:
    """Scenes per part so that NuScenes() loads one part within budget (by default 4 GiB peak RSS
    and 30 s: half of the 8 GiB and 60 s we accept, a safety margin for other machines); at least
    1 and at most MAX_SCENES (the 4-digit scene names of one dataroot).

    cameras and lidars count channels; keyframe_hz and sweep_hz are the spec's rates (Hz; lidars
    give one frame per keyframe); boxes_per_keyframe is the expected number of 3D boxes per sample
    (0 without auto-labels); scene_length_s is the scene duration (s). The few per-log and static
    records of a part are left out: they are fixed and small.
    """
    records = records_per_scene(cameras, lidars, keyframe_hz, sweep_hz, boxes_per_keyframe, scene_length_s)
    by_memory = (budget.max_bytes - budget.base_bytes) / budget.bytes_for(records)
    by_time = (budget.max_seconds - budget.base_seconds) / budget.seconds_for(records)
    return max(1, min(MAX_SCENES, math.floor(min(by_memory, by_time))))
