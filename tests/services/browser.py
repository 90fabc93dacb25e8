"""The Dagster UI for the browser test: `dagster-webserver` and `dagster-daemon` on 127.0.0.1.

`start_dagster_ui` runs the two processes `dagster dev` would run, from the repository's
workspace.yaml, against a fresh instance (DAGSTER_HOME) and store (JADD_HOME) of the caller's
choosing, on a free port. It returns once the webserver serves the code location and the daemon
reports its sensor, run-queue and backfill loops healthy, and stops both (and the code servers and
run workers they started: each runs in its own process group) on exit. Their output goes to
files in `log_dir`; `DagsterUI.log_tail()` is what a failing test prints.

`chromium_path` finds Debian's chromium (scripts/test installs it when it is missing); the test
fails, never skips, without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from jadd_dagster.defs.automation import NIGHTLY_SCHEDULE_ENV

ROOT = Path(__file__).resolve().parents[2]
INSTANCE_CONFIG = ROOT / "resources" / "dagster.yaml"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
# The daemon loops a dataset build and the drive-log sensor need.
REQUIRED_DAEMONS = ("SENSOR", "QUEUED_RUN_COORDINATOR", "BACKFILL")
HEALTH_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""


def chromium_path() -> str | None:
    """Debian's chromium: $JADD_CHROMIUM, else the first of CHROMIUM_CANDIDATES on PATH."""
    if os.environ.get("JADD_CHROMIUM"):
        return os.environ["JADD_CHROMIUM"]
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class DagsterUI:
    """A running webserver and daemon: where to reach them and where they log."""

    url: str
    port: int
    jadd_home: Path
    dagster_home: Path
    logs: dict[str, Path]
    location: str = ""  # the code location's name, as the UI's URLs spell it

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        """POST a query to the webserver's GraphQL endpoint; its `data` (raises on `errors`)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def run_status(self, run_id: str) -> str:
        """QUEUED, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
        data = self.graphql("query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }", {"id": run_id})
        return data["runOrError"].get("status", data["runOrError"]["__typename"])

    def run_errors(self, run_id: str) -> list[str]:
        """The step and run failure messages of a run, as its event log has them."""
        data = self.graphql("""query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
            __typename ... on ExecutionStepFailureEvent { stepKey error { message } }
            ... on RunFailureEvent { message } } } } }""", {"id": run_id})
        events = (data["logsForRun"] or {}).get("events", [])
        return [f"{e['stepKey']}: {e['error']['message']}" if e["__typename"] == "ExecutionStepFailureEvent" else e["message"]
                for e in events if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]

    def runs_of_partition(self, partition: str) -> list[dict]:
        """[{runId, status}] of the runs tagged with this partition key, newest first."""
        data = self.graphql("""query($p: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $p}]}) {
            ... on Runs { results { runId status } } } }""", {"p": partition})
        return data["runsOrError"]["results"]

    def partition_keys(self, asset: str) -> list[str]:
        """The partition keys of an asset's partition set, as the UI lists them."""
        data = self.graphql("query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { "
                            "partitionKeys } } }", {"key": {"path": [asset]}})
        return data["assetNodeOrError"].get("partitionKeys") or []

    def wait_for_run(self, run_id: str, timeout_s: float) -> None:
        """Until the run succeeds; raises with its errors when it fails or is canceled, or on timeout."""
        deadline = time.monotonic() + timeout_s
        status = "unknown"
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status == "SUCCESS":
                return
            if status in ("FAILURE", "CANCELED"):
                raise AssertionError(f"run {run_id} ended {status}:\n" + "\n".join(self.run_errors(run_id)))
            time.sleep(2)
        raise AssertionError(f"run {run_id} still {status} after {timeout_s:.0f} s")

    def latest_metadata(self, asset: str, partition: str | None = None) -> dict | None:
        """Label -> value of the asset's (partition's) latest materialization; None when it has none."""
        data = self.graphql("""query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) {
            ... on Asset { assetMaterializations(limit: 1, partitions: $partitions) { metadataEntries { label
              ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
              ... on TextMetadataEntry { text } } } } } }""",
                            {"key": {"path": [asset]}, "partitions": [partition] if partition else None})
        events = (data["assetOrError"] or {}).get("assetMaterializations") or []
        if not events:
            return None
        return {e["label"]: next((e[k] for k in ("intValue", "floatValue", "text") if k in e), None)
                for e in events[0]["metadataEntries"]}

    def log_tail(self, chars: int = 4000) -> str:
        """The end of each process's output, for a failure message."""
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else "(no output)"
            parts.append(f"----- {name} ({path}), last {chars} characters -----\n{text[-chars:]}")
        return "\n".join(parts)


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        # Its own session: stopping the process group also stops the code servers and run workers.
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen], timeout: float = 20) -> None:
    """SIGTERM to every process group at once (each shuts down in parallel), up to timeout seconds
    for them all to exit, then SIGKILL to whatever of the groups is left (code servers, run workers)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _health_problem(ui: DagsterUI) -> str | None:
    """What is not ready yet (None when the code location is loaded and the daemons are healthy)."""
    try:
        data = ui.graphql(HEALTH_QUERY, timeout=10)
    except (OSError, RuntimeError) as error:
        return f"webserver not answering: {error}"
    entries = data["workspaceOrError"].get("locationEntries") or []
    if not entries:
        return "no code location yet"
    for entry in entries:
        if entry["loadStatus"] != "LOADED":
            return f"code location {entry['name']} is {entry['loadStatus']}"
        location = entry["locationOrLoadError"] or {}
        if location.get("__typename") == "PythonError":
            raise RuntimeError(f"code location {entry['name']} failed to load: {location['message']}")
        ui.location = entry["name"]
    healthy = {d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    unhealthy = [d for d in REQUIRED_DAEMONS if not healthy.get(d)]
    return f"daemons not healthy yet: {', '.join(unhealthy)}" if unhealthy else None


@contextlib.contextmanager
def start_dagster_ui(jadd_home: Path, dagster_home: Path, log_dir: Path, timeout_s: float = 240,
                     extra_env: dict[str, str] | None = None) -> Iterator[DagsterUI]:
    """Start dagster-webserver and dagster-daemon for workspace.yaml; yield once both are ready.

    dagster_home gets resources/dagster.yaml unless it has a dagster.yaml. timeout_s bounds the wait
    for readiness (the code location imports the devkit, and the daemon's loops report healthy
    only after their first iteration).
    """
    dagster_home.mkdir(parents=True, exist_ok=True)
    jadd_home.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():  # the instance config a new DAGSTER_HOME gets (as scripts/ui does)
        shutil.copyfile(INSTANCE_CONFIG, config)
    # A test's instance runs no nightly build (one would start if the test ran at 02:00 UTC).
    env = {**os.environ, "JADD_HOME": str(jadd_home), "DAGSTER_HOME": str(dagster_home),
           NIGHTLY_SCHEDULE_ENV: "stopped", **(extra_env or {})}
    port = free_port()
    bin_dir = Path(sys.executable).parent
    ui = DagsterUI(f"http://127.0.0.1:{port}", port, jadd_home, dagster_home,
                   {"webserver": log_dir / "webserver.log", "daemon": log_dir / "daemon.log"})
    procs = {
        "webserver": _spawn([str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                             "-p", str(port)], env, ui.logs["webserver"]),
        "daemon": _spawn([str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, ui.logs["daemon"]),
    }
    try:
        deadline = time.monotonic() + timeout_s
        problem = "not started"
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster {name} exited with status {proc.returncode}\n{ui.log_tail()}")
            problem = _health_problem(ui)
            if problem is None:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the Dagster UI was not ready within {timeout_s:.0f} s: {problem}\n{ui.log_tail()}")
        yield ui
    finally:
        _stop(list(procs.values()))
