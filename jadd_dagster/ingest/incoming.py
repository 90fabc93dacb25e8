"""Drives uploaded to the store as MCAP or rosbag2, converted into logs by the drive-log sensor.

    incoming/<drive>/*.mcap             the drive's MCAP files (any number: split, overlapping, with gaps)
    incoming/<drive>/metadata.yaml      or one rosbag2 bag: the drive's folder is the bag directory
    incoming/<drive>/*.db3                 (metadata.yaml and its .db3 files)
    incoming/<drive>/<bag>/...          or several bag directories of one drive
    incoming/<drive>/*.dbc              the DBC file, when the topic map reads raw CAN frames
    incoming/<drive>/topic-map.yaml     uploaded last: it marks the drive as complete

A drive is converted once into logs/<drive>/ (its folder name is the log id), which the sensor
then registers like any uploaded log. A drive that cannot be converted gets
incoming/<drive>/ingest-error.txt with the reason and is not tried again until that file is
deleted; one bad drive never stops the others.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from jadd_dagster.ingest.convert import ingest_drive
from jadd_dagster.ingest.mcap_reader import IngestError
from jadd_dagster.ingest.bag_layout import METADATA
from jadd_dagster.ingest.topic_map import TopicMapError, load_topic_map
from jadd_dagster.logs.format import MANIFEST
from jadd_dagster.logs.reader import LogFormatError, is_log_id
from jadd_dagster.logs.stored import log_key
from jadd_dagster.storage import LOGS, ObjectStore

INCOMING = "incoming"
TOPIC_MAP = "topic-map.yaml"
INGEST_ERROR = "ingest-error.txt"


@dataclass(frozen=True)
class DriveOutcome:
    """What happened to one incoming drive: error is None when its log was written."""

    drive: str
    error: str | None


def _has_recording(store: ObjectStore, drive: str, names: set[str]) -> bool:
    """Whether a drive's folder holds MCAP files, is a bag directory or holds bag directories."""
    if METADATA in names or any(n.endswith(".mcap") for n in names):
        return True
    return any(METADATA in store.list_children(f"{INCOMING}/{drive}/{n}") for n in names
               if not n.endswith((".mcap", ".db3", ".dbc", ".yaml", ".txt")))


def pending_drives(store: ObjectStore) -> list[str]:
    """Incoming drives with their topic map and no log or recorded error yet, sorted."""
    out = []
    for drive in store.list_children(INCOMING):
        names = set(store.list_children(f"{INCOMING}/{drive}"))
        if TOPIC_MAP not in names or INGEST_ERROR in names or not _has_recording(store, drive, names):
            continue
        if is_log_id(drive) and store.exists(f"{log_key(drive)}/{MANIFEST}"):
            continue
        out.append(drive)
    return out


def convert_drive(store: ObjectStore, drive: str) -> Path | None:
    """Convert incoming/<drive> into logs/<drive> (published with its manifest last on a remote
    store); raises IngestError, TopicMapError or LogFormatError."""
    if not is_log_id(drive):
        raise IngestError(f"{INCOMING}/{drive}: the folder's name is the log id and cannot be one")
    with store.local_folder(f"{INCOMING}/{drive}") as folder:
        source_format, files = _recording(folder, f"{INCOMING}/{drive}")
        dbcs = sorted(folder.glob("*.dbc"))
        if len(dbcs) > 1:
            raise IngestError(f"{INCOMING}/{drive}: more than one DBC file ({', '.join(p.name for p in dbcs)})")
        topic_map = load_topic_map(folder / TOPIC_MAP)
        dbc = dbcs[0] if dbcs else None
        logs = store.local_path(LOGS)
        if logs is not None:
            return ingest_drive(files, logs, topic_map, dbc, log_id=drive, format=source_format).path
        with tempfile.TemporaryDirectory(prefix="jadd-ingest-") as tmp:
            result = ingest_drive(files, Path(tmp), topic_map, dbc, log_id=drive, format=source_format)
            store.publish_folder(result.path, log_key(drive), last=[MANIFEST])
    return None


def _recording(folder: Path, where: str) -> tuple[str, list[Path]]:
    """The drive's format and what to read: its MCAP files, the folder itself as one bag, or the
    bag directories in it."""
    mcaps = sorted(folder.glob("*.mcap"))
    bags = [folder] if (folder / METADATA).is_file() else sorted(p.parent for p in folder.glob(f"*/{METADATA}"))
    if mcaps and bags:
        raise IngestError(f"{where}: both MCAP files and rosbag2 bags; upload one drive's recording in one format")
    return ("mcap", mcaps) if mcaps else ("rosbag2", bags)


def convert_and_record(store: ObjectStore, drive: str) -> DriveOutcome:
    """Convert one pending drive; a failure is recorded in its ingest-error.txt (so it is not
    tried again until that file is deleted) and returned, never raised."""
    try:
        convert_drive(store, drive)
        return DriveOutcome(drive, None)
    except (IngestError, TopicMapError, LogFormatError) as error:
        store.put_bytes(f"{INCOMING}/{drive}/{INGEST_ERROR}", f"{error}\n".encode())
        return DriveOutcome(drive, str(error))


def convert_incoming_drives(store: ObjectStore, limit: int = 1) -> list[DriveOutcome]:
    """Convert up to limit pending drives, in this process (what `jadd ingest` does for a folder);
    the code location does it in a run of convert_drive_job, one per drive."""
    return [convert_and_record(store, drive) for drive in pending_drives(store)[:limit]]
