"""AWS Batch backend: moto's Batch control plane, with a fake compute environment that runs each
submitted job's command as a local process (moto without Docker would mark every job SUCCEEDED the
moment it is submitted)."""

import copy
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.batch.models import Job, batch_backends
from moto.batch_simple.models import BatchSimpleBackend

from jadd_dagster.compute import batch as batch_module
from jadd_dagster.compute.batch import PipesBatchClient, SubmitLock, chunk_outcome, poll_delays, retry_strategy
from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.compute.worker import STAGE_SAMPLED
from jadd_dagster.defs.compute_resources import BatchComputeBackend
from jadd_dagster.storage import LocalStore

pytestmark = pytest.mark.batch

REGION = "us-east-1"
WORKER = [sys.executable, "-m", "jadd_dagster.compute.worker"]
BRIEF_CHILD = [sys.executable, "-c", "import time; time.sleep(0.3)"]  # a child that takes a moment and says nothing
COST_TAGS = {"dataset": "demo", "dagster_run_id": "run-1", "stage": "sampled"}
ESSENTIAL_EXITED = "Essential container in task exited"


class FakeComputeEnvironment:
    """Runs submitted jobs like a compute environment would, through moto's job objects.

    behaviour(job_id, array_index) says what happens to a job: "run" its command (with
    AWS_BATCH_JOB_ARRAY_INDEX set), "hang" until terminated, or ("fail", exit_code, status_reason)
    without running. Terminating an array job terminates its children, as on AWS.
    """

    def __init__(self, monkeypatch, behaviour=lambda job_id, index: "run"):
        self.behaviour = behaviour
        self.pool = ThreadPoolExecutor(4)
        self.processes_started = 0
        # Children submitted and not yet stopped, by job name, and the most ever at one moment.
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight = 0
        self.most_names_at_once = 0
        fake = self

        def accept(backend, include_start_attempt, job):  # replaces "mark it finished" in moto
            backend.backend._jobs[job.job_id] = job
            job.log_stream_name = job._stream_name
            if include_start_attempt:  # a plain job or an array child; an array parent only tracks
                with fake.lock:
                    fake.in_flight[job.job_name] += 1
                    fake.most_in_flight = max(fake.most_in_flight, sum(fake.in_flight.values()))
                    fake.most_names_at_once = max(fake.most_names_at_once, len(+fake.in_flight))
                fake.pool.submit(fake._execute, backend.backend, job)

        original_describe = Job.describe

        def describe(job):  # as on AWS, a finished container reports its exit code and reason
            result = original_describe(job)
            if job.job_stopped and "container" in result:
                if job.exit_code is not None:
                    result["container"]["exitCode"] = job.exit_code
                if getattr(job, "fake_container_reason", None):
                    result["container"]["reason"] = job.fake_container_reason
            return result

        monkeypatch.setattr(BatchSimpleBackend, "_mark_job_as_finished", accept)
        monkeypatch.setattr(Job, "describe", describe)

    def _execute(self, backend, job):
        parent = self._parent(backend, job)
        index = int(job.job_id.rsplit(":", 1)[1]) if parent else None
        what = self.behaviour(job.job_id, index)
        job.job_started_at = datetime.now()
        job.status = "RUNNING"
        job._start_attempt()
        if what == "run":
            overrides = job.container_overrides
            env = {**os.environ, **{e["name"]: e["value"] for e in overrides.get("environment", [])}, "AWS_BATCH_JOB_ID": job.job_id}
            if index is not None:
                env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(index)
            self.processes_started += 1
            process = subprocess.Popen(overrides["command"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while process.poll() is None:
                if self._terminated(job, parent):
                    process.kill()
                time.sleep(0.02)
            exit_code = process.returncode
            reason = ESSENTIAL_EXITED if exit_code else None
        elif what == "hang":
            deadline = time.monotonic() + 30  # never outlive the test by much, even if nobody terminates it
            while not self._terminated(job, parent) and time.monotonic() < deadline:
                time.sleep(0.02)
            exit_code, reason = None, None
        else:
            _, exit_code, reason = what
        if self._terminated(job, parent):
            job.job_stopped_reason = job.job_stopped_reason or parent.job_stopped_reason
        elif reason:
            job.job_stopped_reason = reason
        job.exit_code = exit_code
        if exit_code and reason == ESSENTIAL_EXITED:
            job.fake_container_reason = f"worker exited with {exit_code}"
        with self.lock:  # out of flight before anyone can see it finished
            self.in_flight[job.job_name] -= 1
        job._mark_stopped(success=exit_code == 0 and not self._terminated(job, parent))
        if parent is not None:
            children = parent._child_jobs or []
            if len(children) == parent.array_properties["size"] and all(c.job_stopped for c in children):
                parent._mark_stopped(success=all(c.status == "SUCCEEDED" for c in children))

    @staticmethod
    def _parent(backend, job):
        if ":" not in job.job_id:
            return None
        parent_id = job.job_id.rsplit(":", 1)[0]
        while parent_id not in backend._jobs or backend._jobs[parent_id]._child_jobs is None:
            time.sleep(0.01)  # moto registers the parent after its children
        return backend._jobs[parent_id]

    @staticmethod
    def _terminated(job, parent) -> bool:
        return job.stop or (parent is not None and parent.stop)


@pytest.fixture
def aws(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"batch": {"use_docker": False}}):
        role = boto3.client("iam").create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        batch = boto3.client("batch", region_name=REGION)
        environment = batch.create_compute_environment(
            computeEnvironmentName="jadd", type="UNMANAGED", state="ENABLED", serviceRole=role)["computeEnvironmentArn"]
        for queue in ("cpu", "gpu"):
            batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                                   computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}])
        for definition in ("worker", "gpu-worker"):
            batch.register_job_definition(jobDefinitionName=definition, type="container",
                                          containerProperties={"image": "jadd:latest", "vcpus": 1, "memory": 2048})
        yield batch


def record_calls(client, operation: str) -> list[dict]:
    """The parameters of every `operation` call made through this client (what AWS would get)."""
    calls = []
    client.meta.events.register(f"provide-client-params.batch.{operation}", lambda params, **kw: calls.append(copy.deepcopy(params)))
    return calls


def empty_chunks(store: LocalStore, n: int, stage: str = STAGE_SAMPLED, prefix: str = "chunks") -> list[str]:
    keys = []
    for i in range(n):
        key = f"{prefix}/{i:05d}.json"
        store.write_json(key, ChunkManifest(f"c{i}", stage, {}, store.url, "runs/r/results", []).to_json())
        keys.append(key)
    return keys


def unsampleable_task(index: int) -> SceneTask:
    """A scene that fails cleanly: no log, no sampling settings. The worker records it and goes on."""
    start = 1_000_000_000 + index * 20_000_000
    return SceneTask(f"nolog/{index:04d}", "nolog", index, start, start + 20_000_000, f"scenes/sampled/p/nolog/{index}")


def materialize_stage(run_chunks) -> tuple[dg.ExecuteInProcessResult, list[str], dict]:
    """Run run_chunks(context) in a one-asset Dagster run; (result, the run's log messages, what it returned)."""
    returned = {}

    @dg.asset
    def stage(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        returned["run_id"] = context.run.run_id
        returned["outcomes"] = run_chunks(context)
        return dg.MaterializeResult()

    with dg.DagsterInstance.ephemeral() as instance:  # closed in this thread (tests run stages in threads too)
        result = dg.materialize([stage], instance=instance, raise_on_error=False)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result, messages, returned


def test_poll_delays_grow_exponentially_and_are_capped():
    assert list(itertools.islice(poll_delays(5, 60), 7)) == [5, 10, 20, 40, 60, 60, 60]
    assert list(itertools.islice(poll_delays(0.5, 0.5), 3)) == [0.5, 0.5, 0.5]


def test_an_array_job_runs_one_worker_per_chunk_and_every_workers_messages_are_read(aws, monkeypatch, tmp_path):
    FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 3)
    store.write_json(keys[1], ChunkManifest("c1", STAGE_SAMPLED, {}, store.url, "runs/r/results", [unsampleable_task(0)]).to_json())
    submits = record_calls(aws, "SubmitJob")
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        time.sleep(seconds)

    client = PipesBatchClient(aws, poll_interval_s=0.05, max_poll_interval_s=0.2, worker_command=WORKER, sleep=sleep)
    finished = []
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, keys, stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS,
        on_done=lambda outcome, done, total: finished.append((done, total))))
    assert result.success
    assert [(o.manifest_key, o.returncode) for o in returned["outcomes"]] == [(k, 0) for k in keys]
    assert finished == [(1, 3), (2, 3), (3, 3)]
    assert store.read_json("runs/r/results/nolog__0000.json")["status"] == "failed"  # the record decides

    [request] = submits
    assert request["arrayProperties"] == {"size": 3}
    assert request["jobQueue"] == "cpu" and request["jobDefinition"] == "worker"
    assert COST_TAGS.items() <= request["tags"].items() and request["tags"]["dagster/run-id"] == returned["run_id"]
    assert request["propagateTags"] is True
    assert request["timeout"] == {"attemptDurationSeconds": 3600}
    assert request["retryStrategy"] == retry_strategy(3)
    assert {"onStatusReason": "Host EC2*", "action": "RETRY"} in request["retryStrategy"]["evaluateOnExit"]
    assert request["retryStrategy"]["evaluateOnExit"][-1] == {"onReason": "*", "action": "EXIT"}
    overrides = request["containerOverrides"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= {e["name"] for e in overrides["environment"]}
    assert "resourceRequirements" not in overrides
    command = overrides["command"]
    assert command[: len(WORKER)] == WORKER and command[command.index("--store") + 1] == store.url
    assert store.read_json(command[command.index("--manifest-list") + 1]) == {"manifests": keys}

    # Every child's messages, each under its own prefix, reached the run's log.
    assert {f"[c{i}] finished: {0} scenes ok, {int(i == 1)} failed" for i in range(3)} <= set(messages)
    assert any(m.startswith("[c1] nolog/0000 failed:") for m in messages)
    assert any(m.startswith("sampled on AWS Batch: 3/3 chunks finished (0 failed)") for m in messages)
    assert not any("did not receive" in m or "sent no messages" in m for m in messages)
    # The waits followed the backoff schedule.
    assert sleeps == list(itertools.islice(poll_delays(0.05, 0.2), len(sleeps)))


def test_failed_and_timed_out_children_come_back_with_exit_codes_and_reasons_on_the_gpu_queue(aws, monkeypatch, tmp_path):
    def behaviour(job_id, index):
        return ("fail", None, "Job attempt duration exceeded timeout") if index == 2 else "run"

    FakeComputeEnvironment(monkeypatch, behaviour)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 3)
    store.write_json(keys[1], ChunkManifest("c1", "no-such-stage", {}, store.url, "runs/r/results", [unsampleable_task(0)]).to_json())
    backend = BatchComputeBackend(
        job_queue="cpu", gpu_job_queue="gpu", job_definition="worker", gpu_job_definition="gpu-worker",
        region_name=REGION, poll_interval_s=0.05, max_poll_interval_s=0.1, worker_command=WORKER, attempt_duration_s=900)
    result, messages, returned = materialize_stage(lambda context: backend.run_chunks(
        context, store, keys, stage="autolabel", tags=COST_TAGS, needs_gpu=True))
    assert result.success  # failed children are outcomes, not a failed step: the records decide
    ok, crashed, timed_out = returned["outcomes"]
    assert ok.returncode == 0 and ok.stderr_tail == ""
    assert crashed.returncode == 1
    assert ESSENTIAL_EXITED in crashed.stderr_tail and "container: worker exited with 1" in crashed.stderr_tail
    assert "exit code 1" in crashed.stderr_tail
    assert timed_out.returncode == -1 and "Job attempt duration exceeded timeout" in timed_out.stderr_tail
    assert all("\n" not in o.stderr_tail for o in returned["outcomes"])  # dispatch shows the last line
    assert any(m.startswith(f"autolabel: chunk {keys[1]} failed on AWS Batch") for m in messages)
    assert any(m.startswith(f"autolabel: chunk {keys[2]} failed on AWS Batch") for m in messages)
    assert any("closed with exception" in m for m in messages)  # the crashed worker said why
    assert any("1 sent no messages (child-2)" in m for m in messages)  # the timed-out one never started

    [job] = [j for j in aws.list_jobs(jobQueue="gpu", jobStatus="FAILED")["jobSummaryList"] if ":" not in j["jobId"]]
    described = aws.describe_jobs(jobs=[job["jobId"]])["jobs"][0]  # the array parent, failed with a child
    assert described["arrayProperties"]["size"] == 3
    assert described["jobDefinition"].endswith("job-definition/gpu-worker:1")
    assert described["timeout"] == {"attemptDurationSeconds": 900}
    assert COST_TAGS.items() <= described["tags"].items()
    child = aws.describe_jobs(jobs=[f"{job['jobId']}:0"])["jobs"][0]
    assert child["container"]["command"][-2] == "--manifest-list"
    assert child["container"]["command"][-1].startswith(f"runs/{returned['run_id']}/autolabel/batch/")
    moto_job = batch_backends["123456789012"][REGION]._jobs[job["jobId"]]  # moto keeps what its API does not return
    assert moto_job.container_overrides["resourceRequirements"] == [{"type": "GPU", "value": "1"}]


def record_job_ids(client) -> list[str]:
    """The ids of the jobs that submit_job calls through this client created."""
    ids = []
    client.meta.events.register("after-call.batch.SubmitJob", lambda parsed, **kw: ids.append(parsed["jobId"]))
    return ids


@pytest.mark.parametrize("interruption", [dg.DagsterExecutionInterruptedError, KeyboardInterrupt])
def test_cancelling_the_run_terminates_every_submitted_job(aws, monkeypatch, tmp_path, interruption):
    FakeComputeEnvironment(monkeypatch, behaviour=lambda job_id, index: "hang")
    store = LocalStore(tmp_path)
    terminations = record_calls(aws, "TerminateJob")
    job_ids = record_job_ids(aws)
    polls = itertools.count()

    def sleep(seconds):
        if next(polls) == 2:  # Dagster raises DagsterExecutionInterruptedError in the step on cancellation
            raise interruption()
        time.sleep(0.02)

    client = PipesBatchClient(aws, max_array_size=2, worker_command=WORKER, sleep=sleep)
    try:
        result, messages, returned = materialize_stage(lambda context: client.run(
            context, store, empty_chunks(store, 3), stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))
        assert not result.success
    except KeyboardInterrupt:
        pass
    array_id, plain_id = job_ids  # an array of two chunks and a plain job of one
    assert [t["jobId"] for t in terminations] == [array_id, plain_id]
    assert all(t["reason"].startswith("Dagster run ") and "stage sampled" in t["reason"] for t in terminations)
    everything = [array_id, f"{array_id}:0", f"{array_id}:1", plain_id]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the fake stops the containers a moment later, as AWS would
        statuses = [job["status"] for job in aws.describe_jobs(jobs=everything)["jobs"]]
        if statuses == ["FAILED"] * 4:
            break
        time.sleep(0.05)
    assert statuses == ["FAILED"] * 4


def test_more_chunks_than_the_array_limit_go_in_several_jobs(aws, monkeypatch, tmp_path):
    fake = FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 5)
    submits = record_calls(aws, "SubmitJob")
    client = PipesBatchClient(aws, max_array_size=2, poll_interval_s=0.05, max_poll_interval_s=0.1, worker_command=WORKER)
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, keys, stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))
    assert result.success
    assert [s.get("arrayProperties") for s in submits] == [{"size": 2}, {"size": 2}, None]  # one chunk: a plain job
    lists = [s["containerOverrides"]["command"][-1] for s in submits]
    assert [store.read_json(k)["manifests"] for k in lists] == [keys[0:2], keys[2:4], keys[4:5]]
    assert [o.manifest_key for o in returned["outcomes"]] == keys and {o.returncode for o in returned["outcomes"]} == {0}
    assert fake.processes_started == 5
    assert {f"[c{i}] finished: 0 scenes ok, 0 failed" for i in range(5)} <= set(messages)  # children 0..4, no clash
    assert not any("did not receive" in m or "sent no messages" in m for m in messages)


@pytest.mark.parametrize("queue, definition, said", [
    ("cpu", "no-such-definition", "AWS Batch did not accept the sampled job"),
    ("no-such-queue", "worker", "AWS Batch did not list the jobs on queue no-such-queue"),
])
def test_a_submission_that_aws_batch_rejects_fails_the_step(aws, monkeypatch, tmp_path, queue, definition, said):
    FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    client = PipesBatchClient(aws, worker_command=WORKER)
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, empty_chunks(store, 2), stage="sampled", job_queue=queue, job_definition=definition, tags=COST_TAGS))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert said in failure.step_failure_data.error.message
    assert (definition if queue == "cpu" else queue) in failure.step_failure_data.error.message


def test_when_a_later_submission_is_rejected_the_earlier_jobs_are_terminated(aws, monkeypatch, tmp_path):
    FakeComputeEnvironment(monkeypatch, behaviour=lambda job_id, index: "hang")
    store = LocalStore(tmp_path)
    job_ids = record_job_ids(aws)
    terminations = record_calls(aws, "TerminateJob")
    submits = itertools.count()

    def reject_the_second(**kwargs):
        if next(submits) == 1:
            raise ClientError({"Error": {"Code": "ClientException", "Message": "job queue cpu is DISABLED"}}, "SubmitJob")

    aws.meta.events.register("before-call.batch.SubmitJob", reject_the_second)
    client = PipesBatchClient(aws, max_array_size=2, worker_command=WORKER)
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, empty_chunks(store, 3), stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))
    assert not result.success
    assert [t["jobId"] for t in terminations] == job_ids and len(job_ids) == 1
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "job queue cpu is DISABLED" in failure.step_failure_data.error.message


def test_a_failed_job_outcome_names_every_reason_on_one_line():
    outcome = chunk_outcome("chunks/1.json", "job-1:4", {
        "status": "FAILED", "statusReason": "Host EC2 (instance i-1) terminated.", "startedAt": 1_000, "stoppedAt": 61_000,
        "container": {"exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"}})
    assert outcome.returncode == 137 and outcome.seconds == 60.0
    assert outcome.stderr_tail == ("AWS Batch job job-1:4 failed; Host EC2 (instance i-1) terminated.; "
                                   "container: OutOfMemoryError: Container killed due to memory usage; exit code 137")
    assert chunk_outcome("k", "job-2", None).returncode == -1


def submitted_sizes(submits: list[dict]) -> list[int]:
    return [(s.get("arrayProperties") or {}).get("size", 1) for s in submits]


def test_never_more_children_in_flight_than_the_cap(aws, monkeypatch, tmp_path):
    fake = FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 12)
    submits = record_calls(aws, "SubmitJob")
    client = PipesBatchClient(aws, max_in_flight=5, poll_interval_s=0.05, max_poll_interval_s=0.1, worker_command=BRIEF_CHILD)
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, keys, stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))
    assert result.success
    assert fake.most_in_flight == 5  # the cap was reached and never passed
    assert [(o.manifest_key, o.returncode) for o in returned["outcomes"]] == [(k, 0) for k in keys]
    assert fake.processes_started == 12
    sizes = submitted_sizes(submits)
    assert sizes[0] == 5 and sum(sizes) == 12 and len(sizes) > 2  # waves as room opened
    lists = [store.read_json(s["containerOverrides"]["command"][-1])["manifests"] for s in submits]
    assert [key for manifests in lists for key in manifests] == keys  # each chunk once, in order
    assert any(m.startswith("sampled: 7 chunks wait for room on cpu: 5 children of jadd jobs in flight") for m in messages)
    assert any(m.endswith("7 not submitted yet") for m in messages)


def test_concurrent_stage_runs_share_the_cap(aws, monkeypatch, tmp_path):
    fake = FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)  # the deployment's store, where the submit lock lives
    keys = {run: empty_chunks(store, 6, prefix=f"{run}/chunks") for run in ("a", "b")}

    def stage_run(run: str):
        client = PipesBatchClient(aws, max_in_flight=4, poll_interval_s=0.05, max_poll_interval_s=0.1, worker_command=BRIEF_CHILD)
        return materialize_stage(lambda context: client.run(
            context, store, keys[run], stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(stage_run, ["a", "b"]))
    for (result, messages, returned), run in zip(results, "ab"):
        assert result.success
        assert [(o.manifest_key, o.returncode) for o in returned["outcomes"]] == [(k, 0) for k in keys[run]]
    assert fake.most_in_flight <= 4
    assert fake.processes_started == 12
    assert fake.most_names_at_once >= 2  # the runs did overlap: they shared the cap rather than took turns
    assert store.list_children("locks/batch-submit/jadd-cpu")  # one lock for both


def test_a_stage_past_the_array_limit_is_submitted_in_several_arrays(aws, monkeypatch, tmp_path):
    monkeypatch.setattr(batch_module, "ARRAY_SIZE_LIMIT", 4)  # AWS's is 10,000
    fake = FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 10)
    submits = record_calls(aws, "SubmitJob")
    client = PipesBatchClient(aws, poll_interval_s=0.05, max_poll_interval_s=0.1, worker_command=BRIEF_CHILD)
    result, messages, returned = materialize_stage(lambda context: client.run(
        context, store, keys, stage="sampled", job_queue="cpu", job_definition="worker", tags=COST_TAGS))
    assert result.success
    assert submitted_sizes(submits) == [4, 4, 2]
    lists = [store.read_json(s["containerOverrides"]["command"][-1])["manifests"] for s in submits]
    assert lists == [keys[0:4], keys[4:8], keys[8:10]]
    assert [(o.manifest_key, o.returncode) for o in returned["outcomes"]] == [(k, 0) for k in keys]
    assert fake.processes_started == 10


def test_in_flight_counts_the_unfinished_children_of_our_jobs_only(aws, monkeypatch, tmp_path):
    FakeComputeEnvironment(monkeypatch, behaviour=lambda job_id, index: "hang")
    client = PipesBatchClient(aws)

    def submit(name, size=None):
        request = {"jobName": name, "jobQueue": "cpu", "jobDefinition": "worker"}
        if size:
            request["arrayProperties"] = {"size": size}
        return aws.submit_job(**request)["jobId"]

    finished = submit("jadd-sampled-cccc-0000", 2)
    aws.terminate_job(jobId=finished, reason="finished early")
    deadline = time.monotonic() + 5
    while aws.describe_jobs(jobs=[finished])["jobs"][0]["status"] != "FAILED" and time.monotonic() < deadline:
        time.sleep(0.02)
    jobs = [submit("jadd-sampled-aaaa-0000", 2), submit("other-app-0000"), submit("jadd-sampled-bbbb-0000")]  # the fake runs 4 at a time
    try:
        assert client.in_flight("cpu") == 2 + 1  # the array's two children and the plain job; not other-app's, not finished ones
        assert PipesBatchClient(aws, job_name_prefix="other").in_flight("cpu") == 1
        assert client.in_flight("gpu") == 0
    finally:
        for job_id in jobs:
            aws.terminate_job(jobId=job_id, reason="test over")


def test_the_submit_lock_admits_one_holder_at_a_time(tmp_path):
    store = LocalStore(tmp_path)
    first = SubmitLock(store, "locks/q").__enter__()
    first.submitted.append("job-1")
    waits = []

    def sleep(seconds):  # the second contender waits twice, then the first lets go
        waits.append(seconds)
        if len(waits) == 2:
            first.__exit__(None, None, None)

    second = SubmitLock(store, "locks/q", wait_s=0.5, sleep=sleep).__enter__()
    assert waits == [0.5, 0.5]
    assert (first.number, second.number) == (1, 2)
    assert second.recent == ["job-1"]  # what the holder before it submitted counts even if ListJobs lags
    second.__exit__(None, None, None)


def test_a_dead_holders_lock_expires(tmp_path):
    store = LocalStore(tmp_path)
    SubmitLock(store, "locks/q", lease_s=0.0).__enter__()  # never released

    def sleep(seconds):
        raise AssertionError("an expired lock must not be waited for")

    with SubmitLock(store, "locks/q", sleep=sleep) as lock:
        assert lock.number == 2


def test_the_submit_lock_works_on_s3(s3_store):
    first = SubmitLock(s3_store, "locks/q").__enter__()
    assert not first._create(first._key(1), b"{}")  # If-None-Match: the number is taken
    first.__exit__(None, None, None)
    with SubmitLock(s3_store, "locks/q") as second:
        assert second.number == 2


def test_sentry_settings_reach_the_children_and_secrets_are_refused(aws, monkeypatch, tmp_path):
    FakeComputeEnvironment(monkeypatch)
    monkeypatch.setenv("SENTRY_DSN", "http://public@127.0.0.1:9/1")
    monkeypatch.delenv("SENTRY_RELEASE", raising=False)
    store = LocalStore(tmp_path)
    backend = BatchComputeBackend(job_queue="cpu", gpu_job_queue="gpu", job_definition="worker", gpu_job_definition="gpu-worker",
                                  region_name=REGION, poll_interval_s=0.05, worker_command=BRIEF_CHILD)
    result, messages, returned = materialize_stage(lambda context: backend.run_chunks(
        context, store, empty_chunks(store, 1), stage="sampled", tags=COST_TAGS))
    assert result.success
    [job] = aws.list_jobs(jobQueue="cpu", jobStatus="SUCCEEDED")["jobSummaryList"]
    environment = {e["name"]: e["value"] for e in aws.describe_jobs(jobs=[job["jobId"]])["jobs"][0]["container"]["environment"]}
    assert environment["SENTRY_DSN"] == "http://public@127.0.0.1:9/1"
    assert "SENTRY_RELEASE" not in environment  # unset here: not passed on
    # The job definition's vCPUs, not the host's CPUs a container on EC2 would count.
    assert environment["JADD_SAMPLING_THREADS"] == "2"
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        PipesBatchClient(aws, forward_env=["SENTRY_DSN", "AWS_SECRET_ACCESS_KEY"])
