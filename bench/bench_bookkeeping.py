"""Benchmark: recording N `sampled_frames` materializations from inside one asset step.

Each measurement is one Dagster run of a probe asset whose body records N materializations of
`sampled_frames` partitions (log × scene, 360 scenes per log, the logs added as dynamic
partitions first); the time is taken around the recording call inside the step, and the time to
read the partition status back (`get_materialized_partitions`) after it. Backends: SQLite (a
local_temp instance, Dagster's default storage: a database per run plus an index database),
sqlite-consolidated (Dagster's ConsolidatedSqliteEventLogStorage, one database) and PostgreSQL 15
(a throwaway server started like tests/services/postgres.py, with PostgreSQL's default durable
settings, TCP + password).

Mechanisms:
- batched: jadd_dagster.defs.bookkeeping.record_materializations, 1,000 per batch (on the default
  SQLite storage one transaction per database and batch; elsewhere the storage's store_event_batch)
- store_event_batch: the same through Dagster's store_event_batch on SQLite too (the previous
  version: SQLite's storage stores such a batch event by event)
- log_event: `context.log_event(AssetMaterialization)` one at a time (the naive way)
- log_event+env: the same with DAGSTER_EVENT_BATCH_SIZE=1000 set (to show it does not apply)
- runless: `context.instance.report_runless_asset_event` one at a time (not tied to the run)

Usage: python bench/bench_bookkeeping.py [--sizes 2000 10000 100000] [--old-sizes 2000 10000]
    [--naive-n 2000] [--backends sqlite sqlite-consolidated postgres]
store_event_batch runs on SQLite at --old-sizes; the one-at-a-time mechanisms, and everything on
sqlite-consolidated, at --naive-n only. The last column extrapolates each row to 100,000 scenes.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from services.postgres import start_postgres

from jadd_dagster.defs import bookkeeping
from jadd_dagster.defs.bookkeeping import asset_materialization, record_materializations
from jadd_dagster.defs.partitions import log_partitions, scene_partition_key, scene_partitions

SCENES_PER_LOG = 360
SAMPLED_FRAMES = dg.AssetKey("sampled_frames")
LABELS = {
    "batched": "record_materializations (batched)", "store_event_batch": "the same via Dagster store_event_batch",
    "log_event": "context.log_event, one at a time",
    "log_event+env": "log_event + DAGSTER_EVENT_BATCH_SIZE", "runless": "report_runless_asset_event",
}
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # as `jadd build` runs


class ProbeConfig(dg.Config):
    mechanism: str
    n: int


def items(n: int):
    for i in range(n):
        key = scene_partition_key(f"bench-log-{i // SCENES_PER_LOG:05d}", i % SCENES_PER_LOG)
        yield key, {"profile": "p-0123abcd", "frames": 196, "seconds": 1.234, "path": f"sampled/{key}/scene.json"}


@dg.asset
def bookkeeping_probe(context: dg.AssetExecutionContext, config: ProbeConfig) -> dg.MaterializeResult:
    started = time.perf_counter()
    if config.mechanism == "batched":
        count = record_materializations(context, SAMPLED_FRAMES, items(config.n))
    elif config.mechanism == "store_event_batch":
        with mock.patch.object(bookkeeping, "_store_events", lambda storage, events: storage.store_event_batch(events)):
            count = record_materializations(context, SAMPLED_FRAMES, items(config.n))
    elif config.mechanism in ("log_event", "log_event+env", "runless"):
        report = context.log_event if config.mechanism != "runless" else context.instance.report_runless_asset_event
        count = 0
        for key, metadata in items(config.n):
            report(asset_materialization(SAMPLED_FRAMES, key, metadata))
            count += 1
    else:
        raise ValueError(config.mechanism)
    return dg.MaterializeResult(metadata={"seconds": time.perf_counter() - started, "count": count})


@dg.asset(partitions_def=scene_partitions)
def sampled_frames() -> None:
    """Stand-in with the real partitions, so that the partition status can be read back."""


def measure(instance: dg.DagsterInstance, mechanism: str, n: int) -> tuple[float, float]:
    """(seconds recording, seconds reading the partition status back) of n scenes."""
    instance.wipe_assets([SAMPLED_FRAMES])
    logs = sorted({f"bench-log-{i // SCENES_PER_LOG:05d}" for i in range(n)})
    instance.add_dynamic_partitions(log_partitions.name, logs)
    env = {"DAGSTER_EVENT_BATCH_SIZE": "1000"} if mechanism == "log_event+env" else {}
    with patched_env(env):
        result = dg.materialize(
            [bookkeeping_probe], instance=instance,
            run_config={**QUIET, "ops": {"bookkeeping_probe": {"config": {"mechanism": mechanism, "n": n}}}},
        )
    events = result.asset_materializations_for_node("bookkeeping_probe")
    metadata = next(m for m in events if m.asset_key == bookkeeping_probe.key).metadata
    seconds, count = metadata["seconds"].value, metadata["count"].value
    started = time.perf_counter()
    recorded = len(instance.get_materialized_partitions(SAMPLED_FRAMES))
    read_s = time.perf_counter() - started
    if count != n or recorded != n:
        raise AssertionError(f"{mechanism}: returned {count}, {recorded} partitions recorded, expected {n}")
    return seconds, read_s


@contextlib.contextmanager
def patched_env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def backend(name: str, tmp: str):
    if name == "sqlite":
        with dg.instance_for_test(temp_dir=tmp) as instance:
            yield instance
    elif name == "sqlite-consolidated":
        storage = {"module": "dagster._core.storage.event_log", "class": "ConsolidatedSqliteEventLogStorage",
                   "config": {"base_dir": os.path.join(tmp, "events")}}
        with dg.instance_for_test(temp_dir=tmp, overrides={"event_log_storage": storage}) as instance:
            yield instance
    else:
        with start_postgres() as server:
            import yaml

            config = yaml.safe_load(server.dagster_yaml(inline_password=True))
            with dg.instance_for_test(temp_dir=tmp, overrides=config) as instance:
                yield instance


def plan(backend_name: str, args: argparse.Namespace) -> list[tuple[str, int]]:
    if backend_name == "sqlite-consolidated":  # no batched write: everything is one event at a time
        return [("batched", args.naive_n)]
    old = set(args.old_sizes) if backend_name == "sqlite" else set()
    batched = [  # smallest first, the old way right after the new at each N, so that both see the same load
        (mechanism, n) for n in sorted(set(args.sizes) | old)
        for mechanism, sizes in (("batched", args.sizes), ("store_event_batch", old)) if n in sizes
    ]
    return batched + [(m, args.naive_n) for m in args.naive]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 10_000, 100_000])
    parser.add_argument("--old-sizes", type=int, nargs="*", default=[2_000, 10_000],
                        help="N for store_event_batch on SQLite")
    parser.add_argument("--naive-n", type=int, default=2_000, help="N for the one-at-a-time mechanisms")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "sqlite-consolidated", "postgres"])
    parser.add_argument("--naive", nargs="*", default=["log_event", "log_event+env", "runless"])
    args = parser.parse_args(argv)
    rows = []
    for name in args.backends:
        with tempfile.TemporaryDirectory() as tmp, backend(name, tmp) as instance:
            for mechanism, n in plan(name, args):
                seconds, read_s = measure(instance, mechanism, n)
                rows.append((name, mechanism, n, seconds, read_s))
                print(f"{name:19s} {mechanism:17s} {n:>8,d} {seconds:9.2f} s {1000 * seconds / n:8.3f} ms "
                      f"read {read_s:6.2f} s", flush=True)
    print()
    print(f"| {'backend':19s} | {'mechanism':38s} |       N | seconds | ms / partition | status read s "
          "| 100,000 at this rate")
    print(f"|{'-' * 21}|{'-' * 40}|--------:|--------:|---------------:|--------------:|--------------------:")
    for name, mechanism, n, seconds, read_s in rows:
        print(f"| {name:19s} | {LABELS[mechanism]:38s} | {n:>7,d} | {seconds:7.2f} | {1000 * seconds / n:14.3f} | "
              f"{read_s:13.2f} | {100_000 * seconds / n / 60:15.1f} min")


if __name__ == "__main__":
    main()
