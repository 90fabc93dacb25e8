"""Dagster Pipes with many workers in one session: the local backend and the multi-child readers."""

import io
import os
import subprocess
import sys

import dagster as dg

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.compute.pipes import ChildChunksMessageReader, ChildFilesMessageReader, open_workers_session
from jadd_dagster.compute.worker import STAGE_SAMPLED, StoreMessageWriterChannel, result_key
from jadd_dagster.defs.compute_resources import ComputeBackend, LocalComputeBackend
from jadd_dagster.storage import LocalStore

CHILD_SCRIPT = """
import sys
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info(f"hello from worker {sys.argv[1]}")
    pipes.report_custom_message({"progress": f"scene-{sys.argv[1]}", "status": "ok"})
"""


def missing_log_task(index: int) -> SceneTask:
    """A scene that cannot be sampled (no log, no sampling settings): the worker records it as
    failed and goes on."""
    start = 1_000_000_000 + index * 20_000_000
    return SceneTask(f"nolog/{index:04d}", "nolog", index, start, start + 20_000_000, f"scenes/sampled/p/nolog/{index}")


def run_messages(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_local_backend_forwards_every_workers_messages_into_the_run_log(tmp_path):
    store = LocalStore(tmp_path)
    manifests = {
        "chunks/empty.json": ChunkManifest("c-empty", STAGE_SAMPLED, {}, store.url, "runs/r/results", []),
        "chunks/nolog.json": ChunkManifest("c-nolog", STAGE_SAMPLED, {}, store.url, "runs/r/results", [missing_log_task(0), missing_log_task(1)]),
        "chunks/broken.json": ChunkManifest("c-broken", "no-such-stage", {}, store.url, "runs/r/results", [missing_log_task(2)]),
    }
    for key, manifest in manifests.items():
        store.write_json(key, manifest.to_json())
    finished = []

    @dg.asset
    def sampled(context: dg.AssetExecutionContext, compute: ComputeBackend) -> dg.MaterializeResult:
        outcomes = compute.run_chunks(context, store, list(manifests), stage="sampled", tags={"dataset": "demo"},
                                      on_done=lambda outcome, done, total: finished.append((done, total)))
        return dg.MaterializeResult(metadata={"returncodes": {o.manifest_key: o.returncode for o in outcomes}})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([sampled], resources={"compute": LocalComputeBackend(max_workers=2)}, instance=instance)
    codes = result.asset_materializations_for_node("sampled")[0].metadata["returncodes"].value
    assert codes["chunks/empty.json"] == 0 and codes["chunks/nolog.json"] == 0 and codes["chunks/broken.json"] != 0
    assert sorted(finished) == [(1, 3), (2, 3), (3, 3)]
    # The result records stay the source of truth.
    assert store.read_json(result_key("runs/r/results", "nolog/0001"))["status"] == "failed"

    messages = run_messages(result, instance)
    # Pipes log messages of the workers.
    assert any(m.startswith("[c-nolog] nolog/0000 failed:") for m in messages)
    assert "[c-nolog] finished: 0 scenes ok, 2 failed" in messages
    assert "[c-empty] finished: 0 scenes ok, 0 failed" in messages
    # The crashed worker closed its stream with its exception; nobody was left unclosed.
    assert any("closed with exception" in m for m in messages)
    assert not any("did not receive" in m or "sent no messages" in m for m in messages)


def test_the_reader_tolerates_a_worker_that_writes_nothing(tmp_path):
    progress = []

    @dg.asset
    def three_workers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        reader = ChildFilesMessageReader(3, log=context.log, on_custom_message=lambda child, payload: progress.append((child, payload)))
        with open_workers_session(context, reader) as session:
            for child in (0, 2):  # worker 1 never starts
                env = {**reader.child_env(session, child), "PATH": "/usr/bin:/bin"}
                subprocess.run([sys.executable, "-c", CHILD_SCRIPT, str(child)], env=env, check=True)
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([three_workers], instance=instance)
    assert result.success
    messages = run_messages(result, instance)
    assert "hello from worker 0" in messages and "hello from worker 2" in messages
    assert sorted(progress) == [(0, {"progress": "scene-0", "status": "ok"}), (2, {"progress": "scene-2", "status": "ok"})]
    assert any("1 sent no messages (child-1)" in m for m in messages)
    assert not any("did not receive" in m for m in messages)  # the session is not left waiting


STORE_WRITER_SCRIPT = "from jadd_dagster.compute.worker import StoreMessageWriter\n" + CHILD_SCRIPT.replace(
    "open_dagster_pipes()", "open_dagster_pipes(message_writer=StoreMessageWriter())")


def run_array_children(store) -> tuple[list[str], list[int]]:
    """Three workers in one session, as on AWS Batch past max_array_size: an array job of two
    children, then a plain job, all running at once as on Batch (each child's Pipes upload loop
    ends within its 1 s poll after close, which one after another paid three times). (The run's
    log messages, the children whose progress arrived.)"""
    progress = []

    @dg.asset
    def array_job(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        reader = ChildChunksMessageReader(store, "pipes/run/sampled", 3, interval=0.1, log=context.log,
                                          on_custom_message=lambda child, payload: progress.append(child))
        with open_workers_session(context, reader) as session:
            children = []
            for first, array_indexes in ((0, ("0", "1")), (2, (None,))):
                env = reader.child_env(session, first)  # one environment per submission
                for index in array_indexes:
                    child_env = {**os.environ, **env, **({"AWS_BATCH_JOB_ARRAY_INDEX": index} if index else {})}
                    children.append(subprocess.Popen([sys.executable, "-c", STORE_WRITER_SCRIPT, str(first + int(index or 0))],
                                                     env=child_env))
            assert [child.wait(timeout=120) for child in children] == [0, 0, 0]
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([array_job], instance=instance)
    return run_messages(result, instance), progress


def test_array_children_write_chunks_under_their_own_prefix_and_all_are_read(tmp_path):
    store = LocalStore(tmp_path)
    messages, progress = run_array_children(store)
    assert {"hello from worker 0", "hello from worker 1", "hello from worker 2"} <= set(messages)
    assert sorted(progress) == [0, 1, 2]
    assert sorted(store.list_keys("pipes/run/sampled")) == [f"pipes/run/sampled/child-{i}/1.json" for i in range(3)]
    assert not any("did not receive" in m or "sent no messages" in m for m in messages)


def test_array_children_messages_travel_through_s3(s3_store, s3_server, monkeypatch):
    for name, value in {"JADD_S3_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_REGION": s3_server.region}.items():
        monkeypatch.setenv(name, value)  # the workers inherit these
    messages, progress = run_array_children(s3_store)
    assert {"hello from worker 0", "hello from worker 1", "hello from worker 2"} <= set(messages)
    assert sorted(progress) == [0, 1, 2]
    assert sorted(s3_store.list_keys("pipes/run/sampled")) == [f"pipes/run/sampled/child-{i}/1.json" for i in range(3)]


def test_a_retried_worker_continues_the_chunk_numbering_of_its_earlier_attempt(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("p/child-4/1.json", b"{}")
    store.put_bytes("p/child-4/2.json", b"{}")
    channel = StoreMessageWriterChannel(store, "p/child-4", interval=10)
    channel.upload_messages_chunk(io.StringIO('{"method": "opened"}'), 1)
    assert store.get_bytes("p/child-4/3.json") == b'{"method": "opened"}'


def test_progress_lines_are_summarised_not_one_per_scene():
    from jadd_dagster.compute.pipes import progress_logger

    lines, now = [], [0.0]
    log = type("Log", (), {"info": lambda self, m: lines.append(m)})()
    forward = progress_logger(log, "sampled", every_s=10.0, clock=lambda: now[0])
    for i in range(100):  # 100 scenes over 25 s of worker time
        now[0] = i * 0.25
        forward(0, {"progress": f"l/{i:04d}", "status": "failed" if i % 10 == 0 else "ok"})
    assert lines == ["sampled: 41 scenes done so far (5 failed)", "sampled: 81 scenes done so far (9 failed)"]
