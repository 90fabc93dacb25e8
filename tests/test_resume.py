"""A build that dies never loses finished scenes: what its workers published is taken from the store."""

from __future__ import annotations

import pandas as pd
import pytest

from jadd_dagster import build
from jadd_dagster.compute.dispatch import run_stage
from jadd_dagster.compute.local import run_local_chunks
from jadd_dagster.layout import STAGE_SAMPLED
from jadd_dagster.logs.reader import read_log
from jadd_dagster.planning import sampling_profile
from jadd_dagster.registry import Registry
from jadd_dagster.scenes import cut_scenes
from jadd_dagster.sim import make_logs
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import LocalStore


class OrchestratorKilled(Exception):
    pass


def test_scenes_a_killed_run_finished_are_recovered_not_computed_again(tmp_path):
    logs = make_logs(tmp_path / "store" / "logs", 2, 0.75, seed=5, channels=("CAM_FRONT",), image_size=(64, 36),
                     workers=1)  # logs this small: a pool of renderers costs more than it saves
    rows = pd.DataFrame([
        {"scene_id": w.scene_id, "log_id": w.log_id, "scene_index": w.index,
         "start_time_us": w.start_time_us, "end_time_us": w.end_time_us}
        for path in logs for w in cut_scenes(read_log(path).manifest)[0]])
    spec = DatasetSpec(name="resume", channels=["CAM_FRONT"], keyframe_hz=2, sweep_hz=2)
    profile = sampling_profile(spec)
    store = LocalStore(tmp_path / "store")
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    tasks = build.sampling_tasks(rows, profile.key())
    ran: list[list[str]] = []

    def dies_after_the_first_chunk(s, keys, on_done):
        ran.append(keys)
        run_local_chunks(s.url, keys[:1], max_workers=1)  # one worker finishes, then the run dies
        raise OrchestratorKilled

    with pytest.raises(OrchestratorKilled):
        run_stage(tasks, STAGE_SAMPLED, profile.key(), profile.to_json(), store, registry, dies_after_the_first_chunk,
                  "run-1", target_chunk_s=40.0)
    assert registry.cached_scene_outputs(STAGE_SAMPLED, profile.key(), [t.scene_id for t in tasks]) == {}

    def runs_everything(s, keys, on_done):
        ran.append(keys)
        return run_local_chunks(s.url, keys, max_workers=2)

    result = run_stage(tasks, STAGE_SAMPLED, profile.key(), profile.to_json(), store, registry, runs_everything,
                       "run-2", target_chunk_s=40.0)
    # The first chunk (both scenes of the first log) is recovered; only the other log is computed.
    assert sorted(o.scene_id for o in result.recovered) == [f"{logs[0].name}/0000", f"{logs[0].name}/0001"]
    assert sorted(o.scene_id for o in result.computed) == [f"{logs[1].name}/0000", f"{logs[1].name}/0001"]
    assert all(o.frames == 40 for o in result.recovered) and len(ran[1]) == 1
    assert sorted(registry.cached_scene_outputs(STAGE_SAMPLED, profile.key(), [t.scene_id for t in tasks])) == sorted(
        t.scene_id for t in tasks)
