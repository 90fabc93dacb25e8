"""The merge's frame-count check (part_merge.frame_count_problems) for cameras at rates of their own.

A dataset whose sweep rate is above a camera's rate gets that camera's frames at the camera's
rate, each frame used once (sampling/frames.py select_frames); the check expects that count, and
still reports a scene that really is short. The drive is the ROS 2 MCAP drive of
tests/mcap_drives.py with its JPEG camera at 12 Hz and its H.264 camera at 30 Hz, ingested and
sampled by the worker as a build does.
"""

from dataclasses import replace
from pathlib import Path

import pytest

import mcap_drives as drives
from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.compute.worker import run_chunk
from jadd_dagster.ingest import ingest_mcap, load_topic_map
from jadd_dagster.layout import STAGE_SAMPLED, scene_output_key
from jadd_dagster.part_merge import expected_frames_per_channel, frame_count_problems
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.scene_record import SceneRecord
from jadd_dagster.storage import LocalStore

RATES = {"CAM_FRONT": 12, "CAM_FRONT_LEFT": 30}
SCENE_S = 2.0
TOPIC_MAPS = Path(__file__).resolve().parents[1] / "examples" / "topic-maps"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A local store holding the 4 s drive, its cameras at 12 and 30 Hz, as an ingested log."""
    root = tmp_path_factory.mktemp("rates")
    recording = drives.write_drive(root / "mcap", "ros2", [(0, 4)], rates=RATES)
    ingest_mcap(recording.files, root / "store" / "logs", load_topic_map(TOPIC_MAPS / "ros2.yaml"), dbc=drives.DRIVE_DBC)
    return LocalStore(root / "store")


def _sampled(store: LocalStore, keyframe_hz: int, sweep_hz: int) -> SceneRecord:
    """One SCENE_S scene of the drive sampled by the worker (run_chunk), as a build samples it."""
    profile = SamplingProfile(keyframe_hz=keyframe_hz, sweep_hz=sweep_hz, undistort=False, channels=tuple(RATES))
    (log_id,) = store.list_children("logs")
    start = drives.START_S * 1_000_000 + 1_020_000  # keyframes 20 ms after a 12 Hz frame
    output = scene_output_key(STAGE_SAMPLED, profile.key(), log_id, 0)
    task = SceneTask(f"{log_id}/0000", log_id, 0, start, start + round(SCENE_S * 1e6), output)
    manifest = ChunkManifest(f"c-{sweep_hz}", STAGE_SAMPLED, profile.to_json(), "", f"runs/r{sweep_hz}", [task])
    assert run_chunk(manifest, store) == {"ok": 1, "failed": 0}
    return SceneRecord.load(store.local_path(output))


@pytest.mark.parametrize("sweep_hz", [10, 30])
def test_a_camera_slower_than_the_sweeps_passes_with_its_own_rates_frames(store, sweep_hz):
    record = _sampled(store, 2, sweep_hz)
    assert record.camera_rates_hz == RATES
    counts = {c: sum(f.channel == c for f in record.frames) for c in RATES}
    # 4 keyframes 0.5 s apart; at 30 Hz sweeps the 12 Hz camera gives each of its frames between the
    # first and the last keyframe once: 1.5 s × 12 Hz + 1, not 1.5 s × 30 Hz + 1.
    assert counts["CAM_FRONT_LEFT"] == int(1.5 * sweep_hz) + 1
    assert counts["CAM_FRONT"] == int(1.5 * min(sweep_hz, 12)) + 1
    assert frame_count_problems([record], SCENE_S) == []


def test_a_scene_short_of_frames_of_the_slow_camera_is_reported(store):
    record = _sampled(store, 2, 30)
    front = [f for f in record.frames if f.channel == "CAM_FRONT"]
    short = replace(record, frames=[f for f in record.frames if f is not front[len(front) // 2]])
    assert frame_count_problems([short], SCENE_S) == [
        f"{record.scene_id} CAM_FRONT: {len(front) - 1} frames, expected {len(front)} (camera at 12 Hz)"]
    truncated = replace(record, frames=[f for f in record.frames if f.channel != "CAM_FRONT" or f.is_key_frame])
    assert len(frame_count_problems([truncated], SCENE_S)) == 1


def test_a_record_without_camera_rates_is_checked_at_the_sweep_rate(store):
    """Records written before cameras had rates of their own: every camera at sweep_hz, as before."""
    record = replace(_sampled(store, 2, 30), camera_rates_hz={})
    assert frame_count_problems([record], SCENE_S) == [
        f"{record.scene_id} CAM_FRONT: {sum(f.channel == 'CAM_FRONT' for f in record.frames)} frames, expected "
        f"{4 + 3 * 14}"]


@pytest.mark.parametrize("keyframe_hz, sweep_hz", [(2, 10), (2, 30), (1, 10), (2, 2), (2, 20)])
def test_at_the_sweep_rate_the_expectation_is_keyframes_plus_the_sweeps_between(keyframe_hz, sweep_hz):
    keyframes = int(20 * keyframe_hz)
    assert expected_frames_per_channel(20.0, keyframe_hz, sweep_hz) == keyframes + (keyframes - 1) * (sweep_hz // keyframe_hz - 1)
    assert expected_frames_per_channel(20.0, keyframe_hz, sweep_hz, source_hz=30) == expected_frames_per_channel(
        20.0, keyframe_hz, sweep_hz)


@pytest.mark.e2e
def test_a_2_30_hz_build_over_a_12_hz_camera_passes_the_frame_count_check(tmp_path_factory, tmp_path):
    """`jadd build` of a 20 s scene at 2 Hz keyframes and 30 Hz sweeps over the drive with its JPEG
    camera at 12 Hz: the merge's frame_counts check (the frame_counts_match_rates asset check) is
    clean, and the devkit finds the 12 Hz camera's own frames."""
    import json

    import yaml
    from nuscenes.nuscenes import NuScenes

    from jadd_dagster.cli import main as jadd

    root = tmp_path_factory.mktemp("rates-e2e")
    recording = drives.write_drive(root / "mcap", "ros2", [(0, 21)], rates=RATES)
    ingest_mcap(recording.files, root / "logs", load_topic_map(TOPIC_MAPS / "ros2.yaml"), dbc=drives.DRIVE_DBC)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "rates-30", "channels": list(RATES), "keyframe_hz": 2, "sweep_hz": 30,
                                    "undistort": False}))
    assert jadd(["build", "--spec", str(spec), "--logs", str(root / "logs"), "--workdir", str(tmp_path / "work")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert not any(summary["check_problems"].values()), summary["check_problems"]
    nusc = NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False)
    counts = {c: sum(r["channel"] == c for r in nusc.sample_data) for c in RATES}
    # 40 keyframes over 19.5 s: a 30 Hz camera's 19.5 × 30 + 1 frames, the 12 Hz one's 19.5 × 12 + 1.
    assert counts == {"CAM_FRONT": 19.5 * 12 + 1, "CAM_FRONT_LEFT": 19.5 * 30 + 1}
    assert {r["timestamp"] for r in nusc.sample_data if r["channel"] == "CAM_FRONT"} <= set(recording.camera_stamps["CAM_FRONT"])
    # The estimate counted the same frames, and priced the kept JPEG camera's as copies.
    assert summary["estimate"]["work"]["frames"] == sum(counts.values())
    assert summary["estimate"]["work"]["copied_frames"] == counts["CAM_FRONT"]


@pytest.mark.parametrize("source_hz", [10, 12, 15, 25, 30, 60])
def test_a_camera_at_the_sweep_rate_or_faster_gives_the_same_count_at_any_phase(source_hz):
    """expected_frames_per_channel skips the phase for such cameras (one cached count a rate, not
    one selection per scene and camera): select_frames itself gives the same count at every phase."""
    from jadd_dagster.part_merge import _selected_count

    for keyframe_hz, sweep_hz in ((2, 2), (2, 10), (5, 10), (10, 10), (2, 6)):
        if source_hz < sweep_hz:
            continue
        expected = expected_frames_per_channel(20.0, keyframe_hz, sweep_hz, source_hz, 12_345)
        period_us = int(1e6 / source_hz)
        for phase_us in range(0, period_us, max(1, period_us // 7)):
            assert _selected_count(20_000_000, keyframe_hz, sweep_hz, float(source_hz), phase_us) == expected
