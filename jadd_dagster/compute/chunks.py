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
        # Scenes as rows under one list of field names, built by hand: dataclasses.asdict
        # deep-copied every field (26 s of the Split of a million scenes) and a dict per scene
        # doubled the JSON to encode.
        return {
            "chunk_id": self.chunk_id, "stage": self.stage, "settings": self.settings, "store_url": self.store_url,
            "results_key": self.results_key, "scene_fields": list(SCENE_FIELDS),
            "scenes": [
                [t.scene_id, t.log_id, t.scene_index, t.start_time_us, t.end_time_us, t.output_key, t.input_key]
                for t in self.scenes
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> "ChunkManifest":
        data = dict(data)
        fields = data.pop("scene_fields", None)
        if fields is None:  # scenes as one object each
            scenes = [SceneTask(**s) for s in data["scenes"]]
        else:
            scenes = [SceneTask(**dict(zip(fields, row))) for row in data["scenes"]]
        return cls(**{**data, "scenes": scenes})


SCENE_FIELDS = ("scene_id", "log_id", "scene_index", "start_time_us", "end_time_us", "output_key", "input_key")


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
