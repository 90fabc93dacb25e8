"""Two builds at once: one dataset is built by one run at a time, and the registry's schema
creation survives a race."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from jadd_dagster import dataset_lock
from jadd_dagster.storage import LocalStore


def test_a_second_live_run_is_refused_naming_the_run_that_holds_the_dataset(tmp_path):
    store = LocalStore(tmp_path)
    live = {"run-a"}
    dataset_lock.acquire(store, "city", "run-a", live.__contains__)
    dataset_lock.acquire(store, "city", "run-a", live.__contains__)  # the holder's later stages
    with pytest.raises(dataset_lock.DatasetBusy, match="being built by run run-a"):
        dataset_lock.acquire(store, "city", "run-b", live.__contains__)
    assert dataset_lock.holder(store, "city") == "run-a"
    dataset_lock.acquire(store, "other", "run-b", live.__contains__)  # another dataset is free


def test_a_finished_or_released_holder_never_blocks_the_next_build(tmp_path):
    store = LocalStore(tmp_path)
    dataset_lock.acquire(store, "city", "run-a", lambda run: True)
    dataset_lock.acquire(store, "city", "run-b", lambda run: False)  # run-a died: its run is finished
    assert dataset_lock.holder(store, "city") == "run-b"
    dataset_lock.release(store, "city", "run-b")
    assert dataset_lock.holder(store, "city") is None
    dataset_lock.acquire(store, "city", "run-c", lambda run: True)
    assert dataset_lock.holder(store, "city") == "run-c"


def test_of_runs_racing_for_a_free_dataset_exactly_one_wins(tmp_path):
    store = LocalStore(tmp_path)
    barrier = threading.Barrier(8)
    winners, losers = [], []

    def contend(run_id: str) -> None:
        barrier.wait()
        try:
            dataset_lock.acquire(store, "city", run_id, lambda run: True)
            winners.append(run_id)
        except dataset_lock.DatasetBusy:
            losers.append(run_id)

    threads = [threading.Thread(target=contend, args=(f"run-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 7 and dataset_lock.holder(store, "city") == winners[0]


def _open_registry(url: str, barrier) -> None:
    from jadd_dagster.registry import Registry

    barrier.wait()
    Registry(url).list_datasets()


def test_builds_starting_at_once_create_the_registry_without_failing(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(6)
    processes = [context.Process(target=_open_registry, args=(url, barrier)) for _ in range(6)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0] * 6
