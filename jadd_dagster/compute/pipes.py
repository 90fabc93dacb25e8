"""Dagster Pipes for many workers in one session: one message stream per worker, all read here.

A Pipes session expects one external process, but a stage runs many workers (local processes, or
the children of AWS Batch array jobs). Each worker writes a stream of its own and the readers here
read all of them inside one `dg.open_pipes_session`:

- `ChildFilesMessageReader` (local): worker i appends JSON lines to `<temp dir>/child-<i>.jsonl`
  (dagster-pipes' `PipesDefaultMessageWriter` given a per-worker `path`).
- `ChildChunksMessageReader` (AWS Batch): worker i uploads numbered chunks to
  `<key_prefix>/child-<i>/<n>.json` in the object store (`worker.StoreMessageWriter`); i is
  `child_offset` + `AWS_BATCH_JOB_ARRAY_INDEX`, so one set of bootstrap variables serves a whole
  array job.

Pipes log messages reach the run's log as they arrive; custom messages (per-scene progress) go to
`on_custom_message` instead of piling up on the session. A worker that never writes (it crashed
before opening Pipes, or its container never started) or never closes its stream is tolerated: the
reader closes its stream for it when the session ends and logs one warning naming those workers.
Messages are for progress only; the result records in the object store decide what happened.
"""

from __future__ import annotations

import json
import time
import logging
import os
import re
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster_pipes import (
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    PIPES_PROTOCOL_VERSION,
    PIPES_PROTOCOL_VERSION_FIELD,
    PipesDefaultMessageWriter,
    encode_param,
)

from jadd_dagster.compute.worker import (
    MESSAGES_CHILD_OFFSET,
    MESSAGES_INTERVAL,
    MESSAGES_KEY_PREFIX,
    MESSAGES_STORE,
    child_messages_prefix,
)
from jadd_dagster.storage import ObjectStore

# on_custom_message(child index, payload)
CustomMessageHandler = Callable[[int, Any], None]


class ChildStreamsMessageReader(dg.PipesMessageReader):
    """Reads the Pipes message streams of `children` workers, one stream each, in one thread.

    Subclasses say where worker i writes (`writer_params`) and how to fetch what is new
    (`_read_new`). Give worker i the environment `child_env(session, i)`.
    """

    def __init__(
        self,
        children: int,
        *,
        interval: float,
        log: Any = None,
        on_custom_message: CustomMessageHandler | None = None,
    ):
        if children < 1:
            raise ValueError("a Pipes session needs at least one worker")
        self.children = children
        self.interval = interval
        self._log = log or logging.getLogger(__name__)
        self._on_custom_message = on_custom_message
        self._opened: set[int] = set()
        self._closed: set[int] = set()
        self._warned_errors = False

    @property
    def expected_writer_count(self) -> int:
        """Every worker opens and closes its own stream; the session is complete when all closed."""
        return self.children

    @abstractmethod
    def writer_params(self, first_child: int) -> dict[str, Any]:
        """Message-writer params for worker `first_child` (for an array job: its first child)."""

    @abstractmethod
    def _location(self):
        """A context manager that makes the streams' location exist while the session is open."""

    @abstractmethod
    def _read_new(self, children: list[int]) -> Iterable[tuple[int, list[str]]]:
        """(child, lines) for what these children wrote since the last call, in order per child."""

    def child_env(self, session: dg.PipesSession, first_child: int) -> dict[str, str]:
        """The Pipes bootstrap variables for worker `first_child`: the session's context and that
        worker's own message destination."""
        env = dict(session.get_bootstrap_env_vars())
        env[DAGSTER_PIPES_MESSAGES_ENV_VAR] = encode_param(self.writer_params(first_child))
        return env

    @contextmanager
    def read_messages(self, handler) -> Iterator[dict[str, Any]]:
        with self._location():
            stop = threading.Event()
            thread = threading.Thread(target=self._read_loop, args=(handler, stop), daemon=True, name="jadd-pipes-reader")
            thread.start()
            try:
                yield self.writer_params(0)
            finally:
                stop.set()
                thread.join()  # after one last pass, which reads what the finished workers wrote
                self._close_unfinished(handler)

    def _read_loop(self, handler, stop: threading.Event) -> None:
        while True:
            final = stop.is_set()
            try:
                for child, lines in self._read_new([c for c in range(self.children) if c not in self._closed]):
                    for line in lines:
                        self._handle_line(handler, child, line)
            except Exception as error:  # progress only: keep reading, say so once
                self._warn_once(f"[pipes] reading worker messages failed ({type(error).__name__}: {error}); retrying")
            if final:
                return
            stop.wait(self.interval)

    def _handle_line(self, handler, child: int, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict) or PIPES_PROTOCOL_VERSION_FIELD not in message or child in self._closed:
            return
        method = message.get("method")
        if method == "opened":
            self._opened.add(child)
        elif method == "closed":
            self._closed.add(child)
        elif method == "report_custom_message" and self._on_custom_message is not None:
            self._on_custom_message(child, (message.get("params") or {}).get("payload"))
            return
        try:
            handler.handle_message(message)
        except Exception as error:
            self._warn_once(f"[pipes] worker {child} sent a message that could not be handled: {type(error).__name__}: {error}")

    def _close_unfinished(self, handler) -> None:
        missing = [c for c in range(self.children) if c not in self._closed]
        if not missing:
            return
        silent = [c for c in missing if c not in self._opened]
        cut = [c for c in missing if c in self._opened]
        parts = []
        if silent:
            parts.append(f"{len(silent)} sent no messages ({_names(silent)})")
        if cut:
            parts.append(f"{len(cut)} stopped without closing their stream ({_names(cut)})")
        self._log.warning(
            f"[pipes] of {self.children} workers, {'; '.join(parts)}. Their chunks' outcomes come from "
            "the compute backend and the scenes' result records."
        )
        for child in missing:  # so that the session does not wait for, or warn about, them again
            self._closed.add(child)
            handler.handle_message({PIPES_PROTOCOL_VERSION_FIELD: PIPES_PROTOCOL_VERSION, "method": "closed", "params": {}})

    def _warn_once(self, message: str) -> None:
        if not self._warned_errors:
            self._warned_errors = True
            self._log.warning(message)


def _names(children: list[int], most: int = 10) -> str:
    names = ", ".join(f"child-{c}" for c in children[:most])
    return names + (f" and {len(children) - most} more" if len(children) > most else "")


class ChildFilesMessageReader(ChildStreamsMessageReader):
    """Local workers: worker i appends JSON lines to its own file in a temporary folder."""

    def __init__(self, children: int, *, interval: float = 0.5, log: Any = None, on_custom_message: CustomMessageHandler | None = None):
        super().__init__(children, interval=interval, log=log, on_custom_message=on_custom_message)
        self._dir: str | None = None
        self._offsets = [0] * children

    @contextmanager
    def _location(self) -> Iterator[None]:
        with tempfile.TemporaryDirectory(prefix="jadd-pipes-") as folder:
            self._dir = folder
            try:
                yield
            finally:
                self._dir = None

    def writer_params(self, first_child: int) -> dict[str, Any]:
        if self._dir is None:
            raise RuntimeError("worker message files exist only while the Pipes session is open")
        return {PipesDefaultMessageWriter.FILE_PATH_KEY: os.path.join(self._dir, f"child-{first_child}.jsonl")}

    def _read_new(self, children: list[int]) -> Iterator[tuple[int, list[str]]]:
        for child in children:
            try:
                with open(self.writer_params(child)[PipesDefaultMessageWriter.FILE_PATH_KEY], "rb") as handle:
                    handle.seek(self._offsets[child])
                    data = handle.read()
            except FileNotFoundError:  # not started yet, or never will
                continue
            end = data.rfind(b"\n") + 1  # whole lines only; a line being written waits for the next pass
            if end:
                self._offsets[child] += end
                yield child, data[:end].decode("utf-8").splitlines()

    def no_messages_debug_text(self) -> str:
        return f"Attempted to read one message file per worker in {self._dir}; each worker was given its own path."


class ChildChunksMessageReader(ChildStreamsMessageReader):
    """Workers elsewhere (AWS Batch): worker i uploads numbered chunks to
    `<key_prefix>/child-<i>/<n>.json` in the object store.

    Each pass lists the prefix once and fetches the chunks that follow each worker's last one
    (get_object on S3), a few at a time, so polling cost does not grow with workers that have not
    started. writer_interval is how often a worker uploads its buffered messages (seconds).
    """

    def __init__(
        self,
        store: ObjectStore,
        key_prefix: str,
        children: int,
        *,
        interval: float = 5.0,
        writer_interval: float = 10.0,
        log: Any = None,
        on_custom_message: CustomMessageHandler | None = None,
        fetch_threads: int = 8,
    ):
        super().__init__(children, interval=interval, log=log, on_custom_message=on_custom_message)
        self.store = store
        self.key_prefix = key_prefix.strip("/")
        self.writer_interval = writer_interval
        self.fetch_threads = fetch_threads
        self._next_chunk = [1] * children

    @contextmanager
    def _location(self) -> Iterator[None]:
        yield  # the prefix needs no setup; workers create their chunks

    def writer_params(self, first_child: int) -> dict[str, Any]:
        return {
            MESSAGES_STORE: self.store.url,
            MESSAGES_KEY_PREFIX: self.key_prefix,
            MESSAGES_CHILD_OFFSET: first_child,
            MESSAGES_INTERVAL: self.writer_interval,
        }

    def _read_new(self, children: list[int]) -> Iterator[tuple[int, list[str]]]:
        wanted = set(children)
        written: dict[int, set[int]] = {}
        pattern = re.compile(re.escape(self.key_prefix) + r"/child-(\d+)/(\d+)\.json")
        for key in self.store.list_keys(self.key_prefix):
            match = pattern.fullmatch(key)
            if match and int(match[1]) in wanted:
                written.setdefault(int(match[1]), set()).add(int(match[2]))
        todo = []
        for child, numbers in sorted(written.items()):
            number = self._next_chunk[child]
            while number in numbers:  # in order, without gaps: a later chunk waits for the one before
                todo.append((child, number))
                number += 1
        if not todo:
            return
        keys = [f"{child_messages_prefix(self.key_prefix, child)}/{number}.json" for child, number in todo]
        with ThreadPoolExecutor(min(self.fetch_threads, len(keys))) as pool:
            for (child, number), data in zip(todo, pool.map(self.store.get_bytes, keys)):
                self._next_chunk[child] = number + 1
                yield child, data.decode("utf-8").splitlines()

    def no_messages_debug_text(self) -> str:
        return (
            f"Attempted to read numbered message chunks under {self.store.describe(self.key_prefix)}/child-<i>/; "
            "each worker writes with jadd_dagster.compute.worker.StoreMessageWriter."
        )


def progress_logger(log: Any, stage: str, every_s: float = 10.0, clock=time.monotonic) -> CustomMessageHandler:
    """Forwards the workers' custom messages to the run's log.

    Per-scene progress is summarised (at most one line per every_s seconds: each line is an event
    in the run's event log, and a million of them would cost hours); failures are logged by the
    workers themselves as warnings.
    """
    counts = {"ok": 0, "failed": 0}
    last = [clock()]

    def forward(child: int, payload: Any) -> None:
        if isinstance(payload, dict) and "progress" in payload:
            counts["failed" if payload.get("status") == "failed" else "ok"] += 1
            if clock() - last[0] >= every_s:
                last[0] = clock()
                log.info(f"{stage}: {counts['ok'] + counts['failed']} scenes done so far ({counts['failed']} failed)")
        else:
            log.info(f"{stage}: worker {child}: {json.dumps(payload, default=str)}")

    return forward


@contextmanager
def open_workers_session(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    reader: ChildStreamsMessageReader,
    extras: dict[str, Any] | None = None,
) -> Iterator[dg.PipesSession]:
    """One Pipes session for all the workers of a stage; the context travels in env variables."""
    with dg.open_pipes_session(
        context=context, message_reader=reader, context_injector=dg.PipesEnvContextInjector(), extras=extras
    ) as session:
        yield session
