"""One stage over many scenes: find what is cached, split the rest into chunks, run, collect.

Plain Python: the Dagster layer calls `run_stage` and turns its result into materializations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jadd_dagster.compute.chunks import ChunkManifest, SceneTask, split_into_chunks
from jadd_dagster.compute.local import ChunkOutcome
from jadd_dagster.compute.worker import CHUNK_RESULTS, chunk_result_key, finished_output_count, result_key
from jadd_dagster.registry import Registry, SceneOutput
from jadd_dagster.storage import RUNS, ObjectStore

MANIFESTS_PER_FILE = 1000  # chunk manifests per object in the store (write_manifests)

# run_chunks(store, manifest_keys, on_done) -> outcomes: what a compute backend provides.
RunChunks = Callable[[ObjectStore, list[str], Callable[[ChunkOutcome, int, int], None]], list[ChunkOutcome]]


@dataclass
class StageResult:
    """What a stage did: scenes served from cache, newly computed, failed (with reasons)."""

    cached: list[SceneOutput] = field(default_factory=list)
    computed: list[SceneOutput] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    chunks: int = 0
    plan: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    recovered: list[SceneOutput] = field(default_factory=list)  # finished by a run that died; see run_stage

    @property
    def ok(self) -> list[SceneOutput]:
        return sorted(self.cached + self.recovered + self.computed, key=lambda o: o.scene_id)

    @property
    def newly_recorded(self) -> list[SceneOutput]:
        """Outputs this run put into the registry: computed now, or recovered from the store."""
        return self.recovered + self.computed

    @property
    def seconds_per_scene(self) -> float | None:
        """Mean worker seconds of the newly computed scenes (the stage's measured per-scene
        cost; workers run one scene at a time, so this is close to CPU seconds); None if none."""
        return sum(o.seconds for o in self.computed) / len(self.computed) if self.computed else None


def write_manifests(store: ObjectStore, prefix: str, manifests: list[ChunkManifest]) -> list[str]:
    """Write chunk manifests MANIFESTS_PER_FILE to an object (one object per chunk made the Split
    of a million scenes 166,667 writes); returns one key per manifest, '<object>#<index>', which
    the worker reads with read_manifest."""
    keys = []
    for start in range(0, len(manifests), MANIFESTS_PER_FILE):
        key = f"{prefix}/{start // MANIFESTS_PER_FILE:05d}.json"
        group = manifests[start : start + MANIFESTS_PER_FILE]
        store.put_bytes(key, json.dumps({"chunks": [m.to_json() for m in group]}, separators=(",", ":")).encode())
        keys.extend(f"{key}#{i}" for i in range(len(group)))
    return keys


def present_outputs(store: ObjectStore, paths: list[str]) -> set[str]:
    """The output folders among paths that are still in the store, found with one listing per
    parent folder (one log's scenes) instead of a request per scene: a rebuild of a million cached
    scenes on S3 lists a few thousand prefixes rather than asking a million times."""
    by_parent: dict[str, list[str]] = {}
    for path in paths:
        parent, _, _ = path.rpartition("/")
        by_parent.setdefault(parent, []).append(path)
    present = set()
    for parent, children in by_parent.items():
        names = set(store.list_children(parent))
        present.update(p for p in children if p.rpartition("/")[2] in names)
    return present


def recover_outputs(store: ObjectStore, stage: str, cache_key: str, tasks: list[SceneTask], run_id: str) -> list[SceneOutput]:
    """Outputs of tasks that are complete in the store but not in the registry: a run that was
    killed, cancelled or failed after its workers published them (workers publish a scene's
    output whole, its completion marker last, locally or on Batch). One listing per log finds the
    candidates; each one's marker is read to confirm it and count its frames or boxes."""
    candidates = present_outputs(store, [t.output_key for t in tasks])
    recovered = []
    for task in tasks:
        if task.output_key in candidates:
            count = finished_output_count(store, stage, task.output_key)
            if count is not None:
                recovered.append(SceneOutput(task.scene_id, stage, cache_key, task.output_key, count, 0.0, run_id))
    return recovered


def _chunk_records(
    store: ObjectStore, results_key: str, chunk_id: str, chunk: list[SceneTask], finished: set[str]
) -> dict[str, dict]:
    """The result records of a chunk's scenes by scene id: one read of the chunk's results file
    when its worker finished, else one per scene record that the worker wrote before it ended."""
    if f"{chunk_id}.json" in finished:
        return {r["scene_id"]: r for r in store.read_json(chunk_result_key(results_key, chunk_id))["scenes"]}
    records = {}
    for task in chunk:
        key = result_key(results_key, task.scene_id)
        if store.exists(key):
            records[task.scene_id] = store.read_json(key)
    return records


class ChunkProgress:
    """Reports finished chunks to the run's log without flooding it: every failure, the last chunk,
    and otherwise at most one line per REPORT_EVERY_S (a line per chunk cost about 40 ms of the
    orchestrator each, 647 s at 100,000 scenes)."""

    REPORT_EVERY_S = 10.0

    def __init__(self, stage: str, noun: str, on_progress: Callable[[str], None]):
        self.stage, self.noun, self.on_progress = stage, noun, on_progress
        self.last = time.monotonic()
        self.failed = 0

    def __call__(self, outcome: ChunkOutcome, done: int, total: int) -> None:
        now = time.monotonic()
        if outcome.returncode != 0:
            self.failed += 1
            self.on_progress(f"{self.stage}: {self.noun}{done}/{total} finished (exit code {outcome.returncode}, "
                             f"{outcome.seconds:.1f} s)")
        elif done == total or now - self.last >= self.REPORT_EVERY_S:
            failed = f", {self.failed} failed so far" if self.failed else ""
            self.on_progress(f"{self.stage}: {self.noun}{done}/{total} finished{failed} (last {outcome.seconds:.1f} s)")
        else:
            return
        self.last = now


def run_stage(
    tasks: list[SceneTask],
    stage: str,
    profile_key: str,
    settings: dict,
    store: ObjectStore,
    registry: Registry,
    run_chunks: RunChunks,
    run_id: str,
    target_chunk_s: float,
    on_progress: Callable[[str], None] = lambda message: None,
) -> StageResult:
    """Run a stage for the tasks whose output is not cached; record new outputs in the registry.

    A cached output counts when the registry has it and its folder is still in the store
    (present_outputs); workers publish a folder with its completion marker last.
    """
    started = time.monotonic()
    result = StageResult()
    cached = registry.cached_scene_outputs(stage, profile_key, [t.scene_id for t in tasks])
    present = present_outputs(store, [hit.path for hit in cached.values()])
    todo = []
    for task in tasks:
        hit = cached.get(task.scene_id)
        if hit and hit.path in present:
            result.cached.append(hit)
        else:
            todo.append(task)
    result.recovered = recover_outputs(store, stage, profile_key, todo, run_id)
    registry.record_scene_outputs(result.recovered)
    done = {o.scene_id for o in result.recovered}
    todo = [t for t in todo if t.scene_id not in done]
    chunks = split_into_chunks(todo, target_chunk_s)
    result.chunks = len(chunks)
    result.plan = [
        {"chunk": f"{stage}-{i:05d}", "log": c[0].log_id, "scenes": len(c),
         "scene_s": sum(t.end_time_us - t.start_time_us for t in c) / 1e6}
        for i, c in enumerate(chunks)
    ]
    on_progress(f"{stage}: {len(result.cached)} scenes cached, {len(result.recovered)} recovered from an earlier run, "
                f"{len(todo)} to compute in {len(chunks)} chunks")
    if chunks:
        results_key = f"{RUNS}/{run_id}/{stage}/results"
        manifests = write_manifests(store, f"{RUNS}/{run_id}/{stage}/chunks", [
            ChunkManifest(f"{stage}-{i:05d}", stage, settings, store.url, results_key, chunk) for i, chunk in enumerate(chunks)
        ])

        report = ChunkProgress(stage, "chunk ", on_progress)
        outcomes = {o.manifest_key: o for o in run_chunks(store, manifests, report)}
        finished = set(store.list_children(f"{results_key}/{CHUNK_RESULTS}"))
        for i, (manifest_key, chunk) in enumerate(zip(manifests, chunks)):
            chunk_id = f"{stage}-{i:05d}"
            records = _chunk_records(store, results_key, chunk_id, chunk, finished)
            for task in chunk:
                record = records.get(task.scene_id)
                if record is None:
                    reason = "worker ended before this scene"
                    outcome = outcomes.get(manifest_key)
                    if outcome and outcome.stderr_tail.strip():
                        reason += f": {outcome.stderr_tail.strip().splitlines()[-1]}"
                    result.failed[task.scene_id] = reason
                elif record["status"] == "ok":
                    result.computed.append(
                        SceneOutput(task.scene_id, stage, profile_key, task.output_key, record["frames"], record["seconds"], run_id)
                    )
                else:
                    result.failed[task.scene_id] = record["error"]
        registry.record_scene_outputs(result.computed)
    result.wall_s = time.monotonic() - started
    return result


def run_whole_chunks(
    manifests: list[ChunkManifest], store: ObjectStore, run_chunks: RunChunks, run_id: str,
    on_progress: Callable[[str], None] = lambda message: None,
) -> dict[str, dict]:
    """Run chunk-level tasks (one dataset part each); their result records by chunk id. A chunk
    whose worker ended without a record gets a failed record naming its exit code."""
    if not manifests:
        return {}
    stage = manifests[0].stage
    keys = write_manifests(store, f"{RUNS}/{run_id}/{stage}/chunks", manifests)

    outcomes = {o.manifest_key: o for o in run_chunks(store, keys, ChunkProgress(stage, "", on_progress))}
    results = {}
    for key, manifest in zip(keys, manifests):
        record_key = result_key(manifest.results_key, manifest.chunk_id)
        if store.exists(record_key):
            results[manifest.chunk_id] = store.read_json(record_key)
        else:
            outcome = outcomes.get(key)
            tail = outcome.stderr_tail.strip().splitlines()[-1] if outcome and outcome.stderr_tail.strip() else ""
            results[manifest.chunk_id] = {"status": "failed", "error": f"worker ended without a result {tail}".strip()}
    return results
