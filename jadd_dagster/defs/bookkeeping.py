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
`store_event_batch` call. On PostgreSQL that is one multi-row INSERT per batch (≈ 0.6 ms per
scene, a minute per 100,000); SQLite's storage stores a batch event by event, so there it costs
about what `log_event` does. No environment variable is needed (bench/RESULTS.md, "Per-scene
bookkeeping"). Events written this way reach the instance (UI, partition status, sensors) but not
the in-process event stream, e.g. not `ExecuteInProcessResult.all_events`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dagster as dg

# Dagster tags each materialization of a multi-partitioned asset with one tag per dimension (its
# own output materializations carry them; per-dimension queries and the uncached partition status
# read them); log_event does not add them by itself.
DIMENSION_TAG_PREFIX = "dagster/partition/"


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
            storage.store_event_batch([_copy_of(template, m) for m in materializations])
        count += len(materializations)
    return count


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


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
