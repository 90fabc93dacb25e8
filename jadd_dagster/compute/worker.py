"""The worker entrypoint: process one chunk of scenes (sampling runs several side by side).

Runs the same way in a local process and in a container (`jadd worker --store URL --manifest KEY`,
or `--manifest-list KEY` in an AWS Batch array job, where each child takes the entry at its
`AWS_BATCH_JOB_ARRAY_INDEX`). Everything is read from and written to the object store. Each scene
is independent: a failure is recorded in that scene's result record and the chunk goes on. Result
records are the source of truth for the orchestrator; nothing depends on a message arriving.

When Dagster launched the worker (the Pipes bootstrap variables are set), it also reports each
scene's outcome through Dagster Pipes; its message stream is its own (a file, or numbered chunks
in the object store under a prefix of its own), because a Pipes session reads many workers at once
(see compute/pipes.py). This module imports only `dagster_pipes`, never `dagster`: workers start
often and must start fast.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBlobStoreMessageWriterChannel,
    PipesContext,
    PipesDefaultMessageWriter,
    PipesEnvVarParamsLoader,
    PipesParams,
    open_dagster_pipes,
)

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.compute.schedule import side_by_side
from jadd_dagster.scene_record import SCENE_JSON
from jadd_dagster.storage import ObjectStore, open_store

from jadd_dagster.layout import RUNS, SCENES, STAGE_AUTOLABELED, STAGE_MERGED, STAGE_SAMPLED
from jadd_dagster.nuscenes.writer import VERSION_PREFIX
from jadd_dagster.spec import NAME_PATTERN

ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
# Parameters of the object-store message writer (set by the Dagster side, compute/pipes.py).
MESSAGES_STORE = "store"
MESSAGES_KEY_PREFIX = "key_prefix"
MESSAGES_CHILD_OFFSET = "child_offset"
MESSAGES_INTERVAL = "interval"


def result_key(results_key: str, scene_id: str) -> str:
    return f"{results_key}/{scene_id.replace('/', '__')}.json"


CHUNK_RESULTS = "chunks"  # under a results key: one file per finished chunk with all its scenes' records


def chunk_result_key(results_key: str, chunk_id: str) -> str:
    """All scene records of a chunk in one object, written when the chunk ends: the orchestrator
    reads one object per chunk instead of two requests per scene. The per-scene records, written
    as each scene ends, remain for a worker that dies in the middle of its chunk."""
    return f"{results_key}/{CHUNK_RESULTS}/{chunk_id}.json"


def _sample(store: ObjectStore, task: SceneTask, settings: dict, logs: "OpenLogs", threads: int = 1) -> int:
    from dataclasses import replace

    from jadd_dagster.sampling import SamplingProfile, sample_scene
    from jadd_dagster.logs.format import LIDAR_CHANNELS
    from jadd_dagster.sampling.lidar import add_lidar_frames
    from jadd_dagster.scene_outputs import place_frames

    profile = SamplingProfile.from_json(settings)
    cameras = replace(profile, channels=tuple(c for c in profile.channels if c not in LIDAR_CHANNELS))
    log = logs.get(store, task.log_id)
    with store.staged_output(task.output_key, last=[SCENE_JSON], scratch=logs.scratch) as out:
        record = sample_scene(
            log, task.scene_index, task.start_time_us, task.end_time_us, cameras, out, task.scene_id, threads=threads
        )
        for lidar in (c for c in profile.channels if c in LIDAR_CHANNELS):
            record = add_lidar_frames(log, record, out, lidar)
        record = place_frames(store, out, replace(record, profile=profile.key()))
        record.save(out)
    return len(record.frames)


class OpenLogs:
    """The log a chunk works on, fetched once (a chunk holds scenes of one log) into scratch space.
    Scenes of the same log may ask for it from several threads at once: one fetches, the others
    wait for it. The worker runs the scenes of one log together (_run_tasks), so no scene is still
    reading a log when the next log replaces it."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self._id: str | None = None
        self._log = None
        self._opened = None
        self._lock = threading.Lock()

    def get(self, store: ObjectStore, log_id: str):
        from jadd_dagster.logs.stored import open_stored_log

        with self._lock:
            if self._id != log_id:
                self._close()
                self._opened = open_stored_log(store, log_id, with_videos=True, scratch=self.scratch)
                self._log = self._opened.__enter__()
                self._id = log_id
            return self._log

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)
        self._id, self._log, self._opened = None, None, None


def _autolabel(store: ObjectStore, task: SceneTask, settings: dict, logs: "OpenLogs", threads: int = 1) -> int:
    from jadd_dagster.autolabel.models import LABELS_JSON, make_detector
    from jadd_dagster.autolabel.tracking import label_scene
    from jadd_dagster.scene_outputs import frames_root
    from jadd_dagster.scene_record import SceneRecord

    detector = make_detector(settings["model_name"], settings["model"])
    with store.local_folder(task.input_key, scratch=logs.scratch) as scene_dir:
        record = SceneRecord.load(scene_dir)
        with frames_root(store, record.profile, [record], logs.scratch, include=lambda f: f.is_key_frame) as frames:
            annotations = label_scene(scene_dir, detector, frames)
    store.write_json(f"{task.output_key}/{LABELS_JSON}", {"model": settings["model_key"], "annotations": annotations})
    return len(annotations)


def _merge(store: ObjectStore, manifest: ChunkManifest, scratch: Path) -> dict:
    from jadd_dagster.part_merge import merge_stored_part
    from jadd_dagster.records import to_json

    return to_json(merge_stored_part(store, manifest.settings, manifest.scenes, scratch))


STAGES = {STAGE_SAMPLED: _sample, STAGE_AUTOLABELED: _autolabel}
def finished_output_count(store: ObjectStore, stage: str, output_key: str) -> int | None:
    """The frames (sampling) or boxes (auto-labels) of a scene output that is complete in the store
    (its completion marker is there and reads), None when it is not."""
    from jadd_dagster.autolabel.models import LABELS_JSON

    marker = {STAGE_SAMPLED: SCENE_JSON, STAGE_AUTOLABELED: LABELS_JSON}.get(stage)
    if marker is None or not store.exists(f"{output_key}/{marker}"):
        return None
    try:
        data = store.read_json(f"{output_key}/{marker}")
        return len(data["frames"] if stage == STAGE_SAMPLED else data["annotations"])
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        return None


# Stages whose task is the whole chunk (one dataset part), not each of its scenes.
CHUNK_STAGES = {STAGE_MERGED: _merge}


SceneCallback = Callable[[dict], None]


def manifest_problems(manifest: ChunkManifest) -> list[str]:
    """Why a manifest asks for writes outside its stage's place (empty: it does not).

    Manifests sit in a bucket that many jobs can write, so the worker trusts none of its keys: it
    writes result records only under runs/, a scene stage's outputs only under scenes/<stage>/
    (and reads inputs only under scenes/), and a merge only into a version folder of its dataset
    in a profile's dataroot."""
    problems = []
    if not manifest.results_key.startswith(f"{RUNS}/"):
        problems.append(f"results_key {manifest.results_key!r} is not under {RUNS}/")
    if manifest.stage in CHUNK_STAGES:
        settings = manifest.settings
        name, version, profile = settings.get("name", ""), settings.get("version", ""), settings.get("profile_key", "")
        if not (re.fullmatch(NAME_PATTERN, str(name)) and re.fullmatch(r"[0-9a-f]{12}", str(profile))
                and re.fullmatch(rf"{re.escape(VERSION_PREFIX)}{re.escape(str(name))}-part\d{{4}}-[0-9a-f]{{8}}", str(version))):
            problems.append(f"merge settings name={name!r} version={version!r} profile_key={profile!r} are not a dataset part")
        allowed_inputs, allowed_outputs = (f"{SCENES}/{STAGE_SAMPLED}/{profile}/",), (f"{SCENES}/{STAGE_AUTOLABELED}/",)
    else:
        allowed_inputs, allowed_outputs = (f"{SCENES}/",), (f"{SCENES}/{manifest.stage}/",)
    for task in manifest.scenes:
        if task.output_key and not (task.output_key.startswith(allowed_outputs) and ".." not in task.output_key.split("/")):
            problems.append(f"{task.scene_id}: output_key {task.output_key!r} is outside {allowed_outputs[0]}")
        if task.input_key and not (task.input_key.startswith(allowed_inputs) and ".." not in task.input_key.split("/")):
            problems.append(f"{task.scene_id}: input_key {task.input_key!r} is outside {allowed_inputs[0]}")
    return problems


def run_chunk(
    manifest: ChunkManifest, store: ObjectStore, scratch: Path | None = None, on_scene: SceneCallback | None = None
) -> dict[str, int]:
    """Process every scene of a chunk in store (the worker's own --store, never the manifest's
    store_url); returns counts of ok and failed scenes. Raises ValueError, before any write, for a
    manifest that asks for writes outside its stage's place (manifest_problems).

    on_scene(result record) is called after each scene's record is written.
    """
    if manifest.stage not in STAGES and manifest.stage not in CHUNK_STAGES:
        raise KeyError(f"unknown stage {manifest.stage!r}; the worker runs {sorted([*STAGES, *CHUNK_STAGES])}")
    problems = manifest_problems(manifest)
    if problems:
        raise ValueError(f"refused manifest {manifest.chunk_id!r}:\n" + "\n".join(problems[:20]))
    if manifest.stage in CHUNK_STAGES:
        return _run_whole_chunk(manifest, store, CHUNK_STAGES[manifest.stage], scratch, on_scene)
    stage = STAGES[manifest.stage]
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-chunk-") as tmp:
        open_logs = OpenLogs(Path(tmp))
        try:
            return _run_tasks(manifest, store, stage, open_logs, on_scene)
        finally:
            open_logs.close()


def _run_tasks(
    manifest: ChunkManifest, store: ObjectStore, stage, open_logs: OpenLogs, on_scene: SceneCallback | None = None
) -> dict[str, int]:
    """Each scene of the chunk through stage; its result record written, and reported, in the
    chunk's order as it ends. Sampling runs scenes side by side on the worker's threads (whole
    scenes, one thread each: compute/schedule.py), the scenes of one log at a time; auto-labelling
    one scene after the other."""
    counts = {"ok": 0, "failed": 0}
    records = []
    threads = _scene_threads(manifest.stage)

    def run(task: SceneTask, task_threads: int) -> tuple[int, Exception | None, float]:
        started = time.monotonic()
        try:
            return stage(store, task, manifest.settings, open_logs, task_threads), None, time.monotonic() - started
        except Exception as error:  # one bad scene never fails its neighbours
            return 0, error, time.monotonic() - started

    for _, tasks in itertools.groupby(manifest.scenes, key=lambda task: task.log_id):
        for task, outcome in side_by_side(list(tasks), run, threads):
            frames, error, seconds = outcome.result()
            result = {"scene_id": task.scene_id, "stage": manifest.stage, "output_key": task.output_key}
            if error is None:
                result.update(status="ok", frames=frames)
            else:
                result.update(status="failed", error=f"{type(error).__name__}: {error}", frames=0)
                trace = "".join(traceback.format_exception(error))
                print(f"[{manifest.chunk_id}] {task.scene_id} failed:\n{trace}", file=sys.stderr)
            result["seconds"] = round(seconds, 3)
            store.write_json(result_key(manifest.results_key, task.scene_id), result)
            records.append(result)
            counts[result["status"]] += 1
            print(json.dumps({"progress": task.scene_id, "status": result["status"]}), flush=True)
            if on_scene:
                on_scene(result)
    store.write_json(chunk_result_key(manifest.results_key, manifest.chunk_id), {"scenes": records})
    return counts


def _scene_threads(stage: str) -> int:
    """Threads a worker runs a scene stage on: sampling_threads() for sampling (the CPUs this
    process may use, or $JADD_SAMPLING_THREADS), 1 for the others."""
    if stage != STAGE_SAMPLED:
        return 1
    from jadd_dagster.sampling.decode import sampling_threads

    return sampling_threads()


def _run_whole_chunk(
    manifest: ChunkManifest, store: ObjectStore, stage, scratch: Path | None, on_scene: SceneCallback | None
) -> dict[str, int]:
    """Run a chunk-level stage once; its result record is keyed by the chunk id."""
    started = time.monotonic()
    result: dict[str, Any] = {"scene_id": manifest.chunk_id, "stage": manifest.stage}
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-chunk-") as tmp:
        try:
            result.update(status="ok", output=stage(store, manifest, Path(tmp)))
        except Exception as error:  # the orchestrator reads the reason from the record
            result.update(status="failed", error=f"{type(error).__name__}: {error}")
            print(f"[{manifest.chunk_id}] failed:\n{traceback.format_exc()}", file=sys.stderr)
    result["seconds"] = round(time.monotonic() - started, 3)
    store.write_json(result_key(manifest.results_key, manifest.chunk_id), result)
    if on_scene:
        on_scene(result)
    if result["status"] != "ok":
        return {"ok": 0, "failed": len(manifest.scenes)}
    output = result["output"]  # a part: its merged scenes and the ones it could not merge
    return {"ok": int(output.get("scenes", 0)), "failed": len(output.get("failed", {}))}


def array_index() -> int:
    """This worker's index in an AWS Batch array job (0 for a plain job or a local process)."""
    return int(os.environ.get(ARRAY_INDEX_ENV) or 0)


def manifest_key_from_list(store: ObjectStore, list_key: str, index: int | None = None) -> str:
    """The manifest key at this worker's array index in a manifest list ({"manifests": [keys]})."""
    keys = store.read_json(list_key)["manifests"]
    index = array_index() if index is None else index
    if not 0 <= index < len(keys):
        raise IndexError(f"array index {index} is outside the manifest list {list_key!r} of {len(keys)} chunks")
    return keys[index]


def read_manifest(store: ObjectStore, key: str) -> ChunkManifest:
    """The manifest at key: a JSON object, or '<object>#<index>' for the index-th of the chunks an
    object holds (compute.dispatch.write_manifests)."""
    path, _, index = key.partition("#")
    data = store.read_json(path)
    if index:
        chunks = data["chunks"]
        if not index.isdigit() or int(index) >= len(chunks):
            raise IndexError(f"{key!r}: the object holds {len(chunks)} chunks")
        data = chunks[int(index)]
    return ChunkManifest.from_json(data)


def child_messages_prefix(key_prefix: str, child: int) -> str:
    """Where one worker's Pipes message chunks go: numbered <n>.json objects under this prefix."""
    return f"{key_prefix}/child-{child}"


class StoreMessageWriter(PipesBlobStoreMessageWriter):
    """Pipes messages as numbered chunks in the object store (S3 in production), one prefix per
    worker: <key_prefix>/child-<child_offset + AWS_BATCH_JOB_ARRAY_INDEX>/<n>.json.

    dagster-pipes' PipesS3MessageWriter writes every process to the same <key_prefix>/<n>.json, so
    the children of an array job would overwrite each other's chunks; here each child appends its
    index. Going through the object store (put_object on S3) uses the store's own endpoint and
    credentials, and the same code runs against a local folder.
    """

    def make_channel(self, params: PipesParams) -> "StoreMessageWriterChannel":
        child = int(params.get(MESSAGES_CHILD_OFFSET, 0)) + array_index()
        return StoreMessageWriterChannel(
            open_store(params[MESSAGES_STORE]),
            child_messages_prefix(params[MESSAGES_KEY_PREFIX], child),
            interval=float(params.get(MESSAGES_INTERVAL, self.interval)),
        )


class StoreMessageWriterChannel(PipesBlobStoreMessageWriterChannel):
    """Uploads buffered messages every `interval` seconds as the next numbered chunk."""

    def __init__(self, store: ObjectStore, prefix: str, *, interval: float):
        super().__init__(interval=interval)
        self._store = store
        self._prefix = prefix
        # A retried attempt of the same child (AWS Batch retry strategy) continues the numbering
        # after the chunks of the attempt before it, so the reader's counter stays in step.
        numbers = [name.removesuffix(".json") for name in store.list_children(prefix)]
        self._first = max((int(n) for n in numbers if n.isdigit()), default=0)

    def upload_messages_chunk(self, payload: IO, index: int) -> None:
        key = f"{self._prefix}/{self._first + index}.json"
        data = payload.read().encode()
        for attempt in range(3):
            try:
                self._store.put_bytes(key, data)
                return
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(2**attempt)


class ChunkReporter:
    """Reports a chunk's progress to Dagster through Pipes; does nothing outside a Pipes session.

    Messages are for progress only (the result records decide), so a failing message never fails
    the chunk.
    """

    def __init__(self, pipes: PipesContext | None = None):
        self.pipes = pipes

    def scene_done(self, chunk_id: str, result: dict) -> None:
        def send(pipes: PipesContext) -> None:
            if result["status"] != "ok":
                pipes.log.warning(f"[{chunk_id}] {result['scene_id']} failed: {result.get('error')}")
            pipes.report_custom_message({
                "progress": result["scene_id"], "status": result["status"], "chunk": chunk_id,
                "seconds": result.get("seconds"),
            })

        self._send(send)

    def chunk_done(self, chunk_id: str, counts: dict[str, int]) -> None:
        self._send(lambda pipes: pipes.log.info(f"[{chunk_id}] finished: {counts['ok']} scenes ok, {counts['failed']} failed"))

    def _send(self, send: Callable[[PipesContext], Any]) -> None:
        if self.pipes is None:
            return
        try:
            send(self.pipes)
        except Exception as error:
            print(f"could not send a Pipes message: {type(error).__name__}: {error}", file=sys.stderr)


@contextmanager
def open_worker_pipes() -> Iterator[ChunkReporter]:
    """A reporter over Dagster Pipes when the bootstrap variables are set, else a silent one.

    The message writer follows the params: `store` selects StoreMessageWriter (AWS Batch), `path`
    the plain file writer (local processes, one file per worker). An exception in the block is sent
    with the closing message and re-raised.
    """
    loader = PipesEnvVarParamsLoader()
    pipes = None
    if loader.is_dagster_pipes_process():
        try:
            params = loader.load_messages_params()
            writer = StoreMessageWriter() if MESSAGES_STORE in params else PipesDefaultMessageWriter()
            pipes = open_dagster_pipes(message_writer=writer, params_loader=loader)
        except Exception:  # no progress messages, but the chunk still runs and writes its records
            print(f"Dagster Pipes unavailable:\n{traceback.format_exc()}", file=sys.stderr)
    if pipes is None:
        yield ChunkReporter(None)
        return
    with pipes:
        yield ChunkReporter(pipes)


def main(argv: list[str] | None = None) -> int:
    import cv2

    from jadd_dagster import observability

    observability.init_sentry("worker")  # nothing unless SENTRY_DSN is set
    # The backend runs one worker per core; OpenCV's own thread pool would oversubscribe them.
    cv2.setNumThreads(1)
    parser = argparse.ArgumentParser(prog="jadd worker", description="Process one chunk of scenes.")
    parser.add_argument("--store", required=True, help="object store URL: a folder path or s3://bucket/prefix")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--manifest", help="key of the chunk manifest JSON in the store")
    which.add_argument(
        "--manifest-list",
        help=f"key of a JSON object {{\"manifests\": [keys]}} in the store; this worker takes the entry at ${ARRAY_INDEX_ENV} (0 if unset)",
    )
    args = parser.parse_args(argv)
    store = open_store(args.store)
    with open_worker_pipes() as reporter, observability.ChunkMonitor(reporter.pipes.extras if reporter.pipes else None) as monitor:
        key = args.manifest or manifest_key_from_list(store, args.manifest_list)
        manifest = read_manifest(store, key)
        monitor.chunk(key, manifest)

        def scene_done(result: dict) -> None:
            reporter.scene_done(manifest.chunk_id, result)
            monitor.scene_done(result)

        counts = run_chunk(manifest, store, on_scene=scene_done)
        reporter.chunk_done(manifest.chunk_id, counts)
    print(json.dumps({"chunk": manifest.chunk_id, **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
