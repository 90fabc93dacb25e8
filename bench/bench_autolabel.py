"""Benchmark: the baseline auto-labeller scored by the nuScenes devkit against ground truth.

Generates logs with objects and LIDAR_TOP, samples every 20 s scene (2 Hz keyframes, undistorted),
labels it with the baseline twice (timed per scene): from the cameras alone, then with the scene's
LIDAR_TOP keyframes added. A dataset whose sample_annotation table is the ground truth is merged
and nuScenes DetectionEval runs on the 'jadd-val' split for (a) both baseline label sets and (b) the
ground truth itself submitted as predictions (the upper bound, which proves the path). It also
compares the labels' estimated visibility with the ground truth's (matched by centre distance).

    python bench/bench_autolabel.py [--logs 2 --minutes 1.0 --seed 21]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

from jadd_dagster.autolabel.groundtruth import ground_truth_annotations  # noqa: E402
from jadd_dagster.autolabel.quality import scenes_to_score, score_autolabels  # noqa: E402
from jadd_dagster.autolabel.tracking import label_scene  # noqa: E402
from jadd_dagster.logs import read_log  # noqa: E402
from jadd_dagster.sampling import SamplingProfile, sample_scene  # noqa: E402
from jadd_dagster.sampling.lidar import add_lidar_frames  # noqa: E402
from jadd_dagster.scene_record import SceneRecord  # noqa: E402
from jadd_dagster.scenes import cut_scenes  # noqa: E402
from jadd_dagster.sim import make_logs  # noqa: E402

CHANNELS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
VAL_FRACTION = 0.5


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
        scene_dirs, logs, labels, camera_labels, label_s, camera_s = [], {}, {}, {}, [], []
        for path in paths:
            log = read_log(path)
            windows, _ = cut_scenes(log.manifest)
            for w in windows:
                out = root / "scenes" / w.log_id / f"{w.index:04d}"
                record = sample_scene(log, w.index, w.start_time_us, w.end_time_us, profile, out, w.scene_id)
                started = time.process_time()
                camera_labels[w.scene_id] = label_scene(out)
                camera_s.append(time.process_time() - started)
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
        val = set(scenes_to_score(labels, VAL_FRACTION))  # the val split a dataset of these scenes has
        val_dirs = [d for d in scene_dirs if SceneRecord.load(d).scene_id in val]
        cameras_only = score_autolabels(val_dirs, logs_by_id.__getitem__, camera_labels, "bench")
        baseline = score_autolabels(val_dirs, logs_by_id.__getitem__, labels, "bench")
        upper = score_autolabels(val_dirs, logs_by_id.__getitem__, truth, "bench")
        agreement = visibility_agreement(labels, truth)
        unseen, total = unseen_by_cameras([SceneRecord.load(d) for d in val_dirs], logs, truth)
    print(f"{len(scene_dirs)} scenes ({upper['samples']} val samples), {len(CHANNELS)} cameras at 320x180, 2 Hz keyframes; "
          f"baseline labelling {sum(camera_s) / len(camera_s):.2f} CPU s per scene from cameras, "
          f"{sum(label_s) / len(label_s):.2f} with lidar")
    classes = upper["classes_present"]
    errors = ("mATE", "mASE", "mAOE", "mAVE", "mAAE")
    print("| predictions | mAP (classes present) | mAP (devkit, 10 classes) | NDS | " + " | ".join(errors) + " | "
          + " | ".join(f"AP {c}" for c in classes) + " |")
    print("|---|---:|---:|---:|" + "---:|" * (len(errors) + len(classes)))
    rows = (("baseline, cameras only", cameras_only), ("baseline, cameras + lidar", baseline), ("ground truth as predictions", upper))
    for name, m in rows:
        aps = " | ".join(f"{m['per_class_AP'].get(c, 0.0):.3f}" for c in classes)
        tps = " | ".join(f"{m['errors'][e]:.3f}" for e in errors)
        print(f"| {name} | {m['mAP_present']:.3f} | {m['mAP']:.3f} | {m['NDS']:.3f} | {tps} | {aps} |")
    print(f"\n{unseen} of {total} ground-truth boxes with lidar points (within 60 m) in the val scenes are seen by "
          f"none of the {len(CHANNELS)} cameras: they cap what a camera-driven labeller can recall")
    print(f"estimated visibility (cameras + lidar labels) vs ground truth, {agreement['matched']} boxes matched within "
          f"{MATCH_M} m: same level {agreement['same']:.2f}, within one level {agreement['within_one']:.2f}")


def unseen_by_cameras(records, logs, truth) -> tuple[int, int]:
    """How many of the truth boxes no camera of their scene sees (of how many): the ground truth
    of the same log without its lidar marks the boxes the cameras see with one point."""
    unseen = total = 0
    for record in records:
        log = logs[record.scene_id]
        blind = dataclasses.replace(log, manifest=dataclasses.replace(log.manifest, lidar_channels=()))
        cameras = dataclasses.replace(
            record, cameras={c: v for c, v in record.cameras.items() if c != "LIDAR_TOP"},
            frames=[f for f in record.frames if f.channel != "LIDAR_TOP"])
        seen = {(a["instance_id"], a["keyframe_index"]) for a in ground_truth_annotations(blind, cameras)
                if a["num_lidar_pts"]}
        for box in truth[record.scene_id]:
            total += 1
            unseen += (box["instance_id"], box["keyframe_index"]) not in seen
    return unseen, total


MATCH_M = 2.0
_LEVELS = ("v0-40", "v40-60", "v60-80", "v80-100")


def visibility_agreement(labels: dict[str, list[dict]], truth: dict[str, list[dict]]) -> dict:
    """Shares of labelled boxes whose visibility level equals the nearest ground-truth box's (same
    scene and keyframe, centres within MATCH_M), or is one level off."""
    same = close = matched = 0
    for scene_id, boxes in labels.items():
        for box in boxes:
            candidates = [t for t in truth.get(scene_id, ()) if t["keyframe_index"] == box["keyframe_index"]]
            if not candidates or not box["visibility"]:
                continue
            nearest = min(candidates, key=lambda t: math.dist(t["translation"][:2], box["translation"][:2]))
            if math.dist(nearest["translation"][:2], box["translation"][:2]) > MATCH_M:
                continue
            matched += 1
            gap = abs(_LEVELS.index(box["visibility"]) - _LEVELS.index(nearest["visibility"]))
            same += gap == 0
            close += gap <= 1
    return {"matched": matched, "same": same / max(matched, 1), "within_one": close / max(matched, 1)}


if __name__ == "__main__":
    main()
