"""Cutting drive logs into fixed-length scenes, with per-scene signal statistics for curation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from jadd_dagster.logs.format import LogManifest
from jadd_dagster.scene_record import scene_id

SCENE_LENGTH_S = 20.0
# Scenes are partitions `log × scene index`; the static index range bounds a log's length. At 20 s
# scenes this is 2 hours. Scenes past it are not registered and are reported by scene_index.
MAX_SCENES_PER_LOG = 360

# The scene catalog's columns, with units; curation filters are expressions over these names.
CATALOG_COLUMNS: dict[str, str] = {
    "scene_id": "'<log_id>/<index>'",
    "log_id": "drive log id",
    "scene_index": "index of the scene within its log",
    "location": "where the log was recorded",
    "vehicle": "vehicle name",
    "channels": "comma-separated camera and lidar channels of the log",
    "camera_sizes": "comma-separated CHANNEL=WIDTHxHEIGHT of the log's cameras, pixels (empty: not known)",
    "camera_rates_hz": "comma-separated CHANNEL=HZ, each camera's frame rate (empty: not known)",
    "camera_codecs": "comma-separated CHANNEL=CODEC of the cameras' videos: h264, or mjpeg / png for images stored "
                     "as recorded (empty: not known)",
    "distorted_cameras": "comma-separated channels whose calibration has lens distortion",
    "start_time_us": "scene start, µs since the Unix epoch",
    "end_time_us": "scene end (exclusive), µs",
    "date": "UTC date 'YYYY-MM-DD'",
    "hour": "UTC hour of the start, 0-23",
    "duration_s": "seconds",
    "mean_speed_mps": "m/s",
    "max_speed_mps": "m/s",
    "min_speed_mps": "m/s",
    "max_abs_steering_deg": "steering-wheel angle, degrees",
    "max_abs_yaw_rate_rps": "rad/s",
    "max_decel_mps2": "largest deceleration, m/s² (positive)",
    "max_accel_mps2": "largest acceleration, m/s²",
    "brake_fraction": "share of the scene with the brake pressed, 0-1",
    "distance_m": "distance travelled, metres (from the ego pose)",
    "max_can_gap_s": "longest stretch of the scene without a CAN row, seconds",
    "max_pose_gap_s": "longest stretch of the scene without a pose row, seconds",
    "has_gap": f"true when CAN or pose has a gap longer than {0.1:g} s / {0.2:g} s (filter with 'not has_gap')",
}
# A gap is a stretch without rows longer than ten periods of the nominal rate (100 Hz CAN, 50 Hz pose).
MAX_CAN_GAP_S = 0.1
MAX_POSE_GAP_S = 0.2


@dataclass(frozen=True)
class SceneWindow:
    """One scene's place in its log: [start_time_us, end_time_us)."""

    log_id: str
    index: int
    start_time_us: int
    end_time_us: int

    @property
    def scene_id(self) -> str:
        return scene_id(self.log_id, self.index)


def cut_scenes(manifest: LogManifest, scene_length_s: float = SCENE_LENGTH_S) -> tuple[list[SceneWindow], int]:
    """Whole scenes of a log in time order, and how many fell past MAX_SCENES_PER_LOG.

    A trailing piece shorter than a scene is not a scene.
    """
    length_us = int(round(scene_length_s * 1e6))
    count = manifest.duration_us // length_us
    kept = min(count, MAX_SCENES_PER_LOG)
    windows = [
        SceneWindow(
            manifest.log_id,
            i,
            manifest.start_time_us + i * length_us,
            manifest.start_time_us + (i + 1) * length_us,
        )
        for i in range(kept)
    ]
    return windows, int(count - kept)


def _window(df: pd.DataFrame, start_us: int, end_us: int) -> pd.DataFrame:
    ts = df["timestamp_us"].to_numpy()
    lo, hi = np.searchsorted(ts, [start_us, end_us])
    return df.iloc[lo:hi]


def scene_statistics(
    manifest: LogManifest, windows: list[SceneWindow], can: pd.DataFrame, pose: pd.DataFrame,
    calibration: Mapping | None = None, codecs: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One catalog row per scene (CATALOG_COLUMNS), from the log's CAN and pose tables, its
    cameras' calibration (for their sizes and lenses; None: not known), rates (the manifest) and
    video codecs (camera_codecs; None: not known). The cost estimate reads the cameras' columns:
    with them the plan prices a log without opening its files."""
    sizes = format_camera_sizes(calibration or {})
    cameras = manifest.channels if manifest is not None else ()
    rates = ",".join(f"{c}={manifest.rate_hz(c)}" for c in sorted(cameras))
    codec_text = ",".join(f"{c}={codecs[c]}" for c in sorted(cameras) if codecs and codecs.get(c))
    distorted = ",".join(c for c, calib in sorted((calibration or {}).items()) if getattr(calib, "is_distorted", False))
    rows = []
    for w in windows:
        c = _window(can, w.start_time_us, w.end_time_us)
        p = _window(pose, w.start_time_us, w.end_time_us)
        speed = c["speed_mps"].to_numpy(dtype=float)
        accel = c["accel_mps2"].to_numpy(dtype=float)
        xy = p[["x", "y"]].to_numpy(dtype=float)
        start = datetime.fromtimestamp(w.start_time_us / 1e6, tz=timezone.utc)
        rows.append(
            {
                "scene_id": w.scene_id,
                "log_id": w.log_id,
                "scene_index": w.index,
                "location": manifest.location,
                "vehicle": manifest.vehicle,
                "channels": ",".join((*manifest.channels, *manifest.lidar_channels)),
                "camera_sizes": sizes,
                "camera_rates_hz": rates,
                "camera_codecs": codec_text,
                "distorted_cameras": distorted,
                "start_time_us": w.start_time_us,
                "end_time_us": w.end_time_us,
                "date": start.strftime("%Y-%m-%d"),
                "hour": start.hour,
                "duration_s": (w.end_time_us - w.start_time_us) / 1e6,
                "mean_speed_mps": _stat(speed, np.mean),
                "max_speed_mps": _stat(speed, np.max),
                "min_speed_mps": _stat(speed, np.min),
                "max_abs_steering_deg": _stat(np.abs(c["steering_deg"].to_numpy(dtype=float)), np.max),
                "max_abs_yaw_rate_rps": _stat(np.abs(c["yaw_rate_rps"].to_numpy(dtype=float)), np.max),
                "max_decel_mps2": max(0.0, _stat(-accel, np.max)),
                "max_accel_mps2": max(0.0, _stat(accel, np.max)),
                "brake_fraction": _stat((c["brake"].to_numpy(dtype=float) > 0).astype(float), np.mean),
                "distance_m": float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum()) if len(xy) > 1 else 0.0,
                "max_can_gap_s": (can_gap := longest_gap_s(c, w.start_time_us, w.end_time_us)),
                "max_pose_gap_s": (pose_gap := longest_gap_s(p, w.start_time_us, w.end_time_us)),
                "has_gap": bool(can_gap > MAX_CAN_GAP_S or pose_gap > MAX_POSE_GAP_S),
            }
        )
    return pd.DataFrame(rows, columns=list(CATALOG_COLUMNS))


def format_camera_sizes(calibration: Mapping) -> str:
    """'CAM_FRONT=1600x900,...' of the cameras (objects with width and height) in calibration."""
    return ",".join(f"{channel}={c.width}x{c.height}" for channel, c in sorted(calibration.items())
                    if hasattr(c, "width") and hasattr(c, "height"))


def parse_camera_sizes(text: str) -> dict[str, tuple[int, int]]:
    """format_camera_sizes's string back as {channel: (width, height)} ({} for '' or a bad entry)."""
    sizes = {}
    for entry in filter(None, str(text or "").split(",")):
        channel, _, size = entry.partition("=")
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            return {}
        sizes[channel] = (int(width), int(height))
    return sizes


def parse_channel_values(text: str) -> dict[str, str]:
    """'CAM_FRONT=12,CAM_BACK=30' (camera_rates_hz, camera_codecs) as {channel: value} ({} for '')."""
    pairs = (entry.partition("=") for entry in filter(None, str(text or "").split(",")))
    return {channel: value for channel, sep, value in pairs if sep and value}


def camera_codecs(log) -> dict[str, str]:
    """Each camera's video codec (sampling.decode.video_codec: h264, mjpeg, png) where it is known
    without fetching a video: from the video's header when it is on this machine (a local store),
    else from the log's ingest.json (logs converted from MCAP or rosbag2); other cameras are left out."""
    from jadd_dagster.ingest.convert import INGEST_REPORT
    from jadd_dagster.sampling.decode import video_codec

    codecs: dict[str, str] = {}
    report = log.path / INGEST_REPORT
    recorded = json.loads(report.read_text()).get("videos", {}) if report.is_file() else {}
    for channel in log.manifest.channels:
        if log.video_path(channel).is_file():
            codecs[channel] = video_codec(log.video_path(channel))
        elif isinstance(recorded.get(channel), Mapping) and recorded[channel].get("codec"):
            codecs[channel] = str(recorded[channel]["codec"])
    return codecs


def longest_gap_s(rows: pd.DataFrame, start_us: int, end_us: int) -> float:
    """The longest stretch of [start_us, end_us) without a row (seconds), the window's edges
    included: a scene whose signal starts late or stops early has a gap too."""
    stamps = np.concatenate([[start_us], rows["timestamp_us"].to_numpy(dtype=np.int64), [end_us]])
    return float(np.diff(stamps).max()) / 1e6


def _stat(values: np.ndarray, fn) -> float:
    return float(fn(values)) if values.size else float("nan")


def empty_catalog() -> pd.DataFrame:
    """A catalog with no scenes and the right columns."""
    return scene_statistics(None, [], None, None)  # type: ignore[arg-type]
