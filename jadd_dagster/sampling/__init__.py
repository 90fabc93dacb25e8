"""Sampling: camera frames of a scene at a profile's rates, decoded once and written as JPEG."""

from jadd_dagster.sampling.decode import DecodeError, DecodeStats, FrameEncoder, decode_frames
from jadd_dagster.sampling.frames import (
    MissingKeyframes,
    SamplingError,
    SamplingProfile,
    Selection,
    select_frames,
    target_times,
)
from jadd_dagster.sampling.scene import SamplingStats, sample_scene, sample_scene_timed

__all__ = [
    "DecodeError",
    "DecodeStats",
    "FrameEncoder",
    "MissingKeyframes",
    "SamplingError",
    "SamplingProfile",
    "SamplingStats",
    "Selection",
    "decode_frames",
    "sample_scene",
    "sample_scene_timed",
    "select_frames",
    "target_times",
]
