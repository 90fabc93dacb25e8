"""Benchmark: what the baseline auto-labeller's time follows (images a scene, their pixels).

Generates logs with objects at several camera sizes, samples 20 s scenes (2 Hz keyframes,
undistorted, as a labelled dataset is) with 1 and 3 cameras, and labels each scene with the
baseline on one thread, timing CPU seconds (process time). Prints a table: seconds a scene, an
image (keyframes × cameras) and an image megapixel, against the cost table's flat fallback before
this change (23 s a scene), the baseline.

    python bench/bench_autolabel_rate.py [--sizes 160x90 320x180 640x360 --scenes 2 --seed 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JADD_SAMPLING_THREADS", "1")

from jadd_dagster.autolabel.tracking import label_scene  # noqa: E402
from jadd_dagster.logs import read_log  # noqa: E402
from jadd_dagster.sampling import SamplingProfile, sample_scene  # noqa: E402
from jadd_dagster.scenes import cut_scenes  # noqa: E402
from jadd_dagster.sim import make_logs  # noqa: E402

CHANNELS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
FLAT_BEFORE_S = 23.0  # the cost table's fallback a scene before it followed the images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["160x90", "320x180", "640x360"])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            [path] = make_logs(root / size / "logs", 1, args.scenes * 20 / 60 + 0.01, args.seed, channels=CHANNELS,
                               image_size=(width, height))
            log = read_log(path)
            windows, _ = cut_scenes(log.manifest)
            for cameras in (CHANNELS[:1], CHANNELS):
                profile = SamplingProfile(keyframe_hz=2, sweep_hz=2, undistort=True, channels=cameras)
                seconds, images = [], 0
                for w in windows[: args.scenes]:
                    out = root / size / str(len(cameras)) / f"{w.index:04d}"
                    record = sample_scene(log, w.index, w.start_time_us, w.end_time_us, profile, out, w.scene_id)
                    images = sum(f.is_key_frame for f in record.frames)
                    started = time.process_time()
                    label_scene(out)
                    seconds.append(time.process_time() - started)
                per_scene = statistics.median(seconds)
                megapixels = width * height / 1e6
                rows.append((size, len(cameras), images, per_scene, per_scene / images, per_scene / images / megapixels))
    print(f"{args.scenes} scenes of 20 s a case, 2 Hz keyframes, undistorted; median CPU s a scene (process time); "
          f"load average {os.getloadavg()[0]:.1f}")
    print()
    print("| camera size | cameras | images a scene | CPU s a scene | CPU ms an image | CPU ms an image MP | "
          f"before: flat {FLAT_BEFORE_S:g} s a scene, × measured |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, cameras, images, per_scene, per_image, per_mp in rows:
        print(f"| {size} | {cameras} | {images} | {per_scene:.2f} | {per_image * 1e3:.1f} | {per_mp * 1e3:.0f} | "
              f"{FLAT_BEFORE_S / per_scene:.1f}x |")


if __name__ == "__main__":
    main()
