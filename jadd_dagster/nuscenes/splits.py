"""Our split names in splits.json: ones the devkit takes as custom splits.

The devkit reserves train, val, test, mini_train, mini_val, train_detect and train_track
(nuscenes.utils.splits.create_splits_scenes) for the official nuScenes scene lists: asked for one
of those, DetectionEval and TrackingEval take the official scenes and assert an official version
("Requested split val which is not compatible with NuScenes version ..."). Any other name is read
from <dataroot>/<version>/splits.json (get_scenes_of_custom_split). So every part of every JADD
dataset has the splits TRAIN and VAL, the same two names whatever the dataset:

    DetectionEval(nusc, config, result_path, eval_set="jadd-val", output_dir=...)

Datasets written before the rename named them train and val (LEGACY_NAMES); their parts' content
hash changed with the merge format (part_merge.MERGE_FORMAT), so a rebuild merges them again.
"""

from __future__ import annotations

TRAIN = "jadd-train"
VAL = "jadd-val"
SPLITS = (TRAIN, VAL)
# The devkit's predefined splits (nuscenes-devkit 1.2.0, create_splits_scenes); tests/test_evaluate
# checks this list against the installed devkit.
RESERVED = frozenset({"train", "val", "test", "mini_train", "mini_val", "train_detect", "train_track"})
LEGACY_NAMES = {"train": TRAIN, "val": VAL}  # what splits were called before


def split_name(is_val: bool) -> str:
    return VAL if is_val else TRAIN


def current_name(name: str) -> str:
    """A split name as written now: an old 'train' or 'val' (a plan stored before the rename) is
    TRAIN or VAL; ours pass through."""
    return LEGACY_NAMES.get(name, name)
