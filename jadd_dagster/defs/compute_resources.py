"""The compute backends: where a stage's chunk workers run. One interface, two implementations.

    run_chunks(context, store, manifest_keys, *, stage, tags, needs_gpu=False, on_done=None)
        -> list[ChunkOutcome]   (one per manifest key)

Both run every chunk inside one Dagster Pipes session, so the workers' progress reaches the run's
log; the scenes' result records in the object store stay the source of truth. on_done(outcome,
done, total) is called per finished chunk (as they finish locally; once the jobs are over on AWS
Batch, where progress is logged from the jobs' status counts while they run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import boto3
import dagster as dg

from jadd_dagster.compute.batch import DEFAULT_WORKER_COMMAND, PipesBatchClient
from jadd_dagster.compute.local import ChunkOutcome, run_local_chunks
from jadd_dagster.compute.pipes import ChildFilesMessageReader, open_workers_session, progress_logger
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
        return sorted(outcomes, key=lambda outcome: order[outcome.manifest_key])  # finishing order → manifest order


class BatchComputeBackend(ComputeBackend):
    """Runs chunks on AWS Batch: one array job per stage (several past max_array_size chunks).

    The job definitions name the worker image; each child runs `worker_command --store URL
    --manifest-list KEY`. GPU stages go to gpu_job_queue with gpu_job_definition and one GPU.
    attempt_duration_s is each child's timeout; retry_attempts covers infrastructure failures
    only (Spot reclaim, image pull, task start). Creating the resource calls no AWS API.
    """

    job_queue: str
    gpu_job_queue: str
    job_definition: str
    gpu_job_definition: str
    region_name: str | None = None
    max_array_size: int = 10_000
    attempt_duration_s: int = 3600
    retry_attempts: int = 3
    poll_interval_s: float = 5.0
    max_poll_interval_s: float = 60.0
    message_prefix: str = "pipes"
    worker_command: list[str] = list(DEFAULT_WORKER_COMMAND)

    def pipes_client(self) -> PipesBatchClient:
        return PipesBatchClient(
            boto3.client("batch", region_name=self.region_name),
            max_array_size=self.max_array_size,
            attempt_duration_s=self.attempt_duration_s,
            retry_attempts=self.retry_attempts,
            poll_interval_s=self.poll_interval_s,
            max_poll_interval_s=self.max_poll_interval_s,
            message_prefix=self.message_prefix,
            worker_command=self.worker_command,
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
        return self.pipes_client().run(
            context, store, manifest_keys, stage=stage,
            job_queue=self.gpu_job_queue if needs_gpu else self.job_queue,
            job_definition=self.gpu_job_definition if needs_gpu else self.job_definition,
            tags=tags, needs_gpu=needs_gpu, on_done=on_done,
        )
