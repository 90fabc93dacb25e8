import dataclasses
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
    return SceneTask(f"{log_id}/{index:04d}", log_id, index, start, start + int(seconds * 1e6), f"scenes/test/{log_id}/{index}")


def test_chunks_keep_one_log_in_time_order_up_to_the_target_duration():
    tasks = [task("b", 1), task("a", 2), task("a", 0), task("a", 1), task("b", 0)]
    chunks = split_into_chunks(tasks, target_chunk_s=40)
    assert [[t.scene_id for t in c] for c in chunks] == [
        ["a/0000", "a/0001"], ["a/0002"], ["b/0000", "b/0001"]]


def test_a_failing_scene_does_not_stop_its_chunk(tmp_path, monkeypatch):
    def fake_stage(store, t, settings, logs, threads=1):
        if t.scene_index == 1:
            raise ValueError("broken video")
        return 7

    monkeypatch.setitem(STAGES, "test", fake_stage)
    manifest = ChunkManifest("c0", "test", {}, str(tmp_path), "runs/r/results", [task("a", 0), task("a", 1), task("a", 2)])
    assert run_chunk(manifest, LocalStore(tmp_path)) == {"ok": 2, "failed": 1}
    store = LocalStore(tmp_path)
    records = [store.read_json(result_key("runs/r/results", f"a/{i:04d}")) for i in range(3)]
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"] == "ValueError: broken video" and records[0]["frames"] == 7


def test_local_backend_runs_every_manifest_and_reports_exit_codes(tmp_path):
    # An unknown stage makes the worker exit non-zero: the backend must report it, not hang.
    store = LocalStore(tmp_path)
    store.write_json("good.json", ChunkManifest("g", STAGE_SAMPLED, {}, store.url, "runs/r", []).to_json())
    store.write_json("bad.json", ChunkManifest("b", "no-such-stage", {}, store.url, "runs/r", [task("a", 0)]).to_json())
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
    store.write_json("m.json", ChunkManifest("m", STAGE_SAMPLED, {}, store.url, "runs/r", []).to_json())
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
    missing = dataclasses.replace(task("missing", 0), output_key="scenes/sampled/p/missing/0000")
    store.write_json("c1.json", ChunkManifest("c1", STAGE_SAMPLED, {}, store.url, "runs/r/results", [missing]).to_json())
    store.write_json("list.json", {"manifests": ["c0.json", "c1.json"]})
    monkeypatch.setenv(ARRAY_INDEX_ENV, "1")
    assert worker_main(["--store", store.url, "--manifest-list", "list.json"]) == 0
    record = store.read_json(result_key("runs/r/results", "missing/0000"))
    assert record["status"] == "failed" and record["frames"] == 0


def test_the_worker_writes_only_to_the_store_of_its_own_flags(tmp_path, monkeypatch):
    def fake_stage(store, t, settings, logs, threads=1):
        store.put_bytes(f"{t.output_key}/out.txt", b"x")
        return 1

    monkeypatch.setitem(STAGES, "test", fake_stage)
    mine, theirs = LocalStore(tmp_path / "mine"), LocalStore(tmp_path / "theirs")
    # The manifest names another store: the worker ignores it.
    mine.write_json("m.json", ChunkManifest("m", "test", {}, theirs.url, "runs/r/results", [task("a", 0)]).to_json())
    assert worker_main(["--store", mine.url, "--manifest", "m.json"]) == 0
    assert mine.exists("scenes/test/a/0/out.txt") and mine.exists(result_key("runs/r/results", "a/0000"))
    assert not (tmp_path / "theirs").exists()


@pytest.mark.parametrize("field, key", [
    ("output_key", "datasets/other/nuscenes"),  # another dataset's published folder
    ("output_key", "scenes/test/../../datasets/x"),
    ("input_key", "logs/secret"),
    ("results_key", "datasets/other"),
])
def test_a_manifest_that_writes_outside_its_stage_is_refused_before_any_write(tmp_path, monkeypatch, field, key):
    writes = []
    monkeypatch.setitem(STAGES, "test", lambda store, t, settings, logs, threads=1: writes.append(t) or 1)
    good = task("a", 0)
    scene = dataclasses.replace(good, **{field: key}) if field != "results_key" else good
    manifest = ChunkManifest("m", "test", {}, str(tmp_path), key if field == "results_key" else "runs/r/results", [scene])
    with pytest.raises(ValueError, match="refused manifest"):
        run_chunk(manifest, LocalStore(tmp_path))
    assert writes == [] and list(tmp_path.iterdir()) == []


def test_a_merge_manifest_may_write_only_a_part_of_its_own_dataset():
    from jadd_dagster.compute.worker import manifest_problems

    settings = {"name": "city", "version": "v1.0-city-part0001-0123abcd", "profile_key": "0123456789ab"}
    ok = ChunkManifest("p", "merged", settings, "", "runs/r/merged", [
        dataclasses.replace(task("a", 0), input_key="scenes/sampled/0123456789ab/a/0000", output_key="")])
    assert manifest_problems(ok) == []
    for bad in ({"version": "v1.0-other-part0001-0123abcd"}, {"version": "../../datasets"}, {"profile_key": "../x"}):
        assert manifest_problems(dataclasses.replace(ok, settings={**settings, **bad}))


def test_manifests_are_written_a_thousand_to_an_object_and_read_back_by_index(tmp_path):
    from jadd_dagster.compute.dispatch import write_manifests
    from jadd_dagster.compute.worker import read_manifest

    store = LocalStore(tmp_path)
    manifests = [ChunkManifest(f"c{i}", "test", {}, store.url, "runs/r/results", [task("a", i)]) for i in range(2500)]
    keys = write_manifests(store, "runs/r/test/chunks", manifests)
    assert len(keys) == 2500 and len(list((tmp_path / "runs/r/test/chunks").iterdir())) == 3
    assert keys[1001] == "runs/r/test/chunks/00001.json#1"
    assert read_manifest(store, keys[1001]) == manifests[1001]
    with pytest.raises(IndexError):
        read_manifest(store, "runs/r/test/chunks/00002.json#500")


class CountingStore(LocalStore):
    """A local store that counts reads and existence checks per key prefix."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []
        self.checks: list[str] = []

    def get_bytes(self, key):
        self.reads.append(key)
        return super().get_bytes(key)

    def exists(self, key):
        self.checks.append(key)
        return super().exists(key)


def test_run_stage_reads_one_results_object_per_finished_chunk_and_each_scene_of_a_cut_short_one(tmp_path, monkeypatch):
    from jadd_dagster.compute.dispatch import run_stage
    from jadd_dagster.compute.local import ChunkOutcome
    from jadd_dagster.compute.worker import chunk_result_key, read_manifest
    from jadd_dagster.registry import Registry

    def fake_stage(store, t, settings, logs, threads=1):
        if t.scene_index == 4:
            raise ValueError("broken video")
        return 10 + t.scene_index

    monkeypatch.setitem(STAGES, "test", fake_stage)
    store = CountingStore(tmp_path)
    tasks = [task("a", i) for i in range(6)] + [task("b", i) for i in range(3)]

    def in_process(s, keys, on_done):
        outcomes = []
        for n, key in enumerate(keys, 1):
            manifest = read_manifest(s, key)
            run_chunk(manifest, s)
            if manifest.chunk_id == "test-00002":  # its worker dies after its scenes, before the chunk's file
                s.delete_keys([chunk_result_key(manifest.results_key, manifest.chunk_id)])
            outcomes.append(ChunkOutcome(key, 0, "", 0.1))
            on_done(outcomes[-1], n, len(keys))
        store.reads.clear(), store.checks.clear()
        return outcomes

    result = run_stage(tasks, "test", "p", {}, store, Registry(f"sqlite:///{tmp_path}/r.db"), in_process, "run-1",
                       target_chunk_s=40.0)
    assert result.chunks == 5 and sorted(o.scene_id for o in result.computed) == sorted(
        t.scene_id for t in tasks if t.scene_id != "a/0004")
    assert result.failed == {"a/0004": "ValueError: broken video"}
    assert {o.scene_id: o.frames for o in result.computed}["b/0002"] == 12
    # Four finished chunks: one read each; the cut-short chunk (a/0004, a/0005): a check and a read per scene.
    assert sorted(k.rpartition("/")[2] for k in store.reads) == [
        "a__0004.json", "a__0005.json", "test-00000.json", "test-00001.json", "test-00003.json", "test-00004.json"]
    assert sorted(k.rpartition("/")[2] for k in store.checks) == ["a__0004.json", "a__0005.json"]


def test_chunk_progress_reports_failures_the_last_chunk_and_otherwise_at_most_one_line_per_interval(monkeypatch):
    from jadd_dagster.compute import dispatch
    from jadd_dagster.compute.local import ChunkOutcome

    clock = [0.0]
    monkeypatch.setattr(dispatch.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    progress = dispatch.ChunkProgress("sampled", "chunk ", lines.append)
    for done in range(1, 1001):
        clock[0] += 0.1  # a chunk ends every 0.1 s: 100 s in all
        progress(ChunkOutcome(f"k{done}", 1 if done == 500 else 0, "", 2.0), done, 1000)
    assert sum("exit code 1" in line for line in lines) == 1
    assert lines[-1] == "sampled: chunk 1000/1000 finished, 1 failed so far (last 2.0 s)"
    assert 10 <= len(lines) <= 12  # every 10 s, the failure and the last one, not 1,000


def test_local_workers_share_the_cpus_among_them_unless_the_user_says_otherwise(tmp_path, monkeypatch):
    from jadd_dagster.compute import local
    from jadd_dagster.sampling.decode import THREADS_ENV, available_cpus

    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert local.worker_threads(1) == {THREADS_ENV: str(available_cpus())}
    assert local.worker_threads(available_cpus() * 4) == {THREADS_ENV: "1"}
    # What the pool gives each worker process it starts:
    store = LocalStore(tmp_path)
    store.write_json("m.json", ChunkManifest("g", STAGE_SAMPLED, {}, store.url, "runs/r", []).to_json())
    seen = []
    real_popen = local.subprocess.Popen
    monkeypatch.setattr(local.subprocess, "Popen", lambda *a, env, **k: seen.append(env) or real_popen(*a, env=env, **k))
    local.run_local_chunks(store.url, ["m.json"] * 2, max_workers=2 * available_cpus())
    assert [env[THREADS_ENV] for env in seen] == [str(max(1, available_cpus() // 2))] * 2  # two chunks: two workers
    local.run_local_chunks(store.url, ["m.json"] * 2 * available_cpus(), max_workers=2 * available_cpus())
    assert {env[THREADS_ENV] for env in seen[2:]} == {"1"}  # more workers than CPUs
    seen.clear()
    local.run_local_chunks(store.url, ["m.json"])  # one chunk: its worker gets every CPU
    assert [env[THREADS_ENV] for env in seen] == [str(available_cpus())]
    monkeypatch.setenv(THREADS_ENV, "3")
    assert local.worker_threads(64) == {}
    local.run_local_chunks(store.url, ["m.json"], max_workers=64)
    assert seen[-1][THREADS_ENV] == "3"
