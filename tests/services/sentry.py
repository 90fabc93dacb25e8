"""A recording Sentry endpoint on 127.0.0.1 for the tests: sentry-sdk's real transport posts its
envelopes here (port chosen by binding to 0), and the tests read what arrived.

    def test_something(sentry_endpoint):
        env = {"SENTRY_DSN": sentry_endpoint.dsn}
        ...
        [event] = sentry_endpoint.wait_for(lambda: sentry_endpoint.items("event"))
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HOST = "127.0.0.1"
PROJECT = "1"


@dataclass
class Envelope:
    """One POST: the raw (decompressed) body, its header and (item header, payload) pairs."""

    raw: bytes
    header: dict
    items: list[tuple[dict, Any]] = field(default_factory=list)


def parse_envelope(body: bytes) -> Envelope:
    """Sentry's envelope format: a JSON header line, then items of a JSON header line and a payload
    of `length` bytes (or up to the next newline)."""
    header_line, _, rest = body.partition(b"\n")
    envelope = Envelope(body, json.loads(header_line))
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item = json.loads(item_line)
        if "length" in item:
            payload, rest = rest[: item["length"]], rest[item["length"] :]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            envelope.items.append((item, json.loads(payload)))
        except ValueError:
            envelope.items.append((item, payload))
    return envelope


class SentryEndpoint:
    """What the endpoint received; `dsn` points sentry-sdk at it."""

    def __init__(self, port: int):
        self.dsn = f"http://public@{HOST}:{port}/{PROJECT}"
        self.envelopes: list[Envelope] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def record(self, path: str, body: bytes) -> None:
        with self._lock:
            self.paths.append(path)
            self.envelopes.append(parse_envelope(body))

    def items(self, item_type: str) -> list[Any]:
        """The payloads of every item of this type (event, transaction, profile, ...) so far."""
        with self._lock:
            return [payload for envelope in self.envelopes for item, payload in envelope.items if item.get("type") == item_type]

    def raw(self) -> bytes:
        """Everything received, decompressed, as one byte string (to search for what must not be there)."""
        with self._lock:
            return b"\n".join(envelope.raw for envelope in self.envelopes)

    def wait_for(self, found: Callable[[], Any], timeout: float = 15.0) -> Any:
        """found()'s first truthy value, polling until timeout; AssertionError after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"nothing arrived in {timeout} s; received {len(self.envelopes)} envelopes: {self.paths}")


def _handler(endpoint: SentryEndpoint):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            endpoint.record(self.path, body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):  # keep the test output clean
            pass

    return Handler


@pytest.fixture
def sentry_endpoint() -> Iterator[SentryEndpoint]:
    server = ThreadingHTTPServer((HOST, 0), None)
    endpoint = SentryEndpoint(server.server_address[1])
    server.RequestHandlerClass = _handler(endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="sentry-endpoint")
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sentry_here(sentry_endpoint, monkeypatch) -> Iterator[SentryEndpoint]:
    """Sentry initialised in this process (the code location's side, as when SENTRY_DSN is set),
    sending to the endpoint; closed and cleared afterwards."""
    import sentry_sdk

    from jadd_dagster import observability

    monkeypatch.setenv("SENTRY_DSN", sentry_endpoint.dsn)
    monkeypatch.setattr(observability, "_enabled", False)
    monkeypatch.setattr(observability, "_secret_env", set())
    assert observability.init_sentry("dagster")
    yield sentry_endpoint
    sentry_sdk.flush(timeout=5)
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().clear()
