"""The scale benchmark's smoke run (bench/bench_scale.py): 200 scenes through the real Dagster graph
on a SQLite instance, with the bench's simulated sampling workers and real merge workers, then a
rebuild with nothing new and one after 1 % new scenes. The bench's own invariants must hold at any
size: the index lists every scene, no frame is copied, unchanged work is not redone."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # by name, so the bench's spawned workers can import it too

import bench_scale  # noqa: E402

SCENES = 200  # two logs: 180 + 20 scenes; +1 % adds a third log of 2 scenes


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> bench_scale.SizeResult:
    root = tmp_path_factory.mktemp("scale")
    with bench_scale.services("sqlite", root) as databases:
        overrides, registry_url = databases("smoke")
        with bench_scale.open_instance(root / "dagster", overrides) as instance:
            return bench_scale.run_size(SCENES, root / "smoke", instance, registry_url, include_can_bus=False,
                                        workers=2, rebuilds=True)


def test_the_index_lists_every_scene_of_the_catalog(smoke):
    assert smoke.index_scenes == smoke.catalog_scenes == smoke.table_scenes == SCENES
    assert smoke.index_scenes_after == smoke.catalog_scenes_after == SCENES + 2


def test_every_scene_is_sampled_once_by_the_simulated_workers(smoke):
    frames = smoke.row("full", "frames")
    assert (frames.computed, frames.cached) == (SCENES, 0)
    assert smoke.frames_before_merge.frames == SCENES * 40  # 20 s at 2 Hz, one camera


def test_no_frame_is_copied(smoke):
    before, after = smoke.frames_before_merge, smoke.frames_after_merge
    assert smoke.copies == 0
    assert (after.frames, after.frame_inodes) == (before.frames, before.frame_inodes)
    assert after.jpgs_in_parts == 0


def test_a_rebuild_with_nothing_new_computes_no_scene_and_merges_no_part(smoke):
    frames, merge = smoke.row("nothing new", "frames"), smoke.row("nothing new", "merge")
    assert (frames.computed, frames.cached) == (0, SCENES)
    assert merge.parts_merged == 0
    assert frames.worker_files == merge.worker_files == 0
    assert "catalog" not in {r.stage for r in smoke.rows if r.run == "nothing new"}


def test_a_rebuild_after_new_scenes_samples_only_them_and_merges_only_their_part(smoke):
    frames, merge = smoke.row("+1 % scenes", "frames"), smoke.row("+1 % scenes", "merge")
    assert (frames.computed, frames.cached) == (2, SCENES)
    assert merge.parts_merged == 1


def test_each_stage_is_measured_on_its_own(smoke):
    stages = [r.stage for r in smoke.rows if r.run == "full"]
    assert stages == [label for label, _ in bench_scale.STAGES]
    assert all(r.wall_s > 0 and r.peak_mib > 0 for r in smoke.rows)
    assert smoke.row("full", "frames").bookkeeping_s > 0  # record_materializations was timed
    assert smoke.row("full", "merge").merge_peak_mib > 0  # the real merge worker was seen


def test_the_tables_say_the_workers_are_simulated(smoke, capsys):
    bench_scale.print_size(smoke)
    bench_scale.print_findings(smoke, workers=2)
    out = capsys.readouterr().out
    assert f"{SCENES:,d} scenes — SIMULATED WORKERS" in out
    assert "inode checksum unchanged" in out
