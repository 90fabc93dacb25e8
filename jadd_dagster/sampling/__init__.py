"""Sampling: camera frames of a scene at a profile's rates, decoded once and written as JPEG."""

from jadd_dagster.sampling.decode import (
    THREADS_ENV,
    DecodeError,
    DecodeStats,
    available_cpus,
    decode_frames,
    read_packets,
    sampling_threads,
    video_codec,
)
from jadd_dagster.sampling.encode import FrameEncoder
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
    "THREADS_ENV",
    "DecodeError",
    "DecodeStats",
    "FrameEncoder",
    "MissingKeyframes",
    "SamplingError",
    "SamplingProfile",
    "SamplingStats",
    "Selection",
    "available_cpus",
    "decode_frames",
    "read_packets",
    "sample_scene",
    "sample_scene_timed",
    "sampling_threads",
    "select_frames",
    "target_times",
    "video_codec",
]
