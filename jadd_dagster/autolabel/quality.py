"""How good a dataset's auto-labels are: nuScenes DetectionEval against the logs' ground truth.

Only logs that carry ground truth (objects.parquet: labelled drives, the demo world) can be
scored. The scored scenes are the dataset's validation scenes (split jadd-val), at most
MAX_SCORED_SCENES of them (scenes_to_score): the score is a sample, so a dataset of 160,000 scenes
costs what one of a few hundred does. Their ground truth goes into a tables-only dataset (same
deterministic tokens, no images), and the auto-labels are submitted as predictions. With LIDAR_TOP
sampled, a ground-truth box counts when the sweep has points in it, as in nuScenes; without, when
one of the dataset's cameras sees it (autolabel/groundtruth.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from jadd_dagster.autolabel.evaluate import evaluate_detections
from jadd_dagster.autolabel.groundtruth import ground_truth_annotations
from jadd_dagster.visibility import ObjectVisibility
from jadd_dagster.nuscenes.splits import VAL
from jadd_dagster.nuscenes.tables import sample_tokens
from jadd_dagster.scene_record import SceneRecord

MAX_SCORED_SCENES = 100  # val scenes scored per build (≈ 4,000 samples of 20 s scenes at 2 Hz)


def scenes_to_score(scene_ids: Iterable[str], val_fraction: float, max_scenes: int = MAX_SCORED_SCENES) -> list[str]:
    """The dataset's val scenes (merge.assign_splits, as the dataset assigns them), sorted; at most
    max_scenes of them, spread evenly over the sorted ids."""
    from jadd_dagster.merge import assign_splits

    splits = assign_splits(sorted(set(scene_ids)), val_fraction)
    val = sorted(scene_id for scene_id, split in splits.items() if split == VAL)
    if len(val) <= max_scenes:
        return val
    step = len(val) / max_scenes
    return [val[int(i * step)] for i in range(max_scenes)]


def score_autolabels(
    scene_dirs: Sequence[Path],
    open_log: Callable[[str], object],
    labels: Mapping[str, list[dict]],
    name: str,
    frames_root: Path | None = None,
) -> dict | None:
    """DetectionEval metrics of labels (scene id -> annotation dicts) on the given sampled scene
    folders (scene.json, and the lidar keyframes if sampled), all evaluated as one split; None when
    there are no scenes or a scene's log has no ground truth. open_log(log_id) gives a DriveLog;
    frames_root is where the frame paths of the records lead (each scene folder when None).
    The metrics are evaluate_detections' plus scenes, the number scored."""
    from jadd_dagster.merge import merge_scenes

    records = {d: SceneRecord.load(d) for d in scene_dirs}
    if not records:
        return None
    logs = {r.log_id: open_log(r.log_id) for r in records.values()}
    if any(log.objects() is None for log in logs.values()):
        return None
    cameras = {log_id: ObjectVisibility(log.calibration) for log_id, log in logs.items()}  # rays once per log
    with tempfile.TemporaryDirectory(prefix="jadd-gt-") as tmp:
        root = Path(tmp) / "groundtruth"
        merged = merge_scenes(
            list(records), root, name, val_fraction=1.0, include_can_bus=False,
            annotations=lambda record, scene_dir: ground_truth_annotations(
                logs[record.log_id], record, cameras=cameras[record.log_id], scene_dir=frames_root or scene_dir),
            link_image=lambda *_: True, frame_exists=lambda *_: True,
        )
        predictions: dict[str, list[dict]] = {}
        for record in records.values():
            if record.scene_id in merged.scene_names:  # (not a scene the merge refused)
                tokens = sample_tokens(record)  # derived: the tables need not be opened for them
                for box in labels.get(record.scene_id, []):
                    predictions.setdefault(tokens[box["keyframe_index"]], []).append(box)
        eval_dir = Path(tmp) / "eval"
        return {**evaluate_detections(root, merged.versions[0], predictions, VAL, eval_dir), "scenes": merged.scenes}
