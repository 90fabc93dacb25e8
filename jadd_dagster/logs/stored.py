"""Opening a drive log that lives in the object store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jadd_dagster.logs.reader import DriveLog, read_log
from jadd_dagster.storage import LOGS, ObjectStore


def log_key(log_id: str) -> str:
    return f"{LOGS}/{log_id}"


@contextmanager
def open_stored_log(
    store: ObjectStore, log_id: str, with_videos: bool = False, scratch: Path | None = None
) -> Iterator[DriveLog]:
    """The log, validated; its files are fetched to this machine if the store is remote.

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
        yield read_log(folder, video_exists=media_exists, label=store.describe(key))
