"""One build of a dataset at a time, across processes and machines, held by a Dagster run.

The holder of datasets/<name>/lock/ is the newest numbered object there (`<n>.json`, naming a
run id). A run takes the lock by creating the next number only if it does not exist yet
(store.put_bytes(if_absent=True): a hard link locally, If-None-Match on S3), so of two contenders
exactly one wins. The lock needs no lease or heartbeat: it is free when its holder released it or
when the holder's run is finished in the Dagster instance (failed, cancelled or killed runs
included), so a build that died never blocks the next one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from jadd_dagster.layout import dataset_key
from jadd_dagster.storage import ObjectStore

KEEP = 20  # lock objects kept behind the newest


class DatasetBusy(RuntimeError):
    """Another live run is building this dataset."""


def _prefix(name: str) -> str:
    return f"{dataset_key(name)}/lock"


def _newest(store: ObjectStore, name: str) -> tuple[int, dict | None]:
    numbers = sorted(int(n.removesuffix(".json")) for n in store.list_children(_prefix(name))
                     if n.removesuffix(".json").isdigit())
    if not numbers:
        return 0, None
    try:
        return numbers[-1], store.read_json(f"{_prefix(name)}/{numbers[-1]:010d}.json")
    except (FileNotFoundError, ValueError):
        return numbers[-1], None


def acquire(store: ObjectStore, name: str, run_id: str, run_is_live: Callable[[str], bool]) -> None:
    """Make run_id the holder of the dataset's build lock; DatasetBusy naming the holding run when
    another run that is still going holds it. Taking a lock one already holds is a no-op."""
    while True:
        number, record = _newest(store, name)
        if record and not record.get("released") and record.get("run_id") != run_id and run_is_live(record["run_id"]):
            raise DatasetBusy(
                f"dataset {name!r} is being built by run {record['run_id']} (since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(record.get('since', 0)))}); wait for it to "
                "finish or cancel it, then launch again")
        if record and not record.get("released") and record.get("run_id") == run_id:
            return
        data = json.dumps({"run_id": run_id, "since": time.time(), "released": False}).encode()
        try:
            store.put_bytes(f"{_prefix(name)}/{number + 1:010d}.json", data, if_absent=True)
        except FileExistsError:
            continue  # another contender took this number first: look again
        store.delete_keys([f"{_prefix(name)}/{n:010d}.json" for n in range(max(1, number - KEEP - 5), number - KEEP)])
        return


def holder(store: ObjectStore, name: str) -> str | None:
    """The run id holding the dataset's lock, None when it is free."""
    _, record = _newest(store, name)
    return record["run_id"] if record and not record.get("released") else None


def release(store: ObjectStore, name: str, run_id: str) -> None:
    """Release the lock if run_id holds it."""
    number, record = _newest(store, name)
    if record and record.get("run_id") == run_id and not record.get("released"):
        store.write_json(f"{_prefix(name)}/{number:010d}.json", {**record, "released": True, "released_at": time.time()})
