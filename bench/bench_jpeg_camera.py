"""Sampling a camera recorded as JPEG: the recorded files copied, against decoding and encoding.

What it measures: one camera of WIDTHxHEIGHT at 30 Hz for SECONDS, with textured frames (blurred
noise that moves, so each JPEG is of a realistic size), stored two ways in the log format:

  jpeg   as the MCAP ingest stores a JPEG topic: each frame's JPEG file (quality 92, 4:2:0) one
         packet of an mjpeg stream (ingest/video.py's CameraVideo)
  h264   the same frames as H.264 (libx264, keyframe every second, B-frames), like a synthetic
         log's or an H.264 camera's video, and like a JPEG topic ingested with jpeg_crf

and one scene over all but the first and last half second sampled at 2 Hz keyframes and 10 Hz
sweeps (sample_scene_timed, one thread), native size (the JPEG log's files are then copied,
neither decoded nor encoded) and at half size (every frame decoded once and encoded once). The
baseline is the H.264 log at native size: what a JPEG camera cost before it was stored as
recorded (its log was H.264). Best of REPEAT runs of each; CPU seconds are this process's.

Usage: python bench/bench_jpeg_camera.py [--seconds 10] [--width 1600 --height 900] [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    from test_sampling import T0, TinyLog, make_tiny_log

    from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic
    from jadd_dagster.ingest.video import CameraVideo
    from jadd_dagster.logs import format as fmt
    from jadd_dagster.sampling import SamplingProfile, sample_scene_timed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    width, height, frames = args.width, args.height, 30 * args.seconds
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (height + 64, width + 64, 3), dtype=np.uint8),
                               (0, 0), 3)

    def image(channel: str, i: int) -> np.ndarray:
        return np.ascontiguousarray(texture[i % 64 : i % 64 + height, i % 64 : i % 64 + width])

    calibration = {"CAM_FRONT": CameraCalibration("CAM_FRONT", width, height, pinhole_intrinsic(width, height, 70.0))}
    with tempfile.TemporaryDirectory(prefix="bench-jpeg-camera-") as tmp:
        root = Path(tmp)
        h264 = make_tiny_log(root / "h264", {"CAM_FRONT": (frames, 0)}, calibration, images=image)
        shutil.copytree(root / "h264", root / "jpeg")
        (root / "jpeg" / fmt.video_file("CAM_FRONT")).unlink()
        video, sizes = CameraVideo(root / "jpeg" / fmt.video_file("CAM_FRONT"), 30), []
        for i in range(frames):
            jpeg = simplejpeg.encode_jpeg(image("CAM_FRONT", i), 92, colorsubsampling="420")
            sizes.append(len(jpeg))
            video.add("jpeg", jpeg)
        video.close()
        logs = {"jpeg": TinyLog(root / "jpeg"), "h264": h264}
        half = (width // 2, height // 2)
        cases = [("h264", None, "baseline: H.264 log, native size"), ("h264", half, "H.264 log, half size"),
                 ("jpeg", None, "JPEG log, native size (copied)"), ("jpeg", half, "JPEG log, half size")]
        rows = []
        for n, (kind, size, name) in enumerate(cases):
            best = None
            for attempt in range(args.repeat):
                wall, cpu = time.perf_counter(), time.process_time()
                record, stats = sample_scene_timed(
                    logs[kind], 0, T0 + 500_000, T0 + (args.seconds * 1_000_000 - 500_000),
                    SamplingProfile(2, 10, False, size, 90), root / f"out-{n}-{attempt}", "bench/0", threads=1)
                result = (time.process_time() - cpu, time.perf_counter() - wall, stats)
                best = result if best is None or result[0] < best[0] else best
            rows.append((name, *best))
    print(f"\nOne {width}x{height} camera at 30 Hz, {args.seconds} s; JPEG files {np.mean(sizes) / 1e3:.0f} kB a frame; "
          f"scene at 2 Hz keyframes and 10 Hz sweeps, one thread, best of {args.repeat}")
    print("| case | frames | copied | decoded | wall s | CPU s | CPU ms a frame | CPU vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = rows[0][1] / rows[0][3].frames
    for name, cpu, wall, stats in rows:
        per_frame = cpu / stats.frames
        print(f"| {name} | {stats.frames} | {stats.copied} | {stats.decoded} | {wall:.2f} | {cpu:.2f} "
              f"| {1000 * per_frame:.1f} | {per_frame / base:.2f}x |")


if __name__ == "__main__":
    main()
