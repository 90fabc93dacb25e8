"""Which camera frames a scene keeps: keyframes (nuScenes samples) and sweeps, at a profile's rates.

Target times are laid on the scene's own clock: keyframe k at start + k / keyframe_hz and sweep j at
start + j / sweep_hz (those that are not keyframe times), within [start, end). Each target takes
the camera frame nearest to it, if that frame is within half a source frame period (plus a small
tolerance for timestamp jitter). Timestamps are integer µs throughout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from jadd_dagster.logs.format import CAMERA_HZ

RATES_HZ = (2, 5, 10, 30)
# Part of every profile key: bump it when sampling output changes for the same profile, so that
# cached scene outputs of the old code are not reused.
SAMPLING_VERSION = 3  # 2: frames live in the profile's dataroot under their nuScenes filenames (scene_outputs.py); 3: undistorted frames use camera.rectified_intrinsic
# Slack on top of half a source frame period for timestamp jitter, µs.
JITTER_TOLERANCE_US = 2_000


class SamplingError(Exception):
    """A scene cannot be sampled as asked (missing channel, frames or video)."""


class MissingKeyframes(SamplingError):
    """Some keyframe target times have no camera frame near enough; times_us lists them."""

    def __init__(self, times_us: list[int], max_offset_us: int):
        self.times_us = times_us
        self.max_offset_us = max_offset_us
        shown = ", ".join(str(t) for t in times_us[:5]) + (" ..." if len(times_us) > 5 else "")
        super().__init__(f"no frame within {max_offset_us} µs of keyframe time(s) {shown}")


@dataclass(frozen=True)
class SamplingProfile:
    """How scenes are sampled: rates (Hz), image geometry and JPEG quality, and which cameras.

    image_size is the output (width, height) in pixels, None for the native size. Sampled outputs
    are cached per profile under key().
    """

    keyframe_hz: int = 2
    sweep_hz: int = 10
    undistort: bool = False
    image_size: tuple[int, int] | None = None
    jpeg_quality: int = 90
    channels: tuple[str, ...] = ("CAM_FRONT",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.keyframe_hz not in RATES_HZ or self.sweep_hz not in RATES_HZ:
            raise ValueError(f"keyframe_hz and sweep_hz must be one of {RATES_HZ} Hz")
        if self.sweep_hz < self.keyframe_hz or self.sweep_hz % self.keyframe_hz:
            raise ValueError(f"sweep_hz ({self.sweep_hz}) must be a multiple of keyframe_hz ({self.keyframe_hz})")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.image_size is not None and min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {self.image_size}")
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels must be non-empty and unique, got {self.channels}")

    def to_json(self) -> dict:
        return {
            "keyframe_hz": self.keyframe_hz,
            "sweep_hz": self.sweep_hz,
            "undistort": self.undistort,
            "image_size": list(self.image_size) if self.image_size else None,
            "jpeg_quality": self.jpeg_quality,
            "channels": list(self.channels),
        }

    @classmethod
    def from_json(cls, data: dict) -> "SamplingProfile":
        size = data.get("image_size")
        return cls(
            keyframe_hz=int(data["keyframe_hz"]),
            sweep_hz=int(data["sweep_hz"]),
            undistort=bool(data["undistort"]),
            image_size=(int(size[0]), int(size[1])) if size else None,
            jpeg_quality=int(data["jpeg_quality"]),
            channels=tuple(data["channels"]),
        )

    def key(self) -> str:
        """Short stable id of this profile (12 hex digits), the cache key of sampled outputs."""
        canonical = json.dumps({**self.to_json(), "version": SAMPLING_VERSION}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(canonical.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Selection:
    """One frame to keep: its index in the video's decode order and its own timestamp (µs).

    keyframe_index is the sample it is the keyframe of, None for a sweep.
    """

    frame_index: int
    timestamp_us: int
    is_key_frame: bool
    keyframe_index: int | None


def target_times(start_us: int, end_us: int, hz: int) -> np.ndarray:
    """start + k / hz (µs, rounded half up) for k = 0, 1, ... while < end_us."""
    if end_us <= start_us:
        return np.zeros(0, dtype=np.int64)
    count = (end_us - start_us) * hz // 1_000_000 + 2
    k = np.arange(count, dtype=np.int64)
    times = start_us + (2 * k * 1_000_000 + hz) // (2 * hz)
    return times[times < end_us]


def select_frames(
    frame_timestamps_us: np.ndarray,
    start_us: int,
    end_us: int,
    keyframe_hz: int,
    sweep_hz: int,
    source_hz: float = CAMERA_HZ,
    tolerance_us: int = JITTER_TOLERANCE_US,
) -> list[Selection]:
    """Keyframes and sweeps of the scene [start_us, end_us), in time order.

    Keyframes are matched first, then sweeps; no frame is used twice and frames keep time order.
    A sweep with no free frame within reach is skipped, and sweeps after the last keyframe are
    dropped (nuScenes attaches sweeps to the following sample). Raises MissingKeyframes if any
    keyframe target has no frame within half a source period + tolerance_us.
    """
    ts = np.asarray(frame_timestamps_us, dtype=np.int64)
    if ts.ndim != 1 or np.any(np.diff(ts) <= 0):
        raise ValueError("frame timestamps must be a strictly increasing 1-D array")
    if keyframe_hz <= 0 or sweep_hz % keyframe_hz:
        raise ValueError(f"sweep_hz ({sweep_hz}) must be a positive multiple of keyframe_hz ({keyframe_hz})")
    max_offset = int(round(1e6 / (2 * source_hz))) + int(tolerance_us)
    ratio = sweep_hz // keyframe_hz
    sweep_targets = target_times(start_us, end_us, sweep_hz)
    key_targets = sweep_targets[::ratio]
    if key_targets.size == 0:
        raise ValueError(f"empty scene [{start_us}, {end_us})")

    used: set[int] = set()

    def candidates(target: int) -> list[int]:
        """Frame indices within reach of target, nearest first (ties: the earlier frame)."""
        pos = int(np.searchsorted(ts, target))
        near = [i for i in (pos - 1, pos) if 0 <= i < ts.size and abs(int(ts[i]) - target) <= max_offset]
        return sorted(near, key=lambda i: (abs(int(ts[i]) - target), i))

    key_frames: list[int] = []
    missing: list[int] = []
    for target in key_targets.tolist():
        floor = key_frames[-1] if key_frames else -1
        pick = next((i for i in candidates(target) if i > floor and i not in used), None)
        if pick is None:
            missing.append(target)
            continue
        used.add(pick)
        key_frames.append(pick)
    if missing:
        raise MissingKeyframes(missing, max_offset)

    selections = [Selection(i, int(ts[i]), True, k) for k, i in enumerate(key_frames)]
    for j, target in enumerate(sweep_targets.tolist()):
        k, phase = divmod(j, ratio)
        if phase == 0 or k + 1 >= len(key_frames):
            continue  # a keyframe time, or after the last keyframe
        lo, hi = key_frames[k], key_frames[k + 1]
        pick = next((i for i in candidates(target) if lo < i < hi and i not in used), None)
        if pick is not None:
            used.add(pick)
            selections.append(Selection(pick, int(ts[pick]), False, None))
    selections.sort(key=lambda s: s.frame_index)
    return selections
