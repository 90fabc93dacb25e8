"""A real PostgreSQL server on 127.0.0.1 for the tests marked `postgres` (DESIGN §9).

`postgres_server` (session scope) runs Debian's `initdb` and `pg_ctl` as the `postgres` user when
the tests run as root (PostgreSQL refuses to run as root), in a temp folder that also holds the
unix socket. The port is chosen by binding to port 0. Each test that writes a Dagster instance
should take its own database (`postgres_server.new_database(...)`) so tests do not see each
other's runs. `start_postgres` is the same thing as a context manager, for the benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The Dagster instance config reads the password from this variable (`env:` in dagster.yaml), so
# it never lands in a file; the fixture sets it while the server runs.
PASSWORD_ENV = "JADD_TEST_PG_PASSWORD"
ADMIN = "postgres"

# Durable settings are PostgreSQL's defaults; tests turn them off because nothing needs to
# survive a crash of a throwaway server and fsync dominates small writes.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def pg_bin_dir() -> Path | None:
    """Folder of initdb/pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class PostgresServer:
    """Connection facts of one database on the running server (TCP, password authentication)."""

    host: str
    port: int
    user: str
    password: str
    db: str
    socket_dir: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg2 driver)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{self.db}"

    def dagster_yaml(self, inline_password: bool = False) -> str:
        """Dagster instance config with all storage on this database.

        The password is an `env:` reference to PASSWORD_ENV unless inline_password is set (for a
        process that does not inherit this one's environment).
        """
        password = f'"{self.password}"' if inline_password else f"\n          env: {PASSWORD_ENV}"
        return (
            "storage:\n"
            "  postgres:\n"
            "    postgres_db:\n"
            f"      username: {self.user}\n"
            f"      password: {password}\n"
            f"      hostname: {self.host}\n"
            f"      db_name: {self.db}\n"
            f"      port: {self.port}\n"
            "telemetry:\n"
            "  enabled: false\n"
        )

    def admin_sql(self, *statements: str) -> None:
        """Run statements as the superuser over the unix socket (autocommit)."""
        import psycopg2

        conn = psycopg2.connect(host=self.socket_dir, port=self.port, user=ADMIN, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def new_database(self, name: str) -> PostgresServer:
        """A fresh, empty database owned by this user (dropped first if it exists)."""
        self.admin_sql(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return dataclasses.replace(self, db=name)


def _as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    # PostgreSQL refuses to run as root; as a normal user it runs as that user.
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", ADMIN, "--", *cmd]
    # From "/": initdb fails ("could not identify current directory") when the caller's working
    # directory is gone (a test's deleted temp folder) or not readable by the postgres user.
    kwargs.setdefault("cwd", "/")
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def start_postgres(
    settings: dict[str, str] | None = None, user: str = "jadd", db: str = "jadd"
) -> Iterator[PostgresServer]:
    """Start a throwaway server, create `user` (with a random password) and `db`; stop it on exit.

    settings are extra `postgres -c` options (e.g. FAST_SETTINGS); the default is PostgreSQL's own,
    durable configuration.
    """
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)")
    root = Path(tempfile.mkdtemp(prefix="jadd-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, ADMIN, ADMIN)
    data = root / "data"
    started = False
    try:
        try:
            _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", ADMIN, "-E", "UTF8", "--no-sync",
                          "--auth-local=trust", "--auth-host=scram-sha-256"])
            port = free_port()
            options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(root),
                       **(settings or {})}
            option_line = " ".join(f"-c {k}={v}" for k, v in options.items())
            started = True  # from here on, stop it whatever happens
            _as_postgres([str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data),
                          "-l", str(root / "server.log"), "-o", option_line])
        except subprocess.CalledProcessError as error:
            log = root / "server.log"
            detail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(error.cmd)} failed: {error.stderr}\n{detail}") from error
        password = secrets.token_urlsafe(16)
        server = PostgresServer("127.0.0.1", port, user, password, db, str(root))
        server.admin_sql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'",
                         f'CREATE DATABASE "{db}" OWNER "{user}"')
        yield server
    finally:
        if started:
            subprocess.run(
                (["runuser", "-u", ADMIN, "--"] if os.geteuid() == 0 else [])
                + [str(bin_dir / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(data)],
                capture_output=True, check=False, cwd="/",  # already stopped is fine
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session, with PASSWORD_ENV set while it runs."""
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)")
    previous = os.environ.get(PASSWORD_ENV)
    with start_postgres(FAST_SETTINGS) as server:
        os.environ[PASSWORD_ENV] = server.password
        try:
            yield server
        finally:
            if previous is None:
                os.environ.pop(PASSWORD_ENV, None)
            else:
                os.environ[PASSWORD_ENV] = previous
