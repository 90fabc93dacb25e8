"""The worker entrypoint: process one chunk of scenes, scene by scene.

Runs the same way in a local process and in a container (`jadd worker --manifest KEY`). Each scene
is independent: a failure is recorded in that scene's result record and the chunk goes on. Result
records are the source of truth for the orchestrator; nothing depends on a message arriving.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask
from jadd_dagster.storage import LocalStore

STAGE_SAMPLED = "sampled"


def result_key(results_key: str, scene_id: str) -> str:
    return f"{results_key}/{scene_id.replace('/', '__')}.json"


def _sample(store: LocalStore, task: SceneTask, settings: dict, logs: dict) -> int:
    from jadd_dagster.logs import read_log
    from jadd_dagster.sampling import SamplingProfile, sample_scene

    if task.log_id not in logs:
        logs.clear()  # a chunk holds one log; keep at most one open
        logs[task.log_id] = read_log(store.path(task.log_key))
    profile = SamplingProfile.from_json(settings)
    record = sample_scene(
        logs[task.log_id],
        task.scene_index,
        task.start_time_us,
        task.end_time_us,
        profile,
        store.path(task.output_key),
        task.scene_id,
    )
    return len(record.frames)


STAGES = {STAGE_SAMPLED: _sample}


def run_chunk(manifest: ChunkManifest) -> dict[str, int]:
    """Process every scene of a chunk; returns counts of ok and failed scenes."""
    store = LocalStore(manifest.store_root)
    stage = STAGES[manifest.stage]
    open_logs: dict = {}
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
    parser.add_argument("--manifest", required=True, help="path of the chunk manifest JSON")
    args = parser.parse_args(argv)
    manifest = ChunkManifest.from_json(json.loads(Path(args.manifest).read_text()))
    counts = run_chunk(manifest)
    print(json.dumps({"chunk": manifest.chunk_id, **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
