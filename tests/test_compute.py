import json
import sys

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask, split_into_chunks
from jadd_dagster.compute.local import run_local_chunks
from jadd_dagster.compute.worker import STAGE_SAMPLED, STAGES, result_key, run_chunk
from jadd_dagster.storage import LocalStore


def task(log_id: str, index: int, seconds: float = 20.0) -> SceneTask:
    start = 1_000_000_000 + int(index * seconds * 1e6)
    return SceneTask(f"{log_id}/{index:04d}", log_id, index, start, start + int(seconds * 1e6), f"logs/{log_id}", f"out/{log_id}/{index}")


def test_chunks_keep_one_log_in_time_order_up_to_the_target_duration():
    tasks = [task("b", 1), task("a", 2), task("a", 0), task("a", 1), task("b", 0)]
    chunks = split_into_chunks(tasks, target_chunk_s=40)
    assert [[t.scene_id for t in c] for c in chunks] == [
        ["a/0000", "a/0001"], ["a/0002"], ["b/0000", "b/0001"]]


def test_a_failing_scene_does_not_stop_its_chunk(tmp_path, monkeypatch):
    def fake_stage(store, t, settings, logs):
        if t.scene_index == 1:
            raise ValueError("broken video")
        return 7

    monkeypatch.setitem(STAGES, "test", fake_stage)
    manifest = ChunkManifest("c0", "test", {}, str(tmp_path), "results", [task("a", 0), task("a", 1), task("a", 2)])
    assert run_chunk(manifest) == {"ok": 2, "failed": 1}
    store = LocalStore(tmp_path)
    records = [store.read_json(result_key("results", f"a/{i:04d}")) for i in range(3)]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"] == "ValueError: broken video" and records[0]["frames"] == 7


def test_local_backend_runs_every_manifest_and_reports_exit_codes(tmp_path):
    # An unknown stage makes the worker exit non-zero: the backend must report it, not hang.
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ChunkManifest("g", STAGE_SAMPLED, {}, str(tmp_path), "r", []).to_json()))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ChunkManifest("b", "no-such-stage", {}, str(tmp_path), "r", [task("a", 0)]).to_json()))
    seen = []
    outcomes = run_local_chunks([good, bad], max_workers=2, on_done=lambda o, done, total: seen.append((done, total)))
    codes = {o.manifest.name: o.returncode for o in outcomes}
    assert codes["good.json"] == 0 and codes["bad.json"] != 0
    assert "KeyError" in next(o.stderr_tail for o in outcomes if o.manifest == bad)
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert sys.executable  # the workers ran under this interpreter
