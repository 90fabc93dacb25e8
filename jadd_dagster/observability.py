"""Sentry for the Dagster code location and the chunk workers.

Off unless `SENTRY_DSN` is set: then nothing is initialised, sent or even imported (sentry_sdk
costs a worker ~0.3 s to import, and a worker starts per chunk). Initialising does no network I/O;
events go out from sentry-sdk's background thread.

    SENTRY_DSN                    where events go (unset: off)
    SENTRY_ENVIRONMENT, SENTRY_RELEASE   read by sentry-sdk itself
    SENTRY_TRACES_SAMPLE_RATE     0..1: share of worker chunks traced (a transaction per chunk, a
                                  span per scene); default 0
    SENTRY_PROFILES_SAMPLE_RATE   0..1: share of the traced chunks that are also profiled; default 0

What is reported, with the tags dataset, run, stage, chunk, scene, log where they are known (and
component: dagster | worker):
- a failed scene (the worker goes on; one event per scene, grouped by stage and exception type);
- a worker that crashes (the exception with its stack);
- a chunk that ends with a non-zero exit code, seen by the compute backend (also a container
  killed for memory, a timeout or a lost host, which the worker itself cannot report);
- a failed Dagster run: `report_run_failure(context)`, for a `dg.run_failure_sensor`.
The worker learns the dataset and run from the Pipes extras its backend sends (`tags`:
`jadd:dataset`, `jadd:dagster_run_id`, `jadd:stage`).

No secrets leave: every event and transaction goes through `scrub_event`, which replaces the
values of environment variables named like secrets (…SECRET…, …PASSWORD…, …TOKEN…, …KEY…) and of
the `dg.EnvVar`s the code location's resources read, wherever they appear; passwords in URLs
(`postgresql://user:…@host`); `password=…`-style pairs; AWS access key ids; and whatever sits under
a key named like a secret (frame variables, extras, `{"name": …, "value": …}` environment lists).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

DSN_ENV = "SENTRY_DSN"
TRACES_RATE_ENV = "SENTRY_TRACES_SAMPLE_RATE"
PROFILES_RATE_ENV = "SENTRY_PROFILES_SAMPLE_RATE"
# What a remote worker needs to report like the run does (compute/batch.py passes these on).
SENTRY_ENV_VARS = (DSN_ENV, "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", TRACES_RATE_ENV, PROFILES_RATE_ENV)
# The cost-allocation tags the backends pass to workers, and the Sentry tags they become.
JADD_TAGS = {"jadd:dataset": "dataset", "jadd:dagster_run_id": "run", "jadd:stage": "stage"}
DATASETS_PARTITIONS = "datasets"  # runs of assets partitioned by it are tagged with their dataset
MAX_CHUNK_EVENTS = 20  # per stage: past that, one event says how many more failed
FLUSH_TIMEOUT_S = 5.0
FILTERED = "[Filtered]"

_SECRET_ENV_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
_ENV_STYLE = re.compile(r"[A-Z][A-Z0-9_]*")
_SECRET_FIELD = re.compile(
    r"secret|passw|pwd|credential|authorization|cookie|private[_-]?key|access[_-]?key|api[_-]?key|session[_-]?key"
    r"|^(access|auth|api|bearer|id|refresh|session|security|csrf)?[_-]?token$",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/?#@]*:)([^\s@/]+)(@)")
_PAIR = re.compile(
    r"(\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|aws_secret_access_key|aws_session_token)\b[\"']?\s*[=:]\s*[\"']?)([^\s&;,\"']+)",
    re.IGNORECASE,
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b")
_MIN_SECRET_LENGTH = 4  # shorter values ("1", "on") would blank out unrelated text

_enabled = False
_secret_env: set[str] = set()


def enabled() -> bool:
    """Whether Sentry was initialised in this process."""
    return _enabled


def init_sentry(component: str, secret_env: Iterable[str] = ()) -> bool:
    """Initialise Sentry from SENTRY_DSN; does nothing (and returns False) when it is unset.

    component tags every event (dagster, worker). secret_env names environment variables whose
    values are scrubbed although their names do not look secret (a `dg.EnvVar` holding a
    database URL, say).
    """
    global _enabled
    _secret_env.update(secret_env)
    dsn = os.environ.get(DSN_ENV, "").strip()
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        traces_sample_rate=_rate(TRACES_RATE_ENV),
        profiles_sample_rate=_rate(PROFILES_RATE_ENV),
        send_default_pii=False,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        # Failures are reported by the functions here, with their tags; error log lines stay
        # breadcrumbs (Dagster logs every step failure, which report_run_failure covers).
        integrations=[LoggingIntegration(event_level=None)],
    )
    sentry_sdk.set_tag("component", component)
    if os.environ.get("AWS_BATCH_JOB_ID"):
        sentry_sdk.set_tag("aws_batch_job_id", os.environ["AWS_BATCH_JOB_ID"])
    _enabled = True
    return True


def init_code_location(defs: Any) -> bool:
    """Sentry for the code location (the webserver's and daemon's code servers and every run
    worker load it); the `dg.EnvVar`s of its resources are scrubbed. Off without SENTRY_DSN."""
    return init_sentry("dagster", secret_env=env_var_names(getattr(defs, "resources", None) or {}))


def env_var_names(resources: Mapping[str, Any]) -> list[str]:
    """The names of the `dg.EnvVar`s that configured resources read."""
    import dagster as dg

    names = []
    for resource in resources.values():
        for field in getattr(type(resource), "model_fields", {}):
            value = getattr(resource, field, None)
            if isinstance(value, dg.EnvVar):
                names.append(value.env_var_name)
    return names


def _rate(name: str) -> float:
    """A sample rate from the environment: 0..1, 0 when unset or not a number."""
    try:
        return min(max(float(os.environ.get(name) or 0), 0.0), 1.0)
    except ValueError:
        print(f"{name}={os.environ[name]!r} is not a number in 0..1; using 0", file=sys.stderr)
        return 0.0


# Scrubbing.


def looks_secret(name: str) -> bool:
    """Whether a key names a secret: SECRET/PASSWORD/TOKEN/KEY in an environment-style name
    (AWS_SECRET_ACCESS_KEY), or password/secret/token/api_key… in any other."""
    if _ENV_STYLE.fullmatch(name):
        return bool(_SECRET_ENV_NAME.search(name))
    return bool(_SECRET_FIELD.search(name))


def secret_values() -> list[str]:
    """The values of the secret environment variables now, longest first."""
    values = {
        value for name, value in os.environ.items()
        if (name in _secret_env or _SECRET_ENV_NAME.search(name)) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, FILTERED)
    text = _URL_PASSWORD.sub(rf"\1{FILTERED}\3", text)
    text = _PAIR.sub(rf"\1{FILTERED}", text)
    return _AWS_KEY_ID.sub(FILTERED, text)


def scrub_event(event: dict, hint: dict | None = None) -> dict:
    """before_send / before_send_transaction: the event without secrets (see the module's doc)."""
    return _scrub(event, secret_values())


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("name"), str) and "value" in value and looks_secret(value["name"]):
            return {**value, "value": FILTERED}  # [{"name": "AWS_SECRET_ACCESS_KEY", "value": ...}]
        return {
            key: FILTERED if isinstance(key, str) and looks_secret(key) and value[key] not in (None, "")
            else _scrub(value[key], secrets)
            for key in value
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(item, secrets) for item in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


# Reporting.


def stage_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """The Sentry tags (dataset, run, stage) of the cost-allocation tags a stage runs with."""
    return {JADD_TAGS[key]: str(value) for key, value in tags.items() if key in JADD_TAGS and value}


def _tag_value(value: Any) -> str:
    return " ".join(str(value).split())[:200]  # Sentry's limit; one line


def _error_event(kind: str, type_name: str, value: str, fingerprint: list[str], extra: Mapping[str, Any] | None = None) -> dict:
    """An error event for a failure known by its type and message (no Python stack here)."""
    return {
        "level": "error",
        "logger": f"jadd.{kind}",
        "exception": {"values": [{"type": type_name, "value": value, "mechanism": {"type": f"jadd.{kind}", "handled": True}}]},
        "fingerprint": fingerprint,
        "extra": dict(extra or {}),
    }


def _capture(event: dict, tags: Mapping[str, Any]) -> None:
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            if value not in (None, ""):
                scope.set_tag(key, _tag_value(value))
        sentry_sdk.capture_event(event)


def split_error(error: str) -> tuple[str, str]:
    """("KeyError", "'x'") from a result record's "KeyError: 'x'"."""
    type_name, sep, message = str(error).partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", type_name):
        return type_name, message
    return "Error", str(error)


class ChunkMonitor:
    """A worker's chunk as Sentry sees it: tags, the crash if there is one, a transaction with a
    span per scene when tracing is on, and one event per failed scene. Inert when Sentry is off.

    extras: the Pipes extras (`tags` with jadd:dataset / jadd:dagster_run_id), when Pipes is open.
    """

    def __init__(self, extras: Mapping[str, Any] | None = None):
        self.tags = stage_tags((extras or {}).get("tags") or {})
        self._logs: dict[str, str] = {}
        self._transaction = None

    def __enter__(self) -> "ChunkMonitor":
        if _enabled:
            import sentry_sdk

            sentry_sdk.set_tags(self.tags)
            self._transaction = sentry_sdk.start_transaction(op="jadd.chunk", name="jadd worker")
            self._transaction.__enter__()
        return self

    def chunk(self, manifest_key: str, manifest: Any) -> None:
        """The chunk being processed: its manifest (chunk_id, stage, scenes with log ids)."""
        self._logs = {task.scene_id: task.log_id for task in manifest.scenes}
        logs = sorted(set(self._logs.values()))
        self.tags.update(stage=manifest.stage, chunk=manifest.chunk_id)
        if len(logs) == 1:
            self.tags["log"] = logs[0]
        if _enabled:
            import sentry_sdk

            sentry_sdk.set_tags({k: _tag_value(v) for k, v in self.tags.items()})
            sentry_sdk.set_context("chunk", {"manifest_key": manifest_key, "scenes": len(manifest.scenes), "logs": logs})
            self._transaction.name = f"worker {manifest.stage}"

    def scene_done(self, result: Mapping[str, Any]) -> None:
        """After each scene's result record: a span, and an event if the scene failed."""
        if not _enabled:
            return
        scene_id = result["scene_id"]
        failed = result.get("status") != "ok"
        if self._transaction is not None:
            seconds = float(result.get("seconds") or 0.0)
            span = self._transaction.start_child(
                op="jadd.scene", name=scene_id, start_timestamp=datetime.now(timezone.utc) - timedelta(seconds=seconds))
            span.set_tag("scene", scene_id)
            span.set_status("internal_error" if failed else "ok")
            span.finish()
        if failed:
            type_name, message = split_error(result.get("error", ""))
            stage = self.tags.get("stage", "")
            _capture(
                _error_event("scene", type_name, message, ["jadd-scene-failure", stage, type_name],
                             {"output_key": result.get("output_key"), "seconds": result.get("seconds")}),
                {**self.tags, "scene": scene_id, "log": self._logs.get(scene_id, self.tags.get("log"))},
            )

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not _enabled:
            return False
        import sentry_sdk

        if exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            sentry_sdk.capture_exception(exc)
        if self._transaction is not None:
            self._transaction.set_status("internal_error" if exc is not None else "ok")
            self._transaction.__exit__(exc_type, exc, tb)
        sentry_sdk.flush(timeout=FLUSH_TIMEOUT_S)  # a container's process may be gone soon after
        return False


def report_chunk_failures(failures: Iterable[Mapping[str, Any]], tags: Mapping[str, Any], backend: str) -> int:
    """Report chunks that ended with a non-zero exit code, as the compute backend saw them.

    failures: {"chunk", "log", "manifest_key", "returncode", "reason"} each; tags: the stage's
    cost-allocation tags. At most MAX_CHUNK_EVENTS events, then one that counts the rest.
    Returns the events sent (0 when Sentry is off).
    """
    if not _enabled:
        return 0
    failures = list(failures)
    base = {**stage_tags(tags), "backend": backend}
    stage = base.get("stage", "")
    for failure in failures[:MAX_CHUNK_EVENTS]:
        reason = (str(failure.get("reason") or "").strip().splitlines() or [""])[-1]
        code = failure.get("returncode")
        _capture(
            _error_event("chunk", "ChunkFailed", f"chunk {failure.get('chunk')} exited with code {code}: {reason}",
                         ["jadd-chunk-failure", stage, backend, "killed" if code is not None and code < 0 else str(code)],
                         {"manifest_key": failure.get("manifest_key"), "reason": failure.get("reason")}),
            {**base, "chunk": failure.get("chunk"), "log": failure.get("log")},
        )
    more = len(failures) - MAX_CHUNK_EVENTS
    if more > 0:
        fingerprint = ["jadd-chunk-failure", stage, backend, "more"]
        _capture(_error_event("chunk", "ChunkFailed", f"{more} more chunks of stage {stage} failed", fingerprint), base)
    return min(len(failures), MAX_CHUNK_EVENTS) + (more > 0)


def report_run_failure(context: Any) -> int:
    """Report a failed Dagster run; the body of a `dg.run_failure_sensor`.

    context: a `dg.RunFailureSensorContext`. One event per failed step (stage = the step key, with
    the step's error and stack; a user-code error is reported as itself, not as Dagster's wrapper),
    or one for the run when no step failed (it failed to start, say). Tags: run, job, dataset (the
    partition of a run of assets partitioned by `datasets`), partition, stage. Returns the events
    sent (0 when Sentry is off).
    """
    if not _enabled:
        return 0
    run = context.dagster_run
    failures = [(event.step_key, event.step_failure_data.error) for event in context.get_step_failure_events()]
    if not failures:
        failures = [(None, getattr(context.failure_event.event_specific_data, "error", None))]
    tags = {"run": run.run_id, "job": run.job_name, "partition": run.tags.get("dagster/partition"),
            "dataset": _dataset_of(context, {step for step, _ in failures if step})}
    for step_key, error in failures:
        if error is not None and error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
            error = error.cause  # the asset's own exception
        if error is None:  # the run failed outside any step
            type_name, message, extra = "RunFailure", context.failure_event.message or f"run {run.run_id} failed", {}
        else:
            type_name = error.cls_name or "RunFailure"
            message = error.message.strip().removeprefix(f"{type_name}: ")
            extra = {"stack": "".join(error.stack), "cause": error.cause.to_string() if error.cause else ""}
        _capture(_error_event("run", type_name, message, ["jadd-run-failure", run.job_name, step_key or "run", type_name], extra),
                 {**tags, "stage": step_key})
    return len(failures)


def _dataset_of(context: Any, step_keys: set[str]) -> str | None:
    """The run's dataset: its partition, when it ran assets partitioned by datasets (those it
    selected, or else those of its failed steps)."""
    run = context.dagster_run
    if run.tags.get("jadd:dataset"):
        return run.tags["jadd:dataset"]
    partition = run.tags.get("dagster/partition")
    repository = getattr(context, "repository_def", None)
    if not partition or repository is None:
        return None
    try:
        assets = repository.assets_defs_by_key
        keys = run.asset_selection or {key for key, asset in assets.items() if asset.node_def.name in step_keys}
        names = {getattr(assets[key].partitions_def, "name", None) for key in keys if key in assets}
    except Exception:  # a tag is a convenience; the report goes out without it
        return None
    return partition if DATASETS_PARTITIONS in names else None


def flush(timeout: float = FLUSH_TIMEOUT_S) -> None:
    if _enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout)
