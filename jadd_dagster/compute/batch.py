"""AWS Batch: run a stage's chunks as array jobs, with Dagster Pipes (modelled on PipesECSClient).

One chunk is one child of an array job. AWS allows 2..10,000 children per array, so the chunks are
split into arrays of at most `max_array_size`, and a group of one chunk is a plain job. Each
submission gets a manifest list in the object store (`{"manifests": [keys]}`); a child runs
`jadd worker --store URL --manifest-list KEY` and takes the entry at its AWS_BATCH_JOB_ARRAY_INDEX.

Pipes: one session for all the submissions. The context travels in the environment
(`containerOverrides.environment`); every child writes its messages under a prefix of its own,
`<message_prefix>/<run id>/<stage>/<session>/child-<i>/<n>.json` in the object store, where i is
the submission's first chunk + the array index (see compute/pipes.py).

Failures: a failed child (non-zero exit, attempt timeout, lost host after its retries) is not an
error here: it comes back as a ChunkOutcome with its exit code and Batch's reasons, and is logged
as an error; the scenes' result records decide which scenes failed. Only a submission that AWS
Batch rejects (queue or job definition missing, bad request) or a job that vanishes raises
`dg.Failure`. When the Dagster run is cancelled (or anything else interrupts the wait), every
submitted job is terminated before the exception goes on.

botocore has no waiters for Batch: the client polls `describe_jobs` (100 ids per call) with an
exponential backoff from poll_interval_s to max_poll_interval_s.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError

from jadd_dagster.compute.local import ChunkOutcome
from jadd_dagster.compute.pipes import ChildChunksMessageReader, open_workers_session, progress_logger
from jadd_dagster.storage import RUNS, ObjectStore

TERMINAL = ("SUCCEEDED", "FAILED")
WAITING = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING")
TIMEOUT_REASON = "Job attempt duration exceeded timeout"
DESCRIBE_BATCH = 100  # describe_jobs takes at most 100 ids
MAX_TAGS = 50
DEFAULT_WORKER_COMMAND = ("jadd", "worker")


def retry_strategy(attempts: int) -> dict[str, Any]:
    """Retry what the infrastructure broke (Spot reclaim, image pull, task start); a worker that
    exits with an error is not retried: its scenes already have failed result records."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "CannotPullContainerError*", "action": "RETRY"},
            {"onReason": "ResourceInitializationError*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }


def poll_delays(first: float, cap: float, factor: float = 2.0) -> Iterator[float]:
    """Seconds to wait before each poll: first, first*factor, ... never more than cap."""
    delay = first
    while True:
        yield min(delay, cap)
        delay = min(delay * factor, cap)


def chunk_groups(manifest_keys: Sequence[str], max_array_size: int) -> list[list[str]]:
    """Consecutive groups of at most max_array_size chunks, one submission each."""
    if not 2 <= max_array_size <= 10_000:
        raise ValueError(f"max_array_size must be within 2..10000 (AWS Batch's array sizes), not {max_array_size}")
    return [list(manifest_keys[i : i + max_array_size]) for i in range(0, len(manifest_keys), max_array_size)]


def batch_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags as AWS accepts them: allowed characters, keys ≤ 128 and values ≤ 256 characters, the
    first 50."""

    def clean(text: str, limit: int) -> str:
        return re.sub(r"[^\w .:/=+\-@]", "_", str(text))[:limit]

    cleaned = {clean(k, 128): clean(v, 256) for k, v in tags.items() if k}
    return dict(list(cleaned.items())[:MAX_TAGS])


@dataclass(frozen=True)
class Submission:
    """One submit_job call: a plain job (one chunk) or an array job (its children are the chunks)."""

    job_id: str
    name: str
    manifest_keys: list[str]
    first_child: int

    @property
    def is_array(self) -> bool:
        return len(self.manifest_keys) > 1


class PipesBatchClient:
    """Runs chunk workers on AWS Batch inside one Dagster Pipes session and returns their outcomes.

    client: a boto3 Batch client. sleep is injectable so that tests do not wait.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_array_size: int = 10_000,
        attempt_duration_s: int = 3600,
        retry_attempts: int = 3,
        poll_interval_s: float = 5.0,
        max_poll_interval_s: float = 60.0,
        message_prefix: str = "pipes",
        worker_command: Sequence[str] = DEFAULT_WORKER_COMMAND,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client = client
        self.max_array_size = max_array_size
        self.attempt_duration_s = attempt_duration_s
        self.retry_attempts = retry_attempts
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.message_prefix = message_prefix.strip("/")
        self.worker_command = list(worker_command)
        self.sleep = sleep

    def run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        store: ObjectStore,
        manifest_keys: Sequence[str],
        *,
        stage: str,
        job_queue: str,
        job_definition: str,
        tags: Mapping[str, str],
        needs_gpu: bool = False,
        on_done: Callable[[ChunkOutcome, int, int], None] | None = None,
    ) -> list[ChunkOutcome]:
        """Submit one child per manifest, wait for all of them, return one outcome per manifest."""
        if not manifest_keys:
            return []
        run_id = context.run.run_id
        session_id = uuid.uuid4().hex[:8]  # a stage may run twice in a run (step retry): never share chunks
        reader = ChildChunksMessageReader(
            store,
            f"{self.message_prefix}/{run_id}/{stage}/{session_id}",
            len(manifest_keys),
            interval=max(self.poll_interval_s, 0.1),
            log=context.log,
            on_custom_message=progress_logger(context.log, stage),
        )
        job_tags = batch_tags({**tags, **{k: v for k, v in self._dagster_tags(context).items() if k not in tags}})
        submissions: list[Submission] = []
        with open_workers_session(context, reader, extras={"stage": stage, "tags": dict(tags)}) as session:
            try:
                first = 0
                for number, group in enumerate(chunk_groups(manifest_keys, self.max_array_size)):
                    list_key = f"{RUNS}/{run_id}/{stage}/batch/{session_id}/array-{number:04d}.json"
                    store.write_json(list_key, {"manifests": group})
                    submissions.append(self._submit(
                        context, store, stage, run_id, number, group, first, list_key,
                        env=reader.child_env(session, first), job_queue=job_queue,
                        job_definition=job_definition, tags=job_tags, needs_gpu=needs_gpu,
                    ))
                    first += len(group)
                finals = self._wait(context, stage, submissions)
            except BaseException as error:  # run cancelled, interrupted, or failed: stop paying for workers
                self._terminate(context, submissions, f"Dagster run {run_id} stopped waiting ({type(error).__name__}) in stage {stage}")
                raise
            outcomes = self._outcomes(context, stage, submissions, finals)
        for done, outcome in enumerate(outcomes, 1):
            if on_done:
                on_done(outcome, done, len(outcomes))
        return outcomes

    @staticmethod
    def _dagster_tags(context) -> dict[str, str]:
        try:
            return dict(context.run.dagster_execution_info)
        except Exception:  # tags are a convenience; the cost tags passed in are what matters
            return {}

    def _submit(
        self, context, store: ObjectStore, stage: str, run_id: str, number: int, group: list[str], first: int,
        list_key: str, *, env: Mapping[str, str], job_queue: str, job_definition: str, tags: dict[str, str], needs_gpu: bool,
    ) -> Submission:
        name = re.sub(r"[^A-Za-z0-9_-]", "-", f"jadd-{stage}-{run_id[:8]}-{number:04d}")[:128]
        overrides: dict[str, Any] = {
            "command": [*self.worker_command, "--store", store.url, "--manifest-list", list_key],
            "environment": [{"name": key, "value": value} for key, value in sorted(env.items())],
        }
        if needs_gpu:
            overrides["resourceRequirements"] = [{"type": "GPU", "value": "1"}]
        request: dict[str, Any] = {
            "jobName": name,
            "jobQueue": job_queue,
            "jobDefinition": job_definition,
            "containerOverrides": overrides,
            "tags": tags,
            "propagateTags": True,
            "timeout": {"attemptDurationSeconds": self.attempt_duration_s},
            "retryStrategy": retry_strategy(self.retry_attempts),
        }
        if len(group) > 1:
            request["arrayProperties"] = {"size": len(group)}
        try:
            response = self.client.submit_job(**request)
        except (ClientError, BotoCoreError) as error:
            raise dg.Failure(
                description=f"AWS Batch did not accept the {stage} job {name} (queue {job_queue}, job definition {job_definition}): {error}",
                metadata={"job_queue": job_queue, "job_definition": job_definition, "chunks": len(group)},
            ) from error
        kind = f"array job of {len(group)} chunks" if len(group) > 1 else "job of 1 chunk"
        context.log.info(f"{stage}: submitted AWS Batch {kind} {response['jobId']} ({name}) to {job_queue}")
        return Submission(response["jobId"], name, group, first)

    def _describe(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        jobs = []
        for i in range(0, len(job_ids), DESCRIBE_BATCH):
            jobs.extend(self.client.describe_jobs(jobs=list(job_ids[i : i + DESCRIBE_BATCH]))["jobs"])
        return jobs

    def _wait(self, context, stage: str, submissions: list[Submission]) -> dict[str, dict[str, Any]]:
        """Poll until every submission is finished; their last descriptions by job id."""
        delays = poll_delays(self.poll_interval_s, self.max_poll_interval_s)
        total = sum(len(s.manifest_keys) for s in submissions)
        pending = {s.job_id: s for s in submissions}
        finals: dict[str, dict[str, Any]] = {}
        last_progress = ""
        while pending:
            self.sleep(next(delays))
            described = {job["jobId"]: job for job in self._describe(list(pending))}
            counts = {"done": 0, "failed": 0, "running": 0, "waiting": 0}
            for job_id, submission in list(pending.items()):
                job = described.get(job_id)
                if job is None:
                    raise dg.Failure(description=f"AWS Batch no longer knows job {job_id} ({submission.name}) of stage {stage}")
                if _finished(job):
                    finals[job_id] = job
                    del pending[job_id]
                _count(job, len(submission.manifest_keys), counts)
            for job in finals.values():
                if job["jobId"] not in described:
                    _count(job, _size(job), counts)
            progress = (
                f"{stage} on AWS Batch: {counts['done']}/{total} chunks finished ({counts['failed']} failed), "
                f"{counts['running']} running, {counts['waiting']} waiting"
            )
            if progress != last_progress:
                context.log.info(progress)
                last_progress = progress
        return finals

    def _children(self, array_job_id: str) -> dict[int, dict[str, Any]]:
        """The finished children of an array job by index; failed ones described in full."""
        children: dict[int, dict[str, Any]] = {}
        failed_ids = []
        for status in TERMINAL:
            for page in self.client.get_paginator("list_jobs").paginate(arrayJobId=array_job_id, jobStatus=status):
                for summary in page["jobSummaryList"]:
                    children[_array_index(summary)] = summary
                    if status == "FAILED":
                        failed_ids.append(summary["jobId"])
        for job in self._describe(failed_ids):  # container.reason, statusReason and attempts
            summary = children.get(_array_index(job), {})
            container = {**(summary.get("container") or {}), **(job.get("container") or {})}
            children[_array_index(job)] = {**summary, **job, "container": container}
        return children

    def _outcomes(self, context, stage: str, submissions: list[Submission], finals: dict[str, dict[str, Any]]) -> list[ChunkOutcome]:
        outcomes = []
        for submission in submissions:
            job = finals[submission.job_id]
            children = self._children(submission.job_id) if submission.is_array else {0: job}
            for index, key in enumerate(submission.manifest_keys):
                child_id = f"{submission.job_id}:{index}" if submission.is_array else submission.job_id
                outcome = chunk_outcome(key, child_id, children.get(index))
                if outcome.returncode != 0:
                    context.log.error(f"{stage}: chunk {key} failed on AWS Batch: {outcome.stderr_tail}")
                outcomes.append(outcome)
        return outcomes

    def _terminate(self, context, submissions: list[Submission], reason: str) -> None:
        """Terminate every submission; terminating an array job terminates its children."""
        for submission in submissions:
            try:
                self.client.terminate_job(jobId=submission.job_id, reason=reason[:1024])
                context.log.warning(f"terminated AWS Batch job {submission.job_id} ({submission.name}): {reason}")
            except (ClientError, BotoCoreError) as error:
                context.log.warning(f"could not terminate AWS Batch job {submission.job_id} ({submission.name}): {error}")


def chunk_outcome(manifest_key: str, job_id: str, job: Mapping[str, Any] | None) -> ChunkOutcome:
    """A finished Batch job (or child) as a ChunkOutcome; the reason is one line for dispatch."""
    if job is None:
        return ChunkOutcome(manifest_key, -1, f"AWS Batch job {job_id} reported no final state", 0.0)
    container = job.get("container") or {}
    exit_code = container.get("exitCode")
    started, stopped = job.get("startedAt"), job.get("stoppedAt")
    seconds = (stopped - started) / 1000 if started and stopped and stopped >= started else 0.0
    if job.get("status") == "SUCCEEDED":
        return ChunkOutcome(manifest_key, exit_code or 0, "", seconds)
    reasons = [f"AWS Batch job {job_id} failed"]
    if job.get("statusReason"):
        reasons.append(str(job["statusReason"]))
    if container.get("reason"):
        reasons.append(f"container: {container['reason']}")
    reasons.append(f"exit code {exit_code}" if exit_code is not None else "no exit code")
    if job.get("statusReason") == TIMEOUT_REASON:
        reasons.append("the chunk ran longer than attempt_duration_s")
    return ChunkOutcome(manifest_key, exit_code if exit_code else -1, "; ".join(reasons), seconds)


def _size(job: Mapping[str, Any]) -> int:
    return int((job.get("arrayProperties") or {}).get("size") or 1)


def _array_index(job: Mapping[str, Any]) -> int:
    index = (job.get("arrayProperties") or {}).get("index")
    return int(index) if index is not None else int(str(job["jobId"]).rsplit(":", 1)[1])


def _finished(job: Mapping[str, Any]) -> bool:
    """A plain job is finished in a terminal status; an array job when its children all are too."""
    if job.get("status") not in TERMINAL:
        return False
    summary = (job.get("arrayProperties") or {}).get("statusSummary")
    if not summary:
        return True
    return sum(summary.get(status, 0) for status in TERMINAL) >= _size(job)


def _count(job: Mapping[str, Any], size: int, counts: dict[str, int]) -> None:
    """Add a job's children to the progress counts (a plain job counts as one child)."""
    summary = (job.get("arrayProperties") or {}).get("statusSummary")
    if not summary:
        summary = {job.get("status") or "SUBMITTED": size}
    counts["done"] += sum(summary.get(s, 0) for s in TERMINAL)
    counts["failed"] += summary.get("FAILED", 0)
    counts["running"] += summary.get("RUNNING", 0)
    counts["waiting"] += sum(summary.get(s, 0) for s in WAITING)
