"""AWS Batch: run a stage's chunks as array jobs, with Dagster Pipes (modelled on PipesECSClient).

One chunk is one child of an array job. AWS allows 2..10,000 children per array (ARRAY_SIZE_LIMIT),
so chunks go in arrays of at most `max_array_size`, and a group of one chunk is a plain job. Each
submission gets a manifest list in the object store (`{"manifests": [keys]}`); a child runs
`jadd worker --store URL --manifest-list KEY` and takes the entry at its AWS_BATCH_JOB_ARRAY_INDEX.

Parallelism cap: never more than `max_in_flight` children of our jobs (names starting with
`<job_name_prefix>-`) submitted and not finished on a job queue, across the arrays of a stage and
across concurrent runs. Chunks are submitted in waves: before each wave the client counts what is in
flight on the queue (ListJobs by status SUBMITTED..RUNNING, then the arrays' status summaries) and
submits only what fits; otherwise it waits for children to finish. Counting and submitting happen
under a lock in the object store that all runs of a deployment share (`SubmitLock`), so two runs
never both fill the same room.

Pipes: one session for all the submissions. The context travels in the environment
(`containerOverrides.environment`, with the `forward_env` variables of this process, e.g. Sentry's);
every child writes its messages under a prefix of its own,
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

import json
import os
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
from jadd_dagster.observability import looks_secret
from jadd_dagster.storage import RUNS, ObjectStore

TERMINAL = ("SUCCEEDED", "FAILED")
WAITING = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING")
ACTIVE = (*WAITING, "RUNNING")
ARRAY_SIZE_LIMIT = 10_000  # AWS Batch's largest array job
DEFAULT_MAX_IN_FLIGHT = 10_000
LOCKS = "locks/batch-submit"
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


class SubmitLock:
    """Mutual exclusion for count-then-submit, across processes and machines, in the object store.

    Each holder creates the next numbered object under `prefix` (`<n>.json`) only if it does not
    exist yet (If-None-Match on S3, a hard link locally), so of two contenders exactly one wins; on
    release it rewrites its object as released, with the job ids it submitted (ListJobs may not
    show a job the moment it is submitted; the next holders count those too). A holder that died
    blocks the others for lease_s at most. Old numbers are deleted as new ones are taken.
    """

    KEEP = 100  # numbers kept behind the newest; a contender that listed before that many holders retries

    def __init__(self, store: ObjectStore, prefix: str, *, lease_s: float = 120.0, wait_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.prefix = prefix.strip("/")
        self.lease_s = lease_s
        self.wait_s = wait_s
        self.sleep = sleep
        self.owner = uuid.uuid4().hex
        self.number = 0
        self.submitted: list[str] = []
        self.recent: list[str] = []

    def _key(self, number: int) -> str:
        return f"{self.prefix}/{number:010d}.json"

    def _numbers(self) -> list[int]:
        names = (name.removesuffix(".json") for name in self.store.list_children(self.prefix))
        return sorted(int(name) for name in names if name.isdigit())

    def _read(self, number: int) -> dict | None:
        try:
            return self.store.read_json(self._key(number))
        except (FileNotFoundError, ValueError):
            return None

    def _create(self, key: str, data: bytes) -> bool:
        try:
            self.store.put_bytes(key, data, if_absent=True)  # a hard link locally, If-None-Match on S3
            return True
        except FileExistsError:
            return False

    def __enter__(self) -> "SubmitLock":
        while True:
            numbers = self._numbers()
            newest = numbers[-1] if numbers else 0
            record = self._read(newest) if newest else None  # writes are atomic: an unreadable record is broken, not busy
            if record and not record.get("released") and record.get("expires", 0) > time.time():
                self.sleep(self.wait_s)  # held: wait for its holder
                continue
            data = json.dumps({"owner": self.owner, "expires": time.time() + self.lease_s, "released": False}).encode()
            if self._create(self._key(newest + 1), data):
                self.number = newest + 1
                self.recent = [job for n in numbers[-5:] for job in (self._read(n) or {}).get("jobs", [])]
                self.store.delete_keys([self._key(n) for n in numbers if n < self.number - self.KEEP])
                return self

    def __exit__(self, *exc) -> None:
        self.store.write_json(self._key(self.number), {
            "owner": self.owner, "released": True, "released_at": time.time(), "jobs": self.submitted})


class PipesBatchClient:
    """Runs chunk workers on AWS Batch inside one Dagster Pipes session and returns their outcomes.

    client: a boto3 Batch client. max_in_flight caps the children of all `job_name_prefix` jobs in
    flight on a queue (see the module's doc). forward_env: names of environment variables of this
    process that every child gets too (never secrets: they show in the job's description).
    worker_threads: the sampling threads of a child, the job definition's vCPUs (0: the child
    counts its CPUs; a container on an EC2 host sees every host CPU in its affinity mask and, with
    CPU shares instead of a quota, no cgroup limit either, and would sample that many scenes at
    once in 4 GiB). sleep is injectable so that tests do not wait.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_array_size: int = ARRAY_SIZE_LIMIT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        job_name_prefix: str = "jadd",
        attempt_duration_s: int = 3600,
        retry_attempts: int = 3,
        poll_interval_s: float = 5.0,
        max_poll_interval_s: float = 60.0,
        message_prefix: str = "pipes",
        worker_command: Sequence[str] = DEFAULT_WORKER_COMMAND,
        forward_env: Sequence[str] = (),
        worker_threads: int = 2,
        lock_lease_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_array_size < 1 or max_in_flight < 1:
            raise ValueError(f"max_array_size ({max_array_size}) and max_in_flight ({max_in_flight}) must be at least 1")
        if worker_threads < 0:
            raise ValueError(f"worker_threads ({worker_threads}) must be 0 (the child counts its CPUs) or more")
        secret = [name for name in forward_env if looks_secret(name)]
        if secret:
            raise ValueError(f"forward_env must not name secrets (they would show in every job's description): {secret}")
        self.client = client
        self.max_array_size = max_array_size
        self.max_in_flight = max_in_flight
        self.job_name_prefix = job_name_prefix
        self.attempt_duration_s = attempt_duration_s
        self.retry_attempts = retry_attempts
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.message_prefix = message_prefix.strip("/")
        self.worker_command = list(worker_command)
        self.forward_env = list(forward_env)
        self.worker_threads = worker_threads
        self.lock_lease_s = lock_lease_s
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
        """Submit one child per manifest (in waves under max_in_flight), wait for all of them,
        return one outcome per manifest."""
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
        forwarded = {name: os.environ[name] for name in self.forward_env if os.environ.get(name)}
        if self.worker_threads and not needs_gpu:  # a GPU child labels one scene after the other
            from jadd_dagster.sampling.decode import THREADS_ENV

            forwarded[THREADS_ENV] = str(self.worker_threads)
        submissions: list[Submission] = []
        with open_workers_session(context, reader, extras={"stage": stage, "tags": dict(tags)}) as session:

            def submit(number: int, first: int, group: list[str]) -> Submission:
                list_key = f"{RUNS}/{run_id}/{stage}/batch/{session_id}/array-{number:04d}.json"
                store.write_json(list_key, {"manifests": group})
                submission = self._submit(
                    context, store, stage, run_id, number, group, first, list_key,
                    env={**forwarded, **reader.child_env(session, first)}, job_queue=job_queue,
                    job_definition=job_definition, tags=job_tags, needs_gpu=needs_gpu,
                )
                submissions.append(submission)
                return submission

            try:
                finals = self._submit_and_wait(context, store, stage, list(manifest_keys), job_queue, submit)
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
        name = re.sub(r"[^A-Za-z0-9_-]", "-", f"{self.job_name_prefix}-{stage}-{run_id[:8]}-{number:04d}")[:128]
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

    def in_flight(self, job_queue: str, also: Sequence[str] = ()) -> int:
        """Children of our jobs (name `<job_name_prefix>-…`) on the queue that are submitted and
        not finished: a plain job counts one, an array job its unfinished children. `also`: job
        ids to count even if ListJobs does not show them yet."""
        ids = set(also)
        paginator = self.client.get_paginator("list_jobs")
        for status in ACTIVE:
            for page in paginator.paginate(jobQueue=job_queue, jobStatus=status):
                for summary in page["jobSummaryList"]:
                    # AWS lists array parents here, never their children (moto lists both).
                    if summary["jobName"].startswith(f"{self.job_name_prefix}-") and ":" not in summary["jobId"]:
                        ids.add(summary["jobId"])
        return sum(_unfinished(job) for job in self._describe(sorted(ids)))

    def _submit_wave(
        self, store: ObjectStore, stage: str, job_queue: str, keys: list[str], first: int, number: int,
        submit: Callable[[int, int, list[str]], Submission],
    ) -> tuple[list[Submission], int]:
        """Under the submit lock: count the children in flight on the queue and submit what fits of
        keys[first:], in arrays of at most max_array_size (and AWS's limit). Returns the new
        submissions and the children in flight with them."""
        lock_prefix = f"{LOCKS}/{re.sub(r'[^A-Za-z0-9_.-]', '_', f'{self.job_name_prefix}-{job_queue}')}"
        array_size = min(self.max_array_size, ARRAY_SIZE_LIMIT)
        wave: list[Submission] = []
        with SubmitLock(store, lock_prefix, lease_s=self.lock_lease_s, wait_s=min(self.poll_interval_s, 1.0), sleep=self.sleep) as lock:
            try:
                busy = self.in_flight(job_queue, also=lock.recent)
            except (ClientError, BotoCoreError) as error:
                raise dg.Failure(description=f"AWS Batch did not list the jobs on queue {job_queue} (to count the "
                                 f"children in flight before submitting {stage}): {error}") from error
            room = self.max_in_flight - busy
            while room > 0 and first < len(keys):
                size = min(room, array_size, len(keys) - first)
                wave.append(submit(number + len(wave), first, keys[first : first + size]))
                lock.submitted.append(wave[-1].job_id)
                first, room = first + size, room - size
        return wave, busy + sum(len(submission.manifest_keys) for submission in wave)

    def _submit_and_wait(
        self, context, store: ObjectStore, stage: str, keys: list[str], job_queue: str,
        submit: Callable[[int, int, list[str]], Submission],
    ) -> dict[str, dict[str, Any]]:
        """Submit the chunks in waves that fit under max_in_flight and poll until every submission
        is finished; their last descriptions by job id."""
        delays = poll_delays(self.poll_interval_s, self.max_poll_interval_s)
        total, first, number = len(keys), 0, 0
        pending: dict[str, Submission] = {}
        finals: dict[str, dict[str, Any]] = {}
        last_progress, last_busy = "", -1
        while first < total or pending:
            if first < total:
                wave, busy = self._submit_wave(store, stage, job_queue, keys, first, number, submit)
                pending.update((submission.job_id, submission) for submission in wave)
                first, number = first + sum(len(s.manifest_keys) for s in wave), number + len(wave)
                if first < total and busy != last_busy:
                    context.log.info(f"{stage}: {total - first} chunks wait for room on {job_queue}: {busy} children of "
                                     f"{self.job_name_prefix} jobs in flight, max_in_flight {self.max_in_flight}")
                    last_busy = busy
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
                + (f", {total - first} not submitted yet" if first < total else "")
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


def _unfinished(job: Mapping[str, Any]) -> int:
    """How many children of a job are not finished (a plain job is one child)."""
    summary = (job.get("arrayProperties") or {}).get("statusSummary")
    if summary:
        return max(_size(job) - sum(summary.get(status, 0) for status in TERMINAL), 0)
    return 0 if job.get("status") in TERMINAL else _size(job)


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
