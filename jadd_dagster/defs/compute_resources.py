"""The compute backends: where a stage's chunk workers run. One interface, two implementations.

    run_chunks(context, store, manifest_keys, *, stage, tags, needs_gpu=False, on_done=None)
        -> list[ChunkOutcome]   (one per manifest key)

Both run every chunk inside one Dagster Pipes session, so the workers' progress reaches the run's
log; the scenes' result records in the object store stay the source of truth. on_done(outcome,
done, total) is called per finished chunk (as they finish locally; once the jobs are over on AWS
Batch, where progress is logged from the jobs' status counts while they run). Chunks that end with
a non-zero exit code are reported to Sentry when it is on (observability.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import boto3
import dagster as dg

from jadd_dagster.compute.batch import ARRAY_SIZE_LIMIT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_WORKER_COMMAND, PipesBatchClient
from jadd_dagster.compute.chunks import ChunkManifest
from jadd_dagster.compute.local import ChunkOutcome, run_local_chunks
from jadd_dagster.compute.pipes import ChildFilesMessageReader, open_workers_session, progress_logger
from jadd_dagster.observability import MAX_CHUNK_EVENTS, SENTRY_ENV_VARS, enabled, report_chunk_failures
from jadd_dagster.storage import ObjectStore

OnDone = Callable[[ChunkOutcome, int, int], None]


class ComputeBackend(dg.ConfigurableResource, ABC):
    """Where chunk workers run; annotate asset parameters with this type.

    target_chunk_s is the scene time per chunk that Split aims at (seconds).
    """

    target_chunk_s: float = 120.0

    @abstractmethod
    def run_chunks(
        self,
        context: dg.AssetExecutionContext,
        store: ObjectStore,
        manifest_keys: list[str],
        *,
        stage: str,
        tags: Mapping[str, str],
        needs_gpu: bool = False,
        on_done: OnDone | None = None,
    ) -> list[ChunkOutcome]:
        """Run one worker per manifest; one outcome per manifest key, in their order."""


def report_failed_chunks(store: ObjectStore, outcomes: list[ChunkOutcome], tags: Mapping[str, str], backend: str) -> None:
    """Send the chunks that ended with a non-zero exit code to Sentry (nothing when it is off),
    with the chunk's id and log from its manifest (read for those that get an event of their own)."""
    failed = [o for o in outcomes if o.returncode != 0]
    if not failed or not enabled():
        return
    failures = []
    for number, outcome in enumerate(failed):
        failure = {"chunk": outcome.manifest_key, "manifest_key": outcome.manifest_key,
                   "returncode": outcome.returncode, "reason": outcome.stderr_tail}
        if number < MAX_CHUNK_EVENTS:
            try:
                manifest = ChunkManifest.from_json(store.read_json(outcome.manifest_key))
                logs = sorted({task.log_id for task in manifest.scenes})
                failure.update(chunk=manifest.chunk_id, log=logs[0] if len(logs) == 1 else None)
            except Exception:  # the event goes out without them
                pass
        failures.append(failure)
    report_chunk_failures(failures, tags, backend)


class LocalComputeBackend(ComputeBackend):
    """Runs chunks as worker processes on this machine, max_workers at a time (0: one per core).

    needs_gpu is ignored (workers use what the machine has); tags are passed to the workers as
    Pipes extras.
    """

    max_workers: int = 0

    def run_chunks(
        self,
        context: dg.AssetExecutionContext,
        store: ObjectStore,
        manifest_keys: list[str],
        *,
        stage: str,
        tags: Mapping[str, str],
        needs_gpu: bool = False,
        on_done: OnDone | None = None,
    ) -> list[ChunkOutcome]:
        if not manifest_keys:
            return []
        reader = ChildFilesMessageReader(len(manifest_keys), log=context.log, on_custom_message=progress_logger(context.log, stage))
        with open_workers_session(context, reader, extras={"stage": stage, "tags": dict(tags)}) as session:
            envs = [reader.child_env(session, i) for i in range(len(manifest_keys))]
            outcomes = run_local_chunks(store.url, manifest_keys, self.max_workers, on_done, envs=envs)
        order = {key: i for i, key in enumerate(manifest_keys)}
        outcomes = sorted(outcomes, key=lambda outcome: order[outcome.manifest_key])  # finishing order → manifest order
        report_failed_chunks(store, outcomes, tags, "local")
        return outcomes


class BatchComputeBackend(ComputeBackend):
    """Runs chunks on AWS Batch: one array job per stage (several past max_array_size chunks, or
    when max_in_flight makes them wait).

    The job definitions name the worker image; each child runs `worker_command --store URL
    --manifest-list KEY`. GPU stages go to gpu_job_queue with gpu_job_definition and one GPU.
    attempt_duration_s is each child's timeout; retry_attempts covers infrastructure failures
    only (Spot reclaim, image pull, task start). max_in_flight caps the children of all jobs named
    `<job_name_prefix>-…` submitted and not finished on a queue, across stages and concurrent
    runs. forward_env names variables of the run's environment that the children get too (Sentry's
    by default; never secrets). worker_threads is each CPU child's sampling threads: the CPU job
    definition's vCPUs (see PipesBatchClient). Creating the resource calls no AWS API.
    """

    job_queue: str
    gpu_job_queue: str
    job_definition: str
    gpu_job_definition: str
    region_name: str | None = None
    max_array_size: int = ARRAY_SIZE_LIMIT
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    job_name_prefix: str = "jadd"
    attempt_duration_s: int = 3600
    retry_attempts: int = 3
    poll_interval_s: float = 5.0
    max_poll_interval_s: float = 60.0
    message_prefix: str = "pipes"
    worker_command: list[str] = list(DEFAULT_WORKER_COMMAND)
    forward_env: list[str] = list(SENTRY_ENV_VARS)
    worker_threads: int = 2

    def pipes_client(self) -> PipesBatchClient:
        return PipesBatchClient(
            boto3.client("batch", region_name=self.region_name),
            max_array_size=self.max_array_size,
            max_in_flight=self.max_in_flight,
            job_name_prefix=self.job_name_prefix,
            attempt_duration_s=self.attempt_duration_s,
            retry_attempts=self.retry_attempts,
            poll_interval_s=self.poll_interval_s,
            max_poll_interval_s=self.max_poll_interval_s,
            message_prefix=self.message_prefix,
            worker_command=self.worker_command,
            forward_env=self.forward_env,
            worker_threads=self.worker_threads,
        )

    def run_chunks(
        self,
        context: dg.AssetExecutionContext,
        store: ObjectStore,
        manifest_keys: list[str],
        *,
        stage: str,
        tags: Mapping[str, str],
        needs_gpu: bool = False,
        on_done: OnDone | None = None,
    ) -> list[ChunkOutcome]:
        outcomes = self.pipes_client().run(
            context, store, manifest_keys, stage=stage,
            job_queue=self.gpu_job_queue if needs_gpu else self.job_queue,
            job_definition=self.gpu_job_definition if needs_gpu else self.job_definition,
            tags=tags, needs_gpu=needs_gpu, on_done=on_done,
        )
        report_failed_chunks(store, outcomes, tags, "batch")
        return outcomes
