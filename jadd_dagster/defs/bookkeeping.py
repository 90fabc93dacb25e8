"""Per-scene bookkeeping: many materializations of another asset's partitions, from inside one step.

A dataset run computes thousands of scenes and records one `sampled_frames` materialization per
new scene, so the UI and the partition status show them as done. Dagster writes events logged with
`context.log_event` one at a time (new database connections and commits for each: 10–15 ms on
SQLite, 20–40 ms on PostgreSQL, i.e. 20 minutes to an hour per 100,000 scenes), and it batches only the
materializations of the step's *own* output partitions. `DAGSTER_EVENT_BATCH_SIZE` does not
apply to `log_event`, and `report_runless_asset_event` is one event at a time as well.

`record_materializations` therefore logs the first materialization with `context.log_event` and
writes the rest as copies of that stored event (same run, job, step and asset; its own partition,
metadata, tags and timestamp) through the instance's event log storage, `batch_size` events per
batch. On PostgreSQL a batch is `store_event_batch`, one multi-row INSERT (0.6–1.1 ms per scene,
1–2 minutes per 100,000). Dagster's default SQLite storage would store a batch event by event, each
with new connections and commits in the run's database and in the index database (ten fsyncs,
12–15 ms per scene on a quiet disk, more on a busy one); `_store_sqlite_batch` writes the batch in
one transaction per database instead (1.1–3.6 ms per scene, 3–6 minutes per 100,000, about 20×
faster in the same run). No environment variable is needed
(bench/RESULTS.md, "Per-scene bookkeeping"). Events written this way reach the instance (UI,
partition status, sensors) but not the in-process event stream, e.g. not
`ExecuteInProcessResult.all_events`.

`bookkeeping_advice` says before a build when recording its scenes on a SQLite instance would take
long enough that the PostgreSQL instance is the right choice.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dagster as dg

# Dagster tags each materialization of a multi-partitioned asset with one tag per dimension (its
# own output materializations carry them; per-dimension queries and the uncached partition status
# read them); log_event does not add them by itself.
DIMENSION_TAG_PREFIX = "dagster/partition/"

# Dagster's default event log storage: one SQLite database per run plus an index database.
SQLITE_STORAGE = "SqliteEventLogStorage"
# Rows per INSERT statement on SQLite: 7 columns a row stays below SQLite's 32,766 bound variables.
SQLITE_ROWS_PER_INSERT = 1000
# The storage's methods _store_sqlite_batch uses; without any of them it uses store_event_batch.
SQLITE_STORAGE_METHODS = (
    "prepare_insert_event_batch", "run_connection", "index_transaction", "_store_asset_event_tags", "_store_asset_event"
)
# Seconds to record one scene, by event log storage class (bench/RESULTS.md, "Per-scene
# bookkeeping", near the top of what it measured on a busy machine): the default SQLite storage
# with `_store_sqlite_batch` (1.1–3.6 ms), and any other SQLite-backed storage, which stores the
# events one at a time (ConsolidatedSqliteEventLogStorage: 25–68 ms). PostgreSQL: 0.6–1.1 ms.
SQLITE_SECONDS_PER_SCENE = 0.003
OTHER_SQLITE_SECONDS_PER_SCENE = 0.025
# Above this much bookkeeping in one run, bookkeeping_advice recommends the PostgreSQL instance:
# 100,000 scenes on the default SQLite storage.
ADVICE_LIMIT_S = 300.0


def asset_materialization(
    asset_key: dg.AssetKey, partition_key: str, metadata: Mapping[str, Any]
) -> dg.AssetMaterialization:
    """The materialization of one partition, with the dimension tags of a multi-partition key."""
    tags = None
    if isinstance(partition_key, dg.MultiPartitionKey):
        tags = {f"{DIMENSION_TAG_PREFIX}{dim}": key for dim, key in partition_key.keys_by_dimension.items()}
    return dg.AssetMaterialization(asset_key=asset_key, partition=partition_key, metadata=metadata, tags=tags)


def record_materializations(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    asset_key: dg.AssetKey,
    items: Iterable[tuple[str, Mapping[str, Any]]],
    batch_size: int = 1000,
) -> int:
    """Record one materialization of asset_key per (partition key, metadata) item; returns the count.

    The events belong to the current run and step, like those of `context.log_event`. Pass a
    `dg.MultiPartitionKey` for a multi-partitioned asset so that each event carries the dimension
    tags Dagster's partition status reads. Items are consumed lazily, batch_size at a time.
    Nothing has to be configured: no environment variable, no dagster.yaml setting.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    items = iter(items)
    first = next(items, None)
    if first is None:
        return 0
    first_event = asset_materialization(asset_key, *first)
    context.log_event(first_event)
    template = _stored_entry(context, asset_key, first_event.partition)
    storage = context.instance.event_log_storage
    count = 1
    for chunk in _chunks(items, batch_size):
        materializations = [asset_materialization(asset_key, key, metadata) for key, metadata in chunk]
        if template is None:  # the storage did not give the event back: one at a time, as Dagster does
            for materialization in materializations:
                context.log_event(materialization)
        else:
            _store_events(storage, [_copy_of(template, m) for m in materializations])
        count += len(materializations)
    return count


def bookkeeping_advice(
    instance: dg.DagsterInstance, scenes: int, limit_s: float = ADVICE_LIMIT_S
) -> str | None:
    """A one-line warning when recording `scenes` materializations in one run on this instance's
    SQLite event log would take longer than limit_s seconds; None on PostgreSQL or below the limit.
    """
    storage_class = type(instance.event_log_storage).__name__
    if storage_class == SQLITE_STORAGE:
        per_scene = SQLITE_SECONDS_PER_SCENE
    elif "sqlite" in storage_class.lower():
        per_scene = OTHER_SQLITE_SECONDS_PER_SCENE
    else:
        return None
    if scenes * per_scene <= limit_s:
        return None
    most = round(limit_s / per_scene)
    return (
        f"recording {scenes:,d} scenes in this instance's SQLite event log ({storage_class}) takes "
        f"about {scenes * per_scene / 60:.0f} min ({1000 * per_scene:.1f} ms a scene); above {most:,d} "
        f"scenes per build use the PostgreSQL instance (README \"Deploy on AWS\", dagster-postgres)"
    )


def _stored_entry(
    context: dg.OpExecutionContext, asset_key: dg.AssetKey, partition: str | None
) -> dg.EventLogEntry | None:
    """The event log entry context.log_event just stored for this partition, as read back."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None), limit=20
    ).records
    for record in records:  # newest first; another run may have written the same partition since
        if record.run_id == context.run.run_id:
            return record.event_log_entry
    return None


def _copy_of(template: dg.EventLogEntry, materialization: dg.AssetMaterialization) -> dg.EventLogEntry:
    event = template.get_dagster_event()
    data = event.event_specific_data._replace(materialization=materialization)
    return template._replace(timestamp=time.time(), dagster_event=event._replace(event_specific_data=data))


def _store_events(storage: Any, events: list[dg.EventLogEntry]) -> None:
    """Store materializations of one run: in one transaction per database on Dagster's default
    SQLite storage, through the storage's own store_event_batch everywhere else."""
    if (
        type(storage).__name__ == SQLITE_STORAGE
        and sqlite3.sqlite_version_info >= (3, 35)  # INSERT ... RETURNING
        and all(hasattr(storage, method) for method in SQLITE_STORAGE_METHODS)
    ):
        _store_sqlite_batch(storage, events)
    else:
        storage.store_event_batch(events)


def _store_sqlite_batch(storage: Any, events: list[dg.EventLogEntry]) -> None:
    """Store events of one run on Dagster's SQLite storage as it stores them one at a time (the
    run's database, then the index database with the asset tags and the asset's last event), but in
    one transaction per database, as dagster-postgres's store_event_batch does. This uses the
    storage's own statements and methods, not public API: tests/test_bookkeeping.py compares what it
    stores with what Dagster's store_event_batch stores, so that a Dagster upgrade that changes them
    fails there first."""
    statements = [
        storage.prepare_insert_event_batch(events[i : i + SQLITE_ROWS_PER_INSERT])
        for i in range(0, len(events), SQLITE_ROWS_PER_INSERT)
    ]
    with storage.run_connection(events[0].run_id) as conn:
        for statement in statements:
            conn.execute(statement)
    with storage.index_transaction() as conn:
        event_ids = []
        for statement in statements:  # SQLite numbers the rows of one INSERT in order, RETURNING in any
            event_ids += sorted(row[0] for row in conn.execute(statement.returning(statement.table.c.id)))
        if len(event_ids) != len(events):
            raise RuntimeError(f"SQLite returned {len(event_ids)} event ids for {len(events)} events")
        storage._store_asset_event_tags(conn, events, event_ids)
        storage._store_asset_event(conn, events[-1], event_ids[-1])


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
