"""Sentry: what reaches a Sentry server from the workers and the code location, through the real
sentry-sdk transport to a recording endpoint on 127.0.0.1 (tests/services/sentry.py)."""

import os
import subprocess
import sys

import dagster as dg
import pytest
import sentry_sdk

from jadd_dagster import observability
from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.compute.worker import STAGE_SAMPLED, result_key
from jadd_dagster.defs.compute_resources import ComputeBackend, LocalComputeBackend
from jadd_dagster.defs.resources import RegistryResource
from jadd_dagster.observability import FILTERED, scrub_event
from jadd_dagster.storage import LocalStore

# Planted where they would leak if nothing scrubbed them.
AWS_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYplantedKEY01"
DB_PASSWORD = "hunter2-planted"
ACCESS_KEY_ID = "AKIAIOSFODNN7PLANTED"
PLANTED = (AWS_SECRET, DB_PASSWORD, ACCESS_KEY_ID)


def missing_log_task(log_id: str, index: int = 0) -> SceneTask:
    """A scene whose log is not in the store: the worker records it as failed and goes on."""
    start = 1_000_000_000 + index * 20_000_000
    return SceneTask(f"{log_id}/{index:04d}", log_id, index, start, start + 20_000_000, f"scenes/sampled/{log_id}/{index}")


def tags_of(event: dict) -> dict:
    tags = event.get("tags") or {}
    return dict(tags) if isinstance(tags, dict) else {key: value for key, value in tags}


def test_a_failed_scene_and_a_crashed_chunk_reach_sentry_with_their_tags_and_without_secrets(sentry_here, monkeypatch, tmp_path):
    endpoint = sentry_here
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "1.0")
    monkeypatch.setenv("SENTRY_PROFILES_SAMPLE_RATE", "1.0")
    store = LocalStore(tmp_path)
    bad_log = f"log-{AWS_SECRET}"  # in the scene's id and its log tag
    manifests = {
        "chunks/bad-scene.json": ChunkManifest("sampled-00000", STAGE_SAMPLED, {}, store.url, "runs/r/results",
                                               [missing_log_task(bad_log, 0)]),
        # An unknown stage crashes the worker; the manifest (with a database URL and an access key
        # id in its settings) is a local variable of the frames Sentry sends.
        "chunks/crash.json": ChunkManifest("sampled-00001", "no-such-stage",
                                           {"registry": f"postgresql://jadd:{DB_PASSWORD}@db:5432/jadd", "key_id": ACCESS_KEY_ID},
                                           store.url, "runs/r/results", [missing_log_task("log-b", 1)]),
    }
    for key, manifest in manifests.items():
        store.write_json(key, manifest.to_json())

    @dg.asset
    def sampled(context: dg.AssetExecutionContext, compute: ComputeBackend) -> dg.MaterializeResult:
        tags = {"jadd:dataset": "demo", "jadd:dagster_run_id": context.run.run_id, "jadd:stage": "sampled"}
        outcomes = compute.run_chunks(context, store, list(manifests), stage="sampled", tags=tags)
        return dg.MaterializeResult(metadata={"returncodes": [o.returncode for o in outcomes]})

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([sampled], resources={"compute": LocalComputeBackend(max_workers=2)}, instance=instance)
    run_id = result.run_id
    assert result.asset_materializations_for_node("sampled")[0].metadata["returncodes"].value == [0, 1]
    record = store.read_json(result_key("runs/r/results", f"{bad_log}/0000"))
    assert record["status"] == "failed"  # the record still decides

    def events(logger):
        return [e for e in endpoint.items("event") if e.get("logger") == logger]

    # The failed scene, from the worker, with the run's dataset and id from the Pipes extras.
    [scene] = endpoint.wait_for(lambda: events("jadd.scene"))
    assert tags_of(scene).items() >= {
        "dataset": "demo", "run": run_id, "stage": "sampled", "chunk": "sampled-00000",
        "scene": f"log-{FILTERED}/0000", "log": f"log-{FILTERED}", "component": "worker",
    }.items()
    [exception] = scene["exception"]["values"]
    assert f"{exception['type']}: {exception['value']}" == record["error"]  # the record's reason, as an exception
    assert scene["fingerprint"] == ["jadd-scene-failure", "sampled", exception["type"]]

    # The crashed worker: its exception with the stack, tagged with the chunk.
    [crash] = endpoint.wait_for(lambda: [e for e in endpoint.items("event") if e.get("logger") not in ("jadd.scene", "jadd.chunk")])
    assert tags_of(crash).items() >= {"dataset": "demo", "run": run_id, "stage": "no-such-stage", "chunk": "sampled-00001",
                                      "log": "log-b", "component": "worker"}.items()
    [exception] = crash["exception"]["values"]
    assert exception["type"] == "KeyError" and exception["stacktrace"]["frames"]
    assert any(frame.get("vars") for frame in exception["stacktrace"]["frames"])  # locals were sent, scrubbed

    # The same chunk as the backend saw it: exit code 1.
    [chunk] = endpoint.wait_for(lambda: events("jadd.chunk"))
    assert tags_of(chunk).items() >= {"dataset": "demo", "run": run_id, "stage": "sampled", "chunk": "sampled-00001",
                                      "log": "log-b", "backend": "local", "component": "dagster"}.items()
    assert chunk["exception"]["values"][0]["value"].startswith("chunk sampled-00001 exited with code 1: KeyError")

    # Tracing and profiling of the workers: a transaction per chunk, a span per scene, profiles.
    transactions = endpoint.wait_for(lambda: len(endpoint.items("transaction")) == 2 and endpoint.items("transaction"))
    traced = {t["transaction"]: t for t in transactions}
    assert set(traced) == {"worker sampled", "worker no-such-stage"}
    [span] = traced["worker sampled"]["spans"]
    assert span["op"] == "jadd.scene" and span["status"] == "internal_error"
    assert traced["worker no-such-stage"]["contexts"]["trace"]["status"] == "internal_error"
    endpoint.wait_for(lambda: len(endpoint.items("profile")) == 2)

    raw = endpoint.raw()
    assert all(secret.encode() not in raw for secret in PLANTED)
    assert b"postgresql://jadd:[Filtered]@db:5432/jadd" in raw  # scrubbed where it was, not just absent


def test_sentry_is_off_without_a_dsn_and_initialising_it_sends_nothing(sentry_endpoint):
    probe = ("import sys, jadd_dagster.definitions, jadd_dagster.observability as o; "
             "print(o.enabled(), 'sentry_sdk' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    # The two probes at once: each spends seconds importing the code location.
    off, on = [subprocess.Popen([sys.executable, "-c", probe], env=probe_env, stdout=subprocess.PIPE, text=True)
               for probe_env in (env, {**env, "SENTRY_DSN": sentry_endpoint.dsn})]
    (off_out, _), (on_out, _) = off.communicate(timeout=300), on.communicate(timeout=300)
    assert (off.returncode, on.returncode) == (0, 0)
    assert off_out.split() == ["False", "False"]  # not even imported
    assert on_out.split() == ["True", "True"]
    assert not sentry_endpoint.envelopes  # loading the code location sent nothing


def test_run_failures_are_reported_per_failed_step_with_the_dataset(sentry_here):
    endpoint = sentry_here
    datasets = dg.DynamicPartitionsDefinition(name=observability.DATASETS_PARTITIONS)

    @dg.asset(partitions_def=datasets)
    def jadd_dataset() -> None:
        raise ConnectionError(f"could not reach postgresql://jadd:{DB_PASSWORD}@db:5432/jadd")

    @dg.run_failure_sensor
    def sentry_run_failures(context: dg.RunFailureSensorContext):  # as the code location registers it
        observability.report_run_failure(context)

    defs = dg.Definitions(assets=[jadd_dataset], sensors=[sentry_run_failures])
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(datasets.name, ["demo"])
        result = dg.materialize([jadd_dataset], partition_key="demo", instance=instance, raise_on_error=False)
        assert not result.success
        [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="sentry_run_failures", dagster_event=failure.dagster_event, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id), repository_def=defs.get_repository_def(),
        ).for_run_failure()
        sentry_run_failures(context)

    [event] = endpoint.wait_for(lambda: [e for e in endpoint.items("event") if e.get("logger") == "jadd.run"])
    assert tags_of(event).items() >= {"dataset": "demo", "run": result.run_id, "stage": "jadd_dataset",
                                      "partition": "demo", "component": "dagster"}.items()
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ConnectionError"
    assert exception["value"] == f"could not reach postgresql://jadd:{FILTERED}@db:5432/jadd"
    assert "jadd_dataset" in event["extra"]["stack"]  # where it failed
    assert DB_PASSWORD.encode() not in endpoint.raw()


def test_a_run_over_other_partitions_has_no_dataset_tag(sentry_here):
    logs = dg.DynamicPartitionsDefinition(name="logs")

    @dg.asset(partitions_def=logs)
    def drive_logs() -> None:
        raise ValueError("bad log")

    defs = dg.Definitions(assets=[drive_logs])
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("logs", ["log-a"])
        result = dg.materialize([drive_logs], partition_key="log-a", instance=instance, raise_on_error=False)
        [failure] = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="s", dagster_event=failure.dagster_event, dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id), repository_def=defs.get_repository_def(),
        ).for_run_failure()
        assert observability.report_run_failure(context) == 1
    [event] = sentry_here.wait_for(lambda: sentry_here.items("event"))
    assert tags_of(event)["partition"] == "log-a" and "dataset" not in tags_of(event)


def test_scrubbing_removes_secrets_wherever_they_are_and_keeps_the_rest(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("JADD_REGISTRY_URL", "sqlite:////data/planted-registry.db")  # a dg.EnvVar of the code location
    monkeypatch.setattr(observability, "_secret_env", set())
    defs = dg.Definitions(resources={"registry": RegistryResource(url=dg.EnvVar("JADD_REGISTRY_URL"))})
    assert observability.init_code_location(defs) is False  # no DSN: off, but it learnt the EnvVar names
    event = {
        "message": f"failed with {AWS_SECRET} and password={DB_PASSWORD}; key {ACCESS_KEY_ID}",
        "tags": {"log": f"log-{AWS_SECRET}", "stage": "sampled"},
        "exception": {"values": [{"type": "OperationalError", "value": "sqlite:////data/planted-registry.db is locked",
                                  "stacktrace": {"frames": [{"vars": {
                                      "AWS_SESSION_TOKEN": "'anything'",
                                      "password": "'x'",
                                      "url": f"'postgresql+psycopg2://jadd:{DB_PASSWORD}@db/jadd'",
                                      "environment": [{"name": "JADD_DB_PASSWORD", "value": "plain"}, {"name": "STAGE", "value": "sampled"}],
                                      "sample_token": "'0123abcd'", "output_key": "'out/a/0'", "keyframe_hz": 2,
                                  }}]}}]},
        "breadcrumbs": {"values": [{"message": f"connecting to postgresql://jadd:{DB_PASSWORD}@db/jadd"}]},
    }
    scrubbed = scrub_event(event)
    assert scrubbed["message"] == f"failed with {FILTERED} and password={FILTERED}; key {FILTERED}"
    assert scrubbed["tags"] == {"log": f"log-{FILTERED}", "stage": "sampled"}
    [exception] = scrubbed["exception"]["values"]
    assert exception["value"] == f"{FILTERED} is locked"
    assert exception["stacktrace"]["frames"][0]["vars"] == {
        "AWS_SESSION_TOKEN": FILTERED,
        "password": FILTERED,
        "url": f"'postgresql+psycopg2://jadd:{FILTERED}@db/jadd'",
        "environment": [{"name": "JADD_DB_PASSWORD", "value": FILTERED}, {"name": "STAGE", "value": "sampled"}],
        "sample_token": "'0123abcd'", "output_key": "'out/a/0'", "keyframe_hz": 2,  # not secrets
    }
    assert scrubbed["breadcrumbs"]["values"][0]["message"] == f"connecting to postgresql://jadd:{FILTERED}@db/jadd"


def test_a_stage_with_many_failed_chunks_sends_a_bounded_number_of_events(sentry_here):
    failures = [{"chunk": f"sampled-{i:05d}", "returncode": 137, "reason": "OutOfMemoryError"} for i in range(23)]
    tags = {"jadd:dataset": "demo", "jadd:dagster_run_id": "run-1", "jadd:stage": "sampled"}
    assert observability.report_chunk_failures(failures, tags, "batch") == observability.MAX_CHUNK_EVENTS + 1
    events = sentry_here.wait_for(lambda: len(sentry_here.items("event")) == 21 and sentry_here.items("event"))
    assert sorted(tags_of(e).get("chunk", "") for e in events)[1:] == [f"sampled-{i:05d}" for i in range(20)]
    assert "3 more chunks of stage sampled failed" in [e["exception"]["values"][0]["value"] for e in events]


@pytest.mark.parametrize("value, rate", [("0.25", 0.25), ("", 0.0), ("2", 1.0), ("lots", 0.0)])
def test_sample_rates_come_from_the_environment(monkeypatch, value, rate):
    monkeypatch.setenv(observability.TRACES_RATE_ENV, value)
    assert observability._rate(observability.TRACES_RATE_ENV) == rate
