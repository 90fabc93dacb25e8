"""Default part size: records per scene, the rule on the measured constants, and one real devkit load."""

import importlib.util
import math
import sys
from pathlib import Path

from jadd_dagster.nuscenes.parts import GIB, MEASURED, default_scenes_per_part, records_per_scene
from jadd_dagster.nuscenes.tables import MAX_SCENES

ROOT = Path(__file__).resolve().parent.parent

# Records per 20 s scene, counted by hand: a camera at 10/2 Hz has 40 keyframes and 39 x 4 sweeps
# (196 frames), at 30/10 Hz 200 keyframes and 199 x 2 sweeps (598); a lidar one frame per keyframe;
# every frame is a sample_data with its own ego_pose; each box track is an instance with one
# sample_annotation per keyframe.
DEFAULT = (1, 0, 2, 10, 0.0)  # 1 camera, 10 Hz sweeps, 2 Hz keyframes, no boxes
HEAVY = (6, 1, 2, 10, 40.0)  # 6 cameras + LIDAR_TOP, 10/2 Hz, 40 boxes per keyframe
EXTREME = (6, 0, 10, 30, 40.0)  # 6 cameras, 30/10 Hz, 40 boxes per keyframe
DEFAULT_RECORDS = {"scene": 1, "sample": 40, "sample_data": 196, "ego_pose": 196, "instance": 0, "sample_annotation": 0}
HEAVY_RECORDS = {
    "scene": 1, "sample": 40, "sample_data": 6 * 196 + 40, "ego_pose": 6 * 196 + 40, "instance": 40, "sample_annotation": 40 * 40
}
EXTREME_RECORDS = {
    "scene": 1, "sample": 200, "sample_data": 6 * 598, "ego_pose": 6 * 598, "instance": 40, "sample_annotation": 40 * 200
}


def scenes_within_budget(plain: int, boxes: int) -> int:
    """The rule written out: scenes that fit half the limits in memory and in time, 1..MAX_SCENES."""
    b = MEASURED
    memory = (b.max_bytes - b.base_bytes) / (plain * b.bytes_per_record + boxes * b.bytes_per_box_record)
    seconds = (b.max_seconds - b.base_seconds) / (plain * b.seconds_per_record + boxes * b.seconds_per_box_record)
    return max(1, min(MAX_SCENES, math.floor(min(memory, seconds))))


def test_records_per_scene_count_every_frame_pose_sample_and_box():
    assert records_per_scene(*DEFAULT) == DEFAULT_RECORDS
    assert records_per_scene(*HEAVY) == HEAVY_RECORDS
    assert records_per_scene(*EXTREME) == EXTREME_RECORDS


def test_parts_are_sized_for_half_the_limits_and_name_their_measurement():
    assert MEASURED.max_bytes == 4 * GIB and MEASURED.max_seconds == 30.0
    assert MEASURED.bytes_per_record > 0 and MEASURED.bytes_per_box_record > 0
    assert MEASURED.seconds_per_record > 0 and MEASURED.seconds_per_box_record > 0
    section = MEASURED.source.split('"')[1]
    assert f"## {section}" in (ROOT / "bench" / "RESULTS.md").read_text()


def test_default_scenes_per_part_of_the_three_measured_shapes():
    assert default_scenes_per_part(*DEFAULT) == scenes_within_budget(433, 0)
    assert default_scenes_per_part(*HEAVY) == scenes_within_budget(2473, 1640)
    assert default_scenes_per_part(*EXTREME) == scenes_within_budget(7377, 8040)
    assert default_scenes_per_part(*EXTREME) < default_scenes_per_part(*HEAVY) < default_scenes_per_part(*DEFAULT)


def test_a_lidar_only_spec_gets_every_scene_name():
    assert default_scenes_per_part(0, 1, 2, 2) == MAX_SCENES


def test_a_spec_too_large_for_the_budget_still_gets_one_scene_per_part():
    assert default_scenes_per_part(60, 6, 30, 30, boxes_per_keyframe=5000.0) == 1


def test_more_channels_rates_and_boxes_never_give_more_scenes():
    by_cameras = [default_scenes_per_part(c, 0, 2, 10) for c in range(1, 7)]
    by_lidars = [default_scenes_per_part(1, n, 2, 10) for n in range(0, 3)]
    by_sweeps = [default_scenes_per_part(6, 1, 2, hz) for hz in (2, 4, 10, 20, 30)]
    by_keyframes = [default_scenes_per_part(6, 1, hz, 30) for hz in (2, 5, 10, 30)]
    by_boxes = [default_scenes_per_part(6, 1, 2, 10, boxes) for boxes in (0, 10, 40, 100)]
    by_length = [default_scenes_per_part(6, 1, 2, 10, 40, seconds) for seconds in (10.0, 20.0, 40.0)]
    for counts in (by_cameras, by_lidars, by_sweeps, by_keyframes, by_boxes, by_length):
        assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_part_load", ROOT / "bench" / "bench_part_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_a_small_part_loaded_by_the_devkit_needs_no_more_memory_than_the_constants_say(tmp_path):
    bench = _bench()
    shape = next(s for s in bench.SHAPES if s.lidars and s.boxes_per_keyframe)  # both kinds of records
    records = bench.write_part(shape, bench.scene_template(shape), 20, tmp_path)
    load = bench.load_in_child(tmp_path)
    used = (load.peak_mib - load.import_mib) * 2**20
    predicted = MEASURED.bytes_for(records)
    assert sum(records.values()) > 80_000
    # The constants are fits over parts up to 40 times larger; a few per cent is measurement noise.
    message = f"the part used {used / 2**20:.0f} MiB above the imports, the constants say {predicted / 2**20:.0f}"
    assert used <= 1.05 * predicted, message
    assert predicted <= 2 * used, message
