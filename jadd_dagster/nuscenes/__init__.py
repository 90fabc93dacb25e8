"""nuScenes output: tokens, tables, CAN bus files, the streaming writer and invariant checks.

The merge entry point is jadd_dagster.merge.merge_scenes.
"""

from jadd_dagster.nuscenes.tables import MAX_SCENES, TABLE_NAMES, annotation_tables, build_scene_tables
from jadd_dagster.nuscenes.tokens import make_token
from jadd_dagster.nuscenes.validate import validate_dataset
from jadd_dagster.nuscenes.writer import PartWriter, PreparedScene, prepare_scene, version_name

__all__ = [
    "MAX_SCENES",
    "TABLE_NAMES",
    "PartWriter",
    "PreparedScene",
    "annotation_tables",
    "build_scene_tables",
    "make_token",
    "prepare_scene",
    "validate_dataset",
    "version_name",
]
