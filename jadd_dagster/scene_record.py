"""What the sampling stage leaves for one scene, and what merge reads: the per-scene contract.

A scene output lives in its own folder (one per scene and sampling profile):
    scene.json            SceneRecord.to_json()
    can.parquet           the log's CAN rows within [start_time_us, end_time_us] (logs.format.CAN_COLUMNS)
    pose.parquet          the log's pose rows within the same window (logs.format.POSE_COLUMNS)
    <CHANNEL>/<timestamp_us>.jpg   the sampled frames
Merge never re-encodes these frames; it links them into the dataset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCENE_JSON = "scene.json"
SCENE_CAN = "can.parquet"
SCENE_POSE = "pose.parquet"


def scene_id(log_id: str, index: int) -> str:
    """Stable id of the index-th scene of a log, e.g. 'log-0001/0003'."""
    return f"{log_id}/{index:04d}"


def parse_scene_id(scene: str) -> tuple[str, int]:
    """(log id, index) of a scene id made by scene_id."""
    log_id, index = scene.rsplit("/", 1)
    return log_id, int(index)


@dataclass(frozen=True)
class EgoPose:
    """Ego pose in the log's local map frame: metres and [w, x, y, z] ego-to-map."""

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclass(frozen=True)
class FrameRecord:
    """One sampled camera frame.

    keyframe_index is the index of the scene keyframe (sample) this frame is the keyframe of, or
    None for a sweep. path is relative to the scene output folder.
    """

    channel: str
    timestamp_us: int
    is_key_frame: bool
    keyframe_index: int | None
    path: str
    width: int
    height: int
    ego_pose: EgoPose


@dataclass
class SceneRecord:
    """A sampled scene: identity, timing, output calibration per channel and frames.

    keyframe_times_us[i] is the timestamp of sample i (the target keyframe time); every channel has
    exactly one frame with keyframe_index == i for every i. Sweeps lie strictly between keyframes
    (no sweep after the last keyframe). cameras maps channel to CameraCalibration.to_json() of the
    written images (zero distortion when undistorted). camera_rates_hz maps each camera to the rate
    (Hz) its frames were selected from (the log's manifest, rate_hz): a camera slower than sweep_hz
    gives fewer frames (part_merge.frame_count_problems). Records written before it have none and
    are checked as if every camera ran at sweep_hz.
    """

    scene_id: str
    log_id: str
    scene_index: int
    location: str
    vehicle: str
    date_captured: str
    log_start_time_us: int
    start_time_us: int
    end_time_us: int
    profile: str
    keyframe_hz: float
    sweep_hz: float
    cameras: dict[str, dict]
    keyframe_times_us: list[int]
    frames: list[FrameRecord] = field(default_factory=list)
    camera_rates_hz: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SceneRecord":
        frames = [
            FrameRecord(**{**f, "ego_pose": EgoPose(tuple(f["ego_pose"]["translation"]), tuple(f["ego_pose"]["rotation"]))})
            for f in data["frames"]
        ]
        return cls(**{**data, "frames": frames})

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (SCENE_JSON + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(folder / SCENE_JSON)

    @classmethod
    def load(cls, folder: Path) -> "SceneRecord":
        return cls.from_json(json.loads((folder / SCENE_JSON).read_text()))
