"""The worker entrypoint: process one chunk of scenes, scene by scene.

Runs the same way in a local process and in a container (`jadd worker --store URL --manifest KEY`).
Everything is read from and written to the object store. Each scene is independent: a failure is
recorded in that scene's result record and the chunk goes on. Result records are the source of
truth for the orchestrator; nothing depends on a message arriving.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tempfile
import traceback
from pathlib import Path

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.scene_record import SCENE_JSON
from jadd_dagster.storage import ObjectStore, open_store

STAGE_SAMPLED = "sampled"


def result_key(results_key: str, scene_id: str) -> str:
    return f"{results_key}/{scene_id.replace('/', '__')}.json"


def _sample(store: ObjectStore, task: SceneTask, settings: dict, logs: "OpenLogs") -> int:
    from jadd_dagster.sampling import SamplingProfile, sample_scene

    profile = SamplingProfile.from_json(settings)
    with store.staged_output(task.output_key, last=[SCENE_JSON], scratch=logs.scratch) as out:
        record = sample_scene(
            logs.get(store, task.log_id), task.scene_index, task.start_time_us, task.end_time_us,
            profile, out, task.scene_id,
        )
    return len(record.frames)


class OpenLogs:
    """The log a chunk works on, fetched once (a chunk holds scenes of one log) into scratch space."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self._id: str | None = None
        self._log = None
        self._opened = None

    def get(self, store: ObjectStore, log_id: str):
        from jadd_dagster.logs.stored import open_stored_log

        if self._id != log_id:
            self.close()
            self._opened = open_stored_log(store, log_id, with_videos=True, scratch=self.scratch)
            self._log = self._opened.__enter__()
            self._id = log_id
        return self._log

    def close(self) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)
        self._id, self._log, self._opened = None, None, None


STAGES = {STAGE_SAMPLED: _sample}


def run_chunk(manifest: ChunkManifest, scratch: Path | None = None) -> dict[str, int]:
    """Process every scene of a chunk; returns counts of ok and failed scenes."""
    store = open_store(manifest.store_url)
    stage = STAGES[manifest.stage]
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-chunk-") as tmp:
        open_logs = OpenLogs(Path(tmp))
        try:
            return _run_tasks(manifest, store, stage, open_logs)
        finally:
            open_logs.close()


def _run_tasks(manifest: ChunkManifest, store: ObjectStore, stage, open_logs: OpenLogs) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0}
    for task in manifest.scenes:
        started = time.monotonic()
        result = {"scene_id": task.scene_id, "stage": manifest.stage, "output_key": task.output_key}
        try:
            result.update(status="ok", frames=stage(store, task, manifest.settings, open_logs))
        except Exception as error:  # one bad scene never fails its neighbours
            result.update(status="failed", error=f"{type(error).__name__}: {error}", frames=0)
            print(f"[{manifest.chunk_id}] {task.scene_id} failed:\n{traceback.format_exc()}", file=sys.stderr)
        result["seconds"] = round(time.monotonic() - started, 3)
        store.write_json(result_key(manifest.results_key, task.scene_id), result)
        counts[result["status"]] += 1
        print(json.dumps({"progress": task.scene_id, "status": result["status"]}), flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    import cv2

    # The backend runs one worker per core; OpenCV's own thread pool would oversubscribe them.
    cv2.setNumThreads(1)
    parser = argparse.ArgumentParser(prog="jadd worker", description="Process one chunk of scenes.")
    parser.add_argument("--store", required=True, help="object store URL: a folder path or s3://bucket/prefix")
    parser.add_argument("--manifest", required=True, help="key of the chunk manifest JSON in the store")
    args = parser.parse_args(argv)
    manifest = ChunkManifest.from_json(open_store(args.store).read_json(args.manifest))
    counts = run_chunk(manifest)
    print(json.dumps({"chunk": manifest.chunk_id, **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
