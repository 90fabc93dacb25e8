import sys

import pytest

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask, split_into_chunks
from jadd_dagster.compute.local import run_local_chunks
from jadd_dagster.compute.worker import (
    ARRAY_INDEX_ENV,
    STAGE_SAMPLED,
    STAGES,
    manifest_key_from_list,
    result_key,
    run_chunk,
)
from jadd_dagster.compute.worker import main as worker_main
from jadd_dagster.storage import LocalStore


def task(log_id: str, index: int, seconds: float = 20.0) -> SceneTask:
    start = 1_000_000_000 + int(index * seconds * 1e6)
    return SceneTask(f"{log_id}/{index:04d}", log_id, index, start, start + int(seconds * 1e6), f"out/{log_id}/{index}")


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
    store = LocalStore(tmp_path)
    store.write_json("good.json", ChunkManifest("g", STAGE_SAMPLED, {}, store.url, "r", []).to_json())
    store.write_json("bad.json", ChunkManifest("b", "no-such-stage", {}, store.url, "r", [task("a", 0)]).to_json())
    seen = []
    outcomes = run_local_chunks(store.url, ["good.json", "bad.json"], max_workers=2,
                                on_done=lambda o, done, total: seen.append((done, total)))
    codes = {o.manifest_key: o.returncode for o in outcomes}
    assert codes["good.json"] == 0 and codes["bad.json"] != 0
    assert "KeyError" in next(o.stderr_tail for o in outcomes if o.manifest_key == "bad.json")
    assert sorted(seen) == [(1, 2), (2, 2)]
    assert sys.executable  # the workers ran under this interpreter


def test_local_backend_gives_each_worker_its_own_environment(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.write_json("m.json", ChunkManifest("m", STAGE_SAMPLED, {}, store.url, "r", []).to_json())
    hooks = tmp_path / "hooks"  # sitecustomize runs at interpreter start: it records the worker's variable
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os, pathlib\n"
        "mark = os.environ.get('JADD_TEST_MARK')\n"
        f"if mark: pathlib.Path({str(tmp_path)!r}, 'mark-' + mark).touch()\n")
    envs = [{"JADD_TEST_MARK": str(i), "PYTHONPATH": str(hooks)} for i in range(2)]
    outcomes = run_local_chunks(store.url, ["m.json", "m.json"], max_workers=2, envs=envs)
    assert [o.returncode for o in outcomes] == [0, 0]
    assert sorted(p.name for p in tmp_path.glob("mark-*")) == ["mark-0", "mark-1"]


def test_an_array_child_takes_the_manifest_at_its_index(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.write_json("list.json", {"manifests": ["m0.json", "m1.json", "m2.json"]})
    monkeypatch.setenv(ARRAY_INDEX_ENV, "2")
    assert manifest_key_from_list(store, "list.json") == "m2.json"
    monkeypatch.delenv(ARRAY_INDEX_ENV)
    assert manifest_key_from_list(store, "list.json") == "m0.json"  # a plain (non-array) job
    with pytest.raises(IndexError, match="outside the manifest list"):
        manifest_key_from_list(store, "list.json", index=3)


def test_the_worker_runs_a_chunk_from_a_manifest_list_without_pipes(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.write_json("c1.json", ChunkManifest("c1", STAGE_SAMPLED, {}, store.url, "results", [task("missing", 0)]).to_json())
    store.write_json("list.json", {"manifests": ["c0.json", "c1.json"]})
    monkeypatch.setenv(ARRAY_INDEX_ENV, "1")
    assert worker_main(["--store", store.url, "--manifest-list", "list.json"]) == 0
    record = store.read_json(result_key("results", "missing/0000"))
    assert record["status"] == "failed" and record["frames"] == 0
