"""Benchmark: recording N `sampled_frames` materializations from inside one asset step.

Each measurement is one Dagster run of a probe asset whose body records N materializations of
`sampled_frames` partitions (log × scene, 360 scenes per log, the logs added as dynamic
partitions first); the time is taken around the recording call inside the step. Backends: SQLite
(a local_temp instance, Dagster's default storage) and PostgreSQL 15 (a throwaway server started
like tests/services/postgres.py, with PostgreSQL's default durable settings, TCP + password).

Mechanisms:
- batched: jadd_dagster.defs.bookkeeping.record_materializations (store_event_batch, 1,000/batch)
- log_event: `context.log_event(AssetMaterialization)` one at a time (the naive way)
- log_event+env: the same with DAGSTER_EVENT_BATCH_SIZE=1000 set (to show it does not apply)
- runless: `context.instance.report_runless_asset_event` one at a time (not tied to the run)

Usage: python bench/bench_bookkeeping.py [--sizes 10000 100000] [--naive-n 2000] [--backends sqlite postgres]
The one-at-a-time mechanisms run at --naive-n only; their per-partition time is extrapolated.
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from services.postgres import start_postgres

from jadd_dagster.defs.bookkeeping import asset_materialization, record_materializations
from jadd_dagster.defs.partitions import log_partitions, scene_partition_key, scene_partitions

SCENES_PER_LOG = 360
SAMPLED_FRAMES = dg.AssetKey("sampled_frames")
LABELS = {
    "batched": "record_materializations (batched)", "log_event": "context.log_event, one at a time",
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


def measure(instance: dg.DagsterInstance, mechanism: str, n: int) -> float:
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
    recorded = len(instance.get_materialized_partitions(SAMPLED_FRAMES))
    if count != n or recorded != n:
        raise AssertionError(f"{mechanism}: returned {count}, {recorded} partitions recorded, expected {n}")
    return seconds


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
    else:
        with start_postgres() as server:
            import yaml

            config = yaml.safe_load(server.dagster_yaml(inline_password=True))
            with dg.instance_for_test(temp_dir=tmp, overrides=config) as instance:
                yield instance


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--naive-n", type=int, default=2_000, help="N for the one-at-a-time mechanisms")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--naive", nargs="+", default=["log_event", "log_event+env", "runless"])
    args = parser.parse_args(argv)
    rows = []
    for name in args.backends:
        with tempfile.TemporaryDirectory() as tmp, backend(name, tmp) as instance:
            plan = [("batched", n) for n in args.sizes] + [(m, args.naive_n) for m in args.naive]
            for mechanism, n in plan:
                seconds = measure(instance, mechanism, n)
                rows.append((name, mechanism, n, seconds))
                print(f"{name:9s} {mechanism:14s} {n:>8,d} {seconds:9.2f} s {1000 * seconds / n:8.3f} ms", flush=True)
    print()
    print(f"| backend    | {'mechanism':37s} |       N | seconds | ms / partition | 100,000 at this rate")
    print(f"|------------|{'-' * 39}|--------:|--------:|---------------:|--------------------:")
    for name, mechanism, n, seconds in rows:
        print(f"| {name:10s} | {LABELS[mechanism]:37s} | {n:>7,d} | {seconds:7.2f} | {1000 * seconds / n:14.3f} | "
              f"{100_000 * seconds / n / 60:15.1f} min")


if __name__ == "__main__":
    main()
