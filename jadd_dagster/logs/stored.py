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

    Without with_videos, a remote log's videos stay in the store (their presence is still checked):
    validation and scene statistics need only the small files.
    """
    key = log_key(log_id)
    remote = store.local_path(key) is None
    include = None if with_videos else (lambda name: not name.endswith(".mp4"))
    with store.local_folder(key, scratch=scratch, include=include) as folder:
        video_exists = (lambda name: store.exists(f"{key}/{name}")) if remote and not with_videos else None
        yield read_log(folder, video_exists=video_exists, label=store.describe(key))
