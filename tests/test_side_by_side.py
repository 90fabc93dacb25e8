"""A worker's scenes side by side (compute/schedule.py): order, threads per scene, failures, and
the real worker sampling a chunk on two threads into the same bytes as on one."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pandas as pd
import pytest

from jadd_dagster import build
from jadd_dagster.compute.chunks import ChunkManifest
from jadd_dagster.compute.schedule import side_by_side
from jadd_dagster.compute.worker import result_key, run_chunk
from jadd_dagster.layout import STAGE_SAMPLED
from jadd_dagster.logs.reader import read_log
from jadd_dagster.planning import sampling_profile
from jadd_dagster.sampling import THREADS_ENV
from jadd_dagster.scenes import cut_scenes
from jadd_dagster.sim import make_logs
from jadd_dagster.spec import DatasetSpec
from jadd_dagster.storage import LocalStore


def test_items_come_back_in_order_and_the_last_ones_get_the_idle_threads():
    seen = []

    def work(item, threads):
        seen.append((item, threads))
        time.sleep(0.01 * (5 - item))  # later items end first: the order is the items', not the ends'
        return item * 10

    done = [(item, future.result()) for item, future in side_by_side(range(5), work, 2)]
    assert done == [(i, i * 10) for i in range(5)]
    # Five items on two threads: one thread each while at least two are left to start, the last
    # one alone gets both.
    assert sorted(seen) == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2)]


def test_two_threads_run_two_items_at_once_and_never_more():
    meet = threading.Barrier(2, timeout=10)  # both first items must be running at the same time
    running, most = [0], [0]
    lock = threading.Lock()

    def work(item, threads):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if item < 2:
            meet.wait()
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return item

    assert [f.result() for _, f in side_by_side(list(range(6)), work, 2)] == list(range(6))
    assert most[0] == 2


def test_a_failing_item_is_reported_with_it_and_the_others_go_on():
    def work(item, threads):
        if item == 1:
            raise ValueError("broken video")
        return item

    outcomes = list(side_by_side([0, 1, 2], work, 2))
    assert [item for item, _ in outcomes] == [0, 1, 2]
    assert isinstance(outcomes[1][1].exception(), ValueError)
    assert outcomes[0][1].result() == 0 and outcomes[2][1].result() == 2


def test_one_thread_runs_the_items_in_the_calling_thread_one_after_the_other():
    callers = []
    outcomes = list(side_by_side([0, 1], lambda item, threads: callers.append((threading.current_thread(), threads)), 1))
    assert len(outcomes) == 2 and callers == [(threading.current_thread(), 1)] * 2


def test_stopping_early_leaves_the_items_not_yet_started():
    started = []

    def work(item, threads):
        started.append(item)
        if item:
            time.sleep(0.2)
        return item

    outcomes = side_by_side(list(range(8)), work, 2)
    first, _ = next(outcomes)
    outcomes.close()  # cancels what has not started and waits for what is running
    assert first == 0 and set(started) <= {0, 1, 2} and 7 not in started


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("side-by-side")
    (path,) = make_logs(root / "logs", 1, 1.0, seed=11, channels=("CAM_FRONT",), image_size=(96, 54))
    log = read_log(path)
    profile = sampling_profile(DatasetSpec(name="sbs", channels=["CAM_FRONT"], keyframe_hz=2, sweep_hz=10))
    windows = cut_scenes(log.manifest)[0]
    rows = pd.DataFrame([{"scene_id": w.scene_id, "log_id": w.log_id, "scene_index": w.index,
                          "start_time_us": w.start_time_us, "end_time_us": w.end_time_us} for w in windows])
    return root, profile, build.sampling_tasks(rows, profile.key())


def _sampled(root, name, profile, tasks) -> tuple[list[dict], str]:
    """Run the real worker on the chunk into a store of its own (the log copied in as ingest leaves
    it): the result records and a digest of every file the scenes wrote."""
    import shutil

    store_root = root / name
    shutil.copytree(root / "logs", store_root / "logs")
    store = LocalStore(store_root)
    manifest = ChunkManifest("c0", STAGE_SAMPLED, profile.to_json(), store.url, "runs/r/results", tasks)
    assert run_chunk(manifest, store) == {"ok": len(tasks), "failed": 0}
    records = [store.read_json(result_key("runs/r/results", t.scene_id)) for t in tasks]
    digest = hashlib.sha256()
    for path in sorted((store_root / "scenes").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(store_root)).encode())
            digest.update(path.read_bytes())
    return records, digest.hexdigest()


def test_the_worker_samples_scenes_side_by_side_into_the_same_bytes_as_one_thread(three_scenes, monkeypatch):
    import jadd_dagster.sampling as sampling

    root, profile, tasks = three_scenes
    assert len(tasks) == 3
    real = sampling.sample_scene
    calls = []
    meet = threading.Barrier(2, timeout=60)

    def watched(*args, threads=None, **kwargs):
        scene_id = args[6]
        calls.append((scene_id, threads))
        if os.environ[THREADS_ENV] == "2" and scene_id in (tasks[0].scene_id, tasks[1].scene_id):
            meet.wait()  # the first two scenes are being sampled at the same time
        return real(*args, threads=threads, **kwargs)

    monkeypatch.setattr(sampling, "sample_scene", watched)
    monkeypatch.setenv(THREADS_ENV, "1")
    one_records, one_digest = _sampled(root, "one", profile, tasks)
    assert calls == [(t.scene_id, 1) for t in tasks]

    calls.clear()
    monkeypatch.setenv(THREADS_ENV, "2")
    two_records, two_digest = _sampled(root, "two", profile, tasks)
    # Two scenes at once with a thread each; the last one, alone, cut into pieces for both threads.
    assert sorted(calls) == sorted([(tasks[0].scene_id, 1), (tasks[1].scene_id, 1), (tasks[2].scene_id, 2)])
    assert [r["scene_id"] for r in two_records] == [t.scene_id for t in tasks]
    assert [(r["status"], r["frames"]) for r in two_records] == [(r["status"], r["frames"]) for r in one_records]
    assert two_digest == one_digest
