"""Benchmark: the baseline auto-labeller scored by the nuScenes devkit against ground truth.

Generates logs with objects and LIDAR_TOP, samples every 20 s scene (2 Hz keyframes, undistorted),
labels it with the baseline (timed per scene), merges a dataset whose sample_annotation table is
the ground truth, and runs nuScenes DetectionEval on the 'val' split for (a) the baseline's boxes
and (b) the ground truth itself submitted as predictions (the upper bound, which proves the path).

    python bench/bench_autolabel.py [--logs 2 --minutes 1.0 --seed 21]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

from jadd_dagster.autolabel.groundtruth import ground_truth_annotations  # noqa: E402
from jadd_dagster.autolabel.quality import score_autolabels  # noqa: E402
from jadd_dagster.autolabel.tracking import label_scene  # noqa: E402
from jadd_dagster.logs import read_log  # noqa: E402
from jadd_dagster.logs.generator import make_logs  # noqa: E402
from jadd_dagster.sampling import SamplingProfile, sample_scene  # noqa: E402
from jadd_dagster.sampling.lidar import add_lidar_frames  # noqa: E402
from jadd_dagster.scene_record import SceneRecord  # noqa: E402
from jadd_dagster.scenes import cut_scenes  # noqa: E402

CHANNELS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--logs", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_logs(root / "logs", args.logs, args.minutes, args.seed, channels=CHANNELS, image_size=(320, 180), lidar=True)
        profile = SamplingProfile(keyframe_hz=2, sweep_hz=2, undistort=True, channels=CHANNELS)
        scene_dirs, logs, labels, label_s = [], {}, {}, []
        for path in paths:
            log = read_log(path)
            windows, _ = cut_scenes(log.manifest)
            for w in windows:
                out = root / "scenes" / w.log_id / f"{w.index:04d}"
                record = sample_scene(log, w.index, w.start_time_us, w.end_time_us, profile, out, w.scene_id)
                add_lidar_frames(log, record, out)
                started = time.process_time()
                labels[w.scene_id] = label_scene(out)
                label_s.append(time.process_time() - started)
                logs[w.scene_id] = log
                scene_dirs.append(out)
        truth = {}
        for scene_dir in scene_dirs:
            record = SceneRecord.load(scene_dir)
            # Boxes without lidar points are not in the devkit's ground truth: submitting them
            # would count them as false positives.
            truth[record.scene_id] = [b for b in ground_truth_annotations(logs[record.scene_id], record)
                                      if b["num_lidar_pts"] > 0]
        logs_by_id = {log.manifest.log_id: log for log in logs.values()}
        baseline = score_autolabels(scene_dirs, logs_by_id.__getitem__, labels, "bench", 0.5)
        upper = score_autolabels(scene_dirs, logs_by_id.__getitem__, truth, "bench", 0.5)
    print(f"{len(scene_dirs)} scenes ({upper['samples']} val samples), {len(CHANNELS)} cameras at 320x180, 2 Hz keyframes; "
          f"baseline labelling {sum(label_s) / len(label_s):.2f} CPU s per scene")
    classes = upper["classes_present"]
    print("| predictions | mAP (classes present) | mAP (devkit, 10 classes) | NDS | " + " | ".join(f"AP {c}" for c in classes) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(classes))
    for name, m in (("baseline (classical vision)", baseline), ("ground truth as predictions", upper)):
        aps = " | ".join(f"{m['per_class_AP'].get(c, 0.0):.3f}" for c in classes)
        print(f"| {name} | {m['mAP_present']:.3f} | {m['mAP']:.3f} | {m['NDS']:.3f} | {aps} |")


if __name__ == "__main__":
    main()
