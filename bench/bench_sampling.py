"""Micro-benchmark: sampling one scene from a 20 s, 30 Hz H.264 camera video.

Compares, in one run on one generated video, our sample_scene path (2 Hz keyframes, 10 Hz sweeps;
native, undistorted, undistorted + half size), the bare decode pass, and the ffmpeg CLI baseline
(`ffmpeg -i in.mp4 -vf fps=10 -q:v 2 out_%05d.jpg`), and prints wall seconds, CPU seconds,
frames written and frames per wall second.

    python bench/bench_sampling.py [--width 1600 --height 900 --seconds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.reader import read_log
from jadd_dagster.sampling import DecodeStats, SamplingProfile, decode_frames, sample_scene_timed, select_frames

CHANNEL = "CAM_FRONT"
START_US = 1_700_000_000_000_000


def texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A road-like RGB texture with detail at every scale, larger than one frame."""
    noise = [
        cv2.resize(rng.random((height // s + 1, width // s + 1)).astype(np.float32), (width, height))
        for s in (2, 9, 40, 160)
    ]
    gray = sum(n * w for n, w in zip(noise, (0.15, 0.25, 0.35, 0.25)))
    img = np.stack([gray * 190 + 30, gray * 180 + 35, gray * 170 + 45], axis=2)
    for x in range(0, width, 97):  # painted lines
        cv2.line(img, (x, 0), (x + 200, height), (235, 235, 225), 6)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_log(folder: Path, width: int, height: int, seconds: int) -> Path:
    """A one-camera drive log whose video pans across a texture at 30 Hz (yuv420p H.264)."""
    n = seconds * 30
    (folder / "cameras").mkdir(parents=True)
    big = texture(width + 2 * n, height + n // 2, np.random.default_rng(0))
    with av.open(str(folder / fmt.video_file(CHANNEL)), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "x264-params": "keyint=30:min-keyint=30:scenecut=0"}
        for i in range(n):
            rgb = big[i // 2 : i // 2 + height, 2 * i : 2 * i + width]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    duration = seconds * 1_000_000
    calib = CameraCalibration(
        CHANNEL, width, height, pinhole_intrinsic(width, height, 100.0), distortion=(-0.28, 0.08, 0.0005, -0.0005, 0.0)
    )
    manifest = fmt.LogManifest("bench", "car", "town", START_US, duration, (CHANNEL,))
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest.to_json()))
    (folder / fmt.CALIBRATION).write_text(json.dumps({CHANNEL: calib.to_json()}))
    stamps = START_US + (2 * np.arange(n, dtype=np.int64) * 1_000_000 + 30) // 60
    pd.DataFrame({"timestamp_us": stamps}).to_parquet(folder / fmt.timestamps_file(CHANNEL))
    t = START_US + np.arange(0, duration + 1, 10_000, dtype=np.int64)
    can = pd.DataFrame({c: np.zeros(t.size) for c in fmt.CAN_COLUMNS[1:]})
    can = can.astype({"gear": "int8", "turn_signal": "int8"})
    can.insert(0, "timestamp_us", t)
    can.to_parquet(folder / fmt.CAN)
    t = t[::2]
    pose = pd.DataFrame({"timestamp_us": t, "x": (t - START_US) / 1e5, "y": 1.0, "z": 0.0})
    pose = pose.assign(qw=1.0, qx=0.0, qy=0.0, qz=0.0)
    pose.to_parquet(folder / fmt.POSE)
    return folder


def timed(fn):
    """(result, wall s, CPU s of this process and its children) of fn()."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    wall = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - wall
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, usage))
    return result, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    try:
        _, wall, _ = timed(lambda: make_log(work / "log", args.width, args.height, args.seconds))
        print(f"video: {args.width}x{args.height}, {args.seconds} s at 30 Hz, made in {wall:.1f} s; "
              f"{os.cpu_count()} CPUs")
        log = read_log(work / "log")
        end = START_US + args.seconds * 1_000_000
        times = log.frame_timestamps(CHANNEL)
        wanted = [s.frame_index for s in select_frames(times, START_US, end, 2, 10)]
        rows = []

        def decode_only(frames, skip):
            stats = DecodeStats()
            for _ in decode_frames(log.video_path(CHANNEL), frames, len(times), stats=stats, skip_unwanted=skip):
                pass
            return stats

        for name, frames, skip in (
            ("decode only, every frame", list(range(len(times))), False),
            ("decode only, 10 Hz frames", wanted, False),
            ("decode only, 10 Hz frames, skip non-ref", wanted, True),
        ):
            stats, wall, cpu = timed(lambda: decode_only(frames, skip))
            rows.append((name, wall, cpu, len(frames), f"decoded {stats.decoded}"))

        profiles = {
            "sample_scene 2/10 Hz native (YUV planes)": SamplingProfile(2, 10, False, None, 90, (CHANNEL,)),
            "sample_scene 2/10 Hz undistort": SamplingProfile(2, 10, True, None, 90, (CHANNEL,)),
            "sample_scene 2/10 Hz undistort + half size": SamplingProfile(
                2, 10, True, (args.width // 2, args.height // 2), 90, (CHANNEL,)
            ),
        }
        for name, profile in profiles.items():
            out = work / "scenes" / profile.key()
            (_, stats), wall, cpu = timed(
                lambda: sample_scene_timed(log, 0, START_US, end, profile, out, "bench/0000")
            )
            detail = f"decode {stats.decode_s:.2f} s, encode {stats.encode_s:.2f} s, write {stats.write_s:.2f} s"
            rows.append((name, wall, cpu, stats.frames, detail))

        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg:
            out = work / "ffmpeg"
            out.mkdir()
            command = [ffmpeg, "-loglevel", "error", "-i", str(log.video_path(CHANNEL)), "-vf", "fps=10", "-q:v", "2",
                       str(out / "out_%05d.jpg")]
            _, wall, cpu = timed(lambda: subprocess.run(command, check=True))
            rows.append(("ffmpeg CLI -vf fps=10 -q:v 2", wall, cpu, len(list(out.iterdir())), ""))
        else:
            print("ffmpeg not found: baseline skipped (apt-get install -y ffmpeg)")

        print(f"| {'path':<45} | wall s | CPU s | frames | frames/s | notes")
        print(f"|{'-' * 47}|-------:|------:|-------:|---------:|------")
        for name, wall, cpu, frames, notes in rows:
            print(f"| {name:<45} | {wall:6.2f} | {cpu:5.2f} | {frames:6d} | {frames / wall:8.1f} | {notes}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
