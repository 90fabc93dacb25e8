"""Reading a built dataset: its index, and its parts as nuscenes-devkit objects.

    from jadd_dagster.datasets import iter_parts
    for part, nusc in iter_parts("store/datasets/demo/index.json"):
        for sample in nusc.sample: ...

A dataset is a list of parts (records.DatasetIndex); each part is a nuScenes version in the
dataset's dataroot, opened on its own, so a loader holds one part in memory at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from jadd_dagster.records import DatasetIndex, IndexPart, from_json


def load_index(path: str | Path) -> DatasetIndex:
    """A dataset's index.json (datasets/<name>/index.json in the store)."""
    return from_json(DatasetIndex, json.loads(Path(path).read_text()))


def iter_parts(
    index: str | Path | DatasetIndex, dataroot: str | Path | None = None, verbose: bool = False
) -> Iterator[tuple[IndexPart, object]]:
    """Each part of the dataset with its nuscenes.NuScenes object, in part order. dataroot replaces
    the index's own (e.g. where an S3 dataroot was synced or mounted)."""
    from nuscenes.nuscenes import NuScenes

    index = index if isinstance(index, DatasetIndex) else load_index(index)
    root = str(dataroot or index.dataroot)
    for part in index.parts:
        yield part, NuScenes(version=part.version, dataroot=root, verbose=verbose)


def part_can_bus(dataroot: str | Path, version: str):
    """The devkit's CAN bus API over one part (its can_bus/ lives in the version folder)."""
    from nuscenes.can_bus.can_bus_api import NuScenesCanBus

    return NuScenesCanBus(dataroot=str(Path(dataroot) / version))
