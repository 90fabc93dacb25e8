"""LocalBackend: runs chunk workers as processes on this machine, a few at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChunkOutcome:
    """How a worker process ended: exit code and the tail of its error output."""

    manifest: Path
    returncode: int
    stderr_tail: str
    seconds: float


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_local_chunks(
    manifests: list[Path],
    max_workers: int = 0,
    on_done: Callable[[ChunkOutcome, int, int], None] | None = None,
) -> list[ChunkOutcome]:
    """Run `python -m jadd_dagster.compute.worker` once per manifest, max_workers at a time.

    on_done(outcome, done, total) is called as each chunk finishes, for progress reporting.
    """
    workers = max_workers or default_workers()
    pending = list(manifests)
    running: list[tuple[subprocess.Popen, Path, float, object]] = []
    outcomes: list[ChunkOutcome] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                manifest = pending.pop(0)
                err = open(str(manifest) + ".stderr", "w+")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "jadd_dagster.compute.worker", "--manifest", str(manifest)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
                running.append((proc, manifest, time.monotonic(), err))
            time.sleep(0.05)
            for item in list(running):
                proc, manifest, started, err = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                err.seek(0)
                tail = err.read()[-4000:]
                err.close()
                outcome = ChunkOutcome(manifest, proc.returncode, tail, time.monotonic() - started)
                outcomes.append(outcome)
                if on_done:
                    on_done(outcome, len(outcomes), len(manifests))
    finally:
        for proc, *_ in running:  # cancelled or failed: leave no orphan workers behind
            proc.kill()
    return outcomes
