"""LocalBackend: runs chunk workers as processes on this machine, a few at a time.

Plain Python (no Dagster): the Dagster resource (defs/compute_resources.py) opens the Pipes session
and passes each worker its own environment through `envs`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkOutcome:
    """How a worker ended: its manifest key, exit code and the tail of its error output."""

    manifest_key: str
    returncode: int
    stderr_tail: str
    seconds: float


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def worker_threads(workers: int) -> dict[str, str]:
    """The sampling threads each of `workers` concurrent workers may use, so that together they use
    the CPUs once (each worker alone would take them all); nothing when the user has set it."""
    from jadd_dagster.sampling.decode import THREADS_ENV, available_cpus

    if os.environ.get(THREADS_ENV, "").strip():
        return {}
    return {THREADS_ENV: str(max(1, available_cpus() // max(1, workers)))}


def run_local_chunks(
    store_url: str,
    manifest_keys: list[str],
    max_workers: int = 0,
    on_done: Callable[[ChunkOutcome, int, int], None] | None = None,
    envs: Sequence[Mapping[str, str]] | None = None,
) -> list[ChunkOutcome]:
    """Run `python -m jadd_dagster.compute.worker` once per manifest, max_workers at a time.

    on_done(outcome, done, total) is called as each chunk finishes, for progress reporting.
    envs, if given, holds one mapping per manifest of variables added to that worker's environment
    (e.g. its Dagster Pipes bootstrap variables).
    """
    if envs is not None and len(envs) != len(manifest_keys):
        raise ValueError(f"{len(envs)} environments for {len(manifest_keys)} manifests")
    workers = max_workers or default_workers()
    # Fewer chunks than workers: the workers that run share the CPUs (a worker samples its scenes
    # side by side on its threads), so a one-chunk build still uses every core.
    threads = worker_threads(min(workers, max(1, len(manifest_keys))))
    pending = list(enumerate(manifest_keys))
    running: list[tuple[subprocess.Popen, str, float, object]] = []
    outcomes: list[ChunkOutcome] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                index, key = pending.pop(0)
                err = tempfile.TemporaryFile("w+")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "jadd_dagster.compute.worker", "--store", store_url, "--manifest", key],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**threads, **os.environ, **(envs[index] if envs is not None else {})},
                )
                running.append((proc, key, time.monotonic(), err))
            time.sleep(0.05)
            for item in list(running):
                proc, key, started, err = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                err.seek(0)
                tail = err.read()[-4000:]
                err.close()
                outcome = ChunkOutcome(key, proc.returncode, tail, time.monotonic() - started)
                outcomes.append(outcome)
                if on_done:
                    on_done(outcome, len(outcomes), len(manifest_keys))
    finally:
        for proc, *_ in running:  # cancelled or failed: leave no orphan workers behind
            proc.kill()
        for proc, *_ in running:
            proc.wait()
    return outcomes
