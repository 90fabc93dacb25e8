"""Where everything lives in the object store: the one module that builds store keys.

    logs/<log_id>/                              raw drive logs (logs/format.py)
    catalog/scenes/<log_id>.parquet             one log's scenes with signal statistics
    catalog/scene_catalog.parquet               every scene (curation reads it)
    scenes/sampled/<profile>/                   a nuScenes dataroot shared by every dataset of one
        samples/<CHANNEL>/<log>__<CHANNEL>__<µs>.jpg    sampling profile: frames are written here
        sweeps/<CHANNEL>/...                            once, by the sampling workers, under their
                                                        nuScenes filenames, and never copied
        <log_id>/<index>/scene.json, can.parquet, pose.parquet   one scene's record (cache entry)
        v1.0-<dataset>-partNNNN-<hash>/         one dataset part: the 13 tables, splits.json,
                                                can_bus/ and maps/ (a nuScenes version folder)
    scenes/autolabeled/<model>/<profile>/<log_id>/<index>/labels.json   auto-labels (cache entry)
    datasets/<name>/plan.json                   the Curation/Split plan (records.DatasetPlan)
    datasets/<name>/stages/<stage>.json         what a stage did (records.StageRecord)
    datasets/<name>/index.json                  the published dataset (records.DatasetIndex)
    datasets/<name>/scenes.parquet              scene id -> part, version, scene name, split
    datasets/<name>/preview.jpg                 a keyframe with its boxes
    runs/<run_id>/<stage>/chunks/, results/     chunk manifests and per-scene result records

A part's version folder holds everything that belongs to it alone, can_bus/ and maps/ included, so
NuScenes(version, dataroot) and NuScenesCanBus(dataroot=<dataroot>/<version>) open one part on its
own, and a dataset of any size is a list of parts in one dataroot.
"""

from __future__ import annotations

from jadd_dagster.storage import CATALOG, DATASETS, LOGS, RUNS, SCENES  # noqa: F401 - the top-level folders

STAGE_SAMPLED = "sampled"
STAGE_AUTOLABELED = "autolabeled"
STAGE_MERGED = "merged"

CATALOG_KEY = f"{CATALOG}/scene_catalog.parquet"
PART_RECORD = "part.json"  # written last into a part's version folder: the part is complete


def scene_index_key(log_id: str) -> str:
    return f"{CATALOG}/scenes/{log_id}.parquet"


def sampled_root_key(profile_key: str) -> str:
    """The nuScenes dataroot of a sampling profile: its frames, scene records and dataset parts."""
    return f"{SCENES}/{STAGE_SAMPLED}/{profile_key}"


def scene_output_key(stage: str, cache_key: str, log_id: str, index: int) -> str:
    """Where a stage's output of one scene lives, e.g. scenes/sampled/<profile>/<log_id>/0003."""
    return f"{SCENES}/{stage}/{cache_key}/{log_id}/{index:04d}"


def part_key(profile_key: str, version: str) -> str:
    return f"{sampled_root_key(profile_key)}/{version}"


def dataset_key(name: str) -> str:
    return f"{DATASETS}/{name}"


def plan_key(name: str) -> str:
    return f"{dataset_key(name)}/plan.json"


def stage_record_key(name: str, stage: str) -> str:
    return f"{dataset_key(name)}/stages/{stage}.json"


def index_key(name: str) -> str:
    return f"{dataset_key(name)}/index.json"


def scene_table_key(name: str) -> str:
    return f"{dataset_key(name)}/scenes.parquet"


def preview_key(name: str) -> str:
    return f"{dataset_key(name)}/preview.jpg"


def run_stage_key(run_id: str, stage: str) -> str:
    return f"{RUNS}/{run_id}/{stage}"
