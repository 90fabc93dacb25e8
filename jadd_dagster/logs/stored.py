"""Opening a drive log that lives in the object store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jadd_dagster.logs.reader import LOG_ID_PATTERN, DriveLog, is_log_id, read_log
from jadd_dagster.storage import LOGS, ObjectStore, logger


def log_key(log_id: str) -> str:
    return f"{LOGS}/{log_id}"


def list_log_ids(store: ObjectStore) -> list[str]:
    """The folders under logs/ whose names can be log ids (partition keys, see reader.is_log_id),
    sorted; each other folder is skipped and reported (logged as a warning), so one odd name
    hides no other log. (The store has already skipped names that are no usable key.)"""
    names = store.list_children(LOGS)
    for name in names:
        if not is_log_id(name):
            logger.warning(
                "skipped log folder %r in %s: a log id must match %s without '..'",
                name, store.describe(LOGS), LOG_ID_PATTERN.pattern,
            )
    return [name for name in names if is_log_id(name)]


@contextmanager
def open_stored_log(
    store: ObjectStore, log_id: str, with_videos: bool = False, scratch: Path | None = None
) -> Iterator[DriveLog]:
    """The log, validated; its files are fetched to this machine if the store is remote.

    Its manifest's log_id must be log_id (the folder), or LogFormatError says so: no two folders
    can claim one id.

    A remote log's lidar sweeps always stay in the store (no stage reads them yet), and so do its
    videos unless with_videos: validation and scene statistics need only the small files. Their
    presence is still checked, in the store.
    """
    key = log_key(log_id)
    remote = store.local_path(key) is None

    def include(name: str) -> bool:
        return not name.startswith("lidar/") and (with_videos or not name.endswith(".mp4"))

    with store.local_folder(key, scratch=scratch, include=include) as folder:
        media_exists = (lambda name: store.exists(f"{key}/{name}")) if remote else None
        yield read_log(folder, video_exists=media_exists, label=store.describe(key), log_id=log_id)
