"""`dagster-webserver` (what `dagster dev` serves) loads the code location from workspace.yaml."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
QUERY = """{ assetNodes { assetKey { path } isPartitioned
  partitionDefinition { dimensionTypes { name dynamicPartitionsDefinitionName } }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("web")
    (home / "dagster_home").mkdir()
    env = {**os.environ, "JADD_HOME": str(home), "DAGSTER_HOME": str(home / "dagster_home")}
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("dagster-webserver did not start within 120 s")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def test_the_ui_shows_every_asset_with_its_partitions_and_checks(webserver):
    nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(webserver, QUERY)["data"]["assetNodes"]}
    assert set(nodes) == {("drive_logs",), ("scene_index",), ("scene_catalog",), ("dataset_plan",),
                          ("sampled_frames",), ("autolabels",), ("dataset_frames",), ("dataset_labels",),
                          ("jadd_dataset",), ("dataset_registry",), ("daily_cost_report",)}
    dims = {k[0]: [(d["name"], d["dynamicPartitionsDefinitionName"]) for d in n["partitionDefinition"]["dimensionTypes"]]
            for k, n in nodes.items() if n["isPartitioned"]}
    assert dims["sampled_frames"] == [("log", "logs"), ("scene", None)]
    assert dims["jadd_dataset"] == [("default", "datasets")]
    assert not nodes[("scene_catalog",)]["isPartitioned"]
    checks = {c["name"] for n in nodes.values() for c in n["assetChecksOrError"]["checks"]}
    assert checks == {"calibration_is_sane", "timestamps_are_monotonic", "frame_counts_match_rates",
                      "nuscenes_invariants_hold", "devkit_loads_every_version", "spend_within_limits"}
