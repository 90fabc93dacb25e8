"""Sampled scenes in the store: frames placed once under their nuScenes filenames, and read back.

A sampling worker writes a scene into a staging folder (frames as <CHANNEL>/<µs>.jpg), then
`place_frames` moves every frame to the profile's dataroot under the name nuScenes gives it
(samples/<CHANNEL>/<log>__<CHANNEL>__<µs>.jpg, or sweeps/...), and the record's frame paths become
those names. The merge then writes tables that reference the frames where they are: no frame is
ever copied or re-encoded after the worker wrote it (a rename on a local store, one upload on S3;
a scene's uploads, like the downloads of `frames_root`, go TRANSFER_THREADS at a time).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jadd_dagster.layout import sampled_root_key
from jadd_dagster.nuscenes.tables import sample_data_filename
from jadd_dagster.scene_record import FrameRecord, SceneRecord
from jadd_dagster.storage import ObjectStore


def place_frames(store: ObjectStore, staging: Path, record: SceneRecord) -> SceneRecord:
    """Move the record's frames from staging into the profile's dataroot; the record with frame
    paths relative to that dataroot (their nuScenes filenames). The frames are complete in the
    store before the caller publishes scene.json."""
    root = sampled_root_key(record.profile)
    placed, uploads = [], []
    for frame in record.frames:
        filename = sample_data_filename(record.log_id, frame.channel, frame.timestamp_us, frame.is_key_frame)
        source = staging / frame.path
        local = store.local_path(f"{root}/{filename}")
        if local is not None:  # same file system: a rename, no copy
            local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, local)
        else:
            uploads.append((source, f"{root}/{filename}"))
        placed.append(dataclasses.replace(frame, path=filename))
    store.upload_files(uploads)  # TRANSFER_THREADS at a time; all complete (or raised) on return
    for source, _ in uploads:
        source.unlink()
    for folder in {(staging / frame.path).parent for frame in record.frames}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return dataclasses.replace(record, frames=placed)


@contextmanager
def frames_root(
    store: ObjectStore, profile_key: str, records: list[SceneRecord], scratch: Path | None = None,
    include: Callable[[FrameRecord], bool] = lambda frame: True,
) -> Iterator[Path]:
    """A local folder where each included frame of the records lies at its path (the profile's
    dataroot itself on a local store; the frames downloaded into scratch space from S3)."""
    root = sampled_root_key(profile_key)
    local = store.local_path(root)
    if local is not None:
        yield local
        return
    with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-frames-") as tmp:
        wanted = {frame.path for record in records for frame in record.frames if include(frame)}
        store.download_files([(f"{root}/{path}", Path(tmp) / path) for path in sorted(wanted)])
        yield Path(tmp)
