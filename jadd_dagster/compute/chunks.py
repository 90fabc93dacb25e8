"""Split: grouping the scenes that need work into chunks for the compute backend.

A chunk holds scenes of one log, in time order, up to a target duration of *scene* time, so that
one worker decodes each log's videos sequentially and per-chunk overhead is paid once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SceneTask:
    """One scene for a worker: its log, its time window, and the store key its output goes to."""

    scene_id: str
    log_id: str
    scene_index: int
    start_time_us: int
    end_time_us: int
    output_key: str
    input_key: str = ""  # the output of an earlier stage that this stage reads (e.g. sampled frames)


@dataclass
class ChunkManifest:
    """What one worker process does: a stage, its settings, and a list of scenes."""

    chunk_id: str
    stage: str
    settings: dict
    store_url: str
    results_key: str
    scenes: list[SceneTask] = field(default_factory=list)

    def to_json(self) -> dict:
        # Built by hand: dataclasses.asdict deep-copies every field and took 26 s of the Split of
        # a million scenes.
        return {
            "chunk_id": self.chunk_id, "stage": self.stage, "settings": self.settings, "store_url": self.store_url,
            "results_key": self.results_key,
            "scenes": [
                {"scene_id": t.scene_id, "log_id": t.log_id, "scene_index": t.scene_index,
                 "start_time_us": t.start_time_us, "end_time_us": t.end_time_us, "output_key": t.output_key,
                 "input_key": t.input_key}
                for t in self.scenes
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "ChunkManifest":
        return cls(**{**data, "scenes": [SceneTask(**s) for s in data["scenes"]]})


def split_into_chunks(tasks: list[SceneTask], target_chunk_s: float) -> list[list[SceneTask]]:
    """Group tasks by log in time order; a chunk closes when it reaches target_chunk_s of scene time."""
    by_log: dict[str, list[SceneTask]] = {}
    for task in tasks:
        by_log.setdefault(task.log_id, []).append(task)
    chunks: list[list[SceneTask]] = []
    for log_id in sorted(by_log):
        current: list[SceneTask] = []
        seconds = 0.0
        for task in sorted(by_log[log_id], key=lambda t: t.start_time_us):
            current.append(task)
            seconds += (task.end_time_us - task.start_time_us) / 1e6
            if seconds >= target_chunk_s:
                chunks.append(current)
                current, seconds = [], 0.0
        if current:
            chunks.append(current)
    return chunks
