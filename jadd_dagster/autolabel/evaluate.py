"""Score 3D box predictions against a JADD dataset's sample_annotations with the nuScenes devkit.

    metrics = evaluate_detections(dataroot, "v1.0-demo", predictions, "jadd-val", output_dir)

The devkit's DetectionEval (detection_cvpr_2019 config) does the matching and scoring, opened on
the dataset's own dataroot and version: our split names (nuscenes/splits.py) are custom splits
that the devkit reads from the version's splits.json, so nothing is renamed, linked or copied.
This module writes the results file it reads and condenses its summary.

DetectionEval reads each sample's ego pose (for the boxes' distance from the ego) through its
LIDAR_TOP sample_data. A camera-only dataset has none, so the devkit object is given the reference
camera's keyframe under that key, in memory (stand_in_lidar); the ego poses of one keyframe's
sensors are milliseconds apart. (A dataset sampled with LIDAR_TOP needs no stand-in: the devkit's
DetectionEval and TrackingEval run on it as they are, see the README.) The devkit drops
ground-truth boxes with neither lidar nor radar points: ground truth without lidar marks its
observable boxes with one point.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.loaders import get_samples_of_custom_split
from nuscenes.eval.detection.evaluate import DetectionEval

from jadd_dagster.categories import DETECTION_CLASSES
from jadd_dagster.nuscenes.splits import LEGACY_NAMES, RESERVED, VAL

EVAL_CONFIG = "detection_cvpr_2019"
LIDAR_CHANNEL = "LIDAR_TOP"
REFERENCE_CAMERAS = ("CAM_FRONT",)  # stand-in for a missing LIDAR_TOP; else the first camera by name
# nuScenes category (exact name or prefix ending in '.') to detection class, as the devkit's
# category_to_detection_name; categories not listed (animals, debris, emergency vehicles...) are not scored.
_CATEGORY_CLASSES = (
    ("vehicle.car", "car"),
    ("human.pedestrian.adult", "pedestrian"),
    ("human.pedestrian.child", "pedestrian"),
    ("human.pedestrian.construction_worker", "pedestrian"),
    ("human.pedestrian.police_officer", "pedestrian"),
    ("movable_object.trafficcone", "traffic_cone"),
    ("movable_object.barrier", "barrier"),
    ("vehicle.bus.bendy", "bus"),
    ("vehicle.bus.rigid", "bus"),
    ("vehicle.construction", "construction_vehicle"),
    ("vehicle.trailer", "trailer"),
    ("vehicle.truck", "truck"),
    ("vehicle.motorcycle", "motorcycle"),
    ("vehicle.bicycle", "bicycle"),
)
CATEGORY_TO_CLASS = dict(_CATEGORY_CLASSES)
# The devkit's true-positive errors (metres, 1 - IoU, radians, m/s, 1 - accuracy) by their paper names.
TP_ERRORS = {"mATE": "trans_err", "mASE": "scale_err", "mAOE": "orient_err", "mAVE": "vel_err", "mAAE": "attr_err"}


def detection_name(category: str) -> str | None:
    """The nuScenes detection class of a category name (or of a detection class itself), or None."""
    if category in DETECTION_CLASSES:
        return category
    return CATEGORY_TO_CLASS.get(category)


def detection_results(predictions: Mapping[str, Sequence[Mapping]], sample_tokens: Iterable[str]) -> dict:
    """The devkit's results file content for the given samples (a sample without predictions gets []).

    Each prediction has translation [x, y, z] (map frame, metres), size [w, l, h], rotation [w, x, y, z],
    detection_name or category, detection_score or score, and optionally velocity [vx, vy] (m/s) and
    attribute_name (or attributes, a list whose first entry is taken). Boxes of categories with no
    detection class are left out.
    """
    results: dict[str, list[dict]] = {}
    for token in sample_tokens:
        boxes = []
        for box in predictions.get(token, ()):
            name = detection_name(str(box.get("detection_name") or box.get("category", "")))
            if name is None:
                continue
            boxes.append(
                {
                    "sample_token": token,
                    "translation": [float(v) for v in box["translation"]],
                    "size": [float(v) for v in box["size"]],
                    "rotation": [float(v) for v in box["rotation"]],
                    "velocity": [float(v) for v in box.get("velocity", (0.0, 0.0))][:2],
                    "detection_name": name,
                    "detection_score": float(box.get("detection_score", box.get("score", 1.0))),
                    "attribute_name": str(box.get("attribute_name") or next(iter(box.get("attributes") or ()), "")),
                }
            )
        results[token] = boxes
    meta = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
    return {"meta": meta, "results": results}


def predictions_from_annotations(
    nusc: NuScenes, sample_tokens: Iterable[str], observable_only: bool = True
) -> dict[str, list[dict]]:
    """The dataset's own sample_annotations of the given samples as predictions with score 1.0,
    velocity from the devkit's box_velocity and their attribute.

    With observable_only, boxes with neither lidar nor radar points are left out, as the devkit
    leaves them out of the ground truth (they would otherwise count as false positives).
    """
    predictions: dict[str, list[dict]] = {}
    for token in sample_tokens:
        boxes = []
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            if observable_only and ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            velocity = nusc.box_velocity(ann_token)[:2]
            attributes = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
            boxes.append(
                {
                    "translation": list(ann["translation"]),
                    "size": list(ann["size"]),
                    "rotation": list(ann["rotation"]),
                    "velocity": [0.0 if math.isnan(v) else float(v) for v in velocity],  # NaN: no neighbour
                    "category": ann["category_name"],
                    "attributes": attributes,
                    "detection_score": 1.0,
                }
            )
        predictions[token] = boxes
    return predictions


def split_scenes(dataroot: Path, version: str, split: str) -> list[str]:
    """Scene names of a split in the version's splits.json."""
    splits = json.loads((Path(dataroot) / version / "splits.json").read_text(encoding="utf-8"))
    if split not in splits:
        raise ValueError(f"{version} has no split {split!r}; it has {sorted(splits)}")
    return list(splits[split])


def check_split_name(version: str, split: str) -> None:
    """ValueError for a split name the devkit reserves (it would score the official nuScenes scenes
    of it, or assert an official version), naming ours instead."""
    if split in RESERVED:
        renamed = LEGACY_NAMES.get(split)
        hint = f" (the dataset's {split!r} split is {renamed!r} since the rename)" if renamed else ""
        raise ValueError(
            f"{version}: split {split!r} is one the nuScenes devkit reserves for its official scene lists{hint}; "
            "datasets written before the rename have train/val splits and must be merged again (a rebuild does it)"
        )


def stand_in_lidar(nusc: NuScenes) -> int:
    """Give every sample without a LIDAR_TOP keyframe its reference camera's keyframe under that
    key, in the devkit object only (see the module docstring); returns how many samples got one.
    Raises ValueError for a sample with no keyframe at all."""
    patched = 0
    for sample in nusc.sample:
        data = sample["data"]
        if LIDAR_CHANNEL in data:
            continue
        cameras = [c for c in REFERENCE_CAMERAS if c in data] or sorted(data)
        if not cameras:
            raise ValueError(f"sample {sample['token']} has no keyframe to take the ego pose from")
        data[LIDAR_CHANNEL] = data[cameras[0]]
        patched += 1
    return patched


def evaluate_detections(
    dataroot: Path,
    version: str,
    predictions: Mapping[str, Sequence[Mapping]],
    eval_split: str = VAL,
    output_dir: Path | None = None,
) -> dict:
    """nuScenes detection metrics of predictions (sample token -> boxes, see detection_results) on
    one split of dataroot/version, computed by the devkit's DetectionEval. Samples of the split
    missing from predictions count as predicting nothing; samples outside the split are ignored.

    Returns mAP and NDS as the devkit reports them (means over all 10 classes: a class absent from the
    split's ground truth scores AP 0), per_class_AP (AP averaged over the distance thresholds),
    classes_present (classes with ground truth boxes the devkit kept), mAP_present (mean AP over
    those), errors (mATE, mASE, mAOE, mAVE, mAAE: the devkit's true-positive errors averaged over
    the classes present that define them; the devkit's own means count absent classes as 1) and
    samples. output_dir receives results.json and the devkit's metrics_summary.json.
    """
    check_split_name(version, eval_split)
    split_scenes(dataroot, version, eval_split)  # (a clear error for a split the version lacks)
    output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="jadd-eval-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    stand_in_lidar(nusc)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tokens = get_samples_of_custom_split(split_name=eval_split, nusc=nusc)  # as DetectionEval takes them
    result_path = output_dir / "results.json"
    results = detection_results(predictions, tokens)
    result_path.write_text(json.dumps(results))
    if not any(results["results"].values()):
        return _nothing_predicted(nusc, eval_split, len(tokens))  # DetectionEval raises on no boxes at all
    # main() prints its summary even when not verbose, and the loaders draw tqdm bars on stderr.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        evaluation = DetectionEval(
            nusc, config=config_factory(EVAL_CONFIG), result_path=str(result_path), eval_set=eval_split,
            output_dir=str(output_dir), verbose=False,
        )
        present = sorted({box.detection_name for box in evaluation.gt_boxes.all})
        summary = evaluation.main(render_curves=False)
    per_class = {name: float(ap) for name, ap in summary["mean_dist_aps"].items()}
    return {
        "mAP": float(summary["mean_ap"]),
        "NDS": float(summary["nd_score"]),
        "per_class_AP": per_class,
        "classes_present": present,
        "mAP_present": sum(per_class[c] for c in present) / len(present) if present else 0.0,
        "errors": {name: _mean_present(summary["label_tp_errors"], present, key) for name, key in TP_ERRORS.items()},
        "samples": len(tokens),
    }


def _nothing_predicted(nusc: NuScenes, split: str, samples: int) -> dict:
    """The metrics DetectionEval gives when nothing is predicted (it refuses to run then): AP 0,
    every true-positive error 1 (so NDS 0), over the ground-truth classes it would keep."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes, load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox

    config = config_factory(EVAL_CONFIG)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tokens = get_samples_of_custom_split(split_name=split, nusc=nusc)  # as DetectionEval does for a custom split
        truth = load_gt_of_sample_tokens(nusc, tokens, DetectionBox)
        truth = filter_eval_boxes(nusc, add_center_dist(nusc, truth), config.class_range)
    present = sorted({box.detection_name for box in truth.all})
    return {
        "mAP": 0.0, "NDS": 0.0, "per_class_AP": {name: 0.0 for name in DETECTION_CLASSES},
        "classes_present": present, "mAP_present": 0.0,
        "errors": {name: math.nan for name in TP_ERRORS}, "samples": samples,
    }


def _mean_present(label_errors: Mapping[str, Mapping[str, float]], present: Sequence[str], key: str) -> float:
    """Mean of one true-positive error over the classes present where it is defined (the devkit
    gives NaN for e.g. a traffic cone's orientation); NaN when none defines it."""
    values = [float(label_errors[c][key]) for c in present if not math.isnan(float(label_errors[c][key]))]
    return sum(values) / len(values) if values else math.nan
