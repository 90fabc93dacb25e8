"""What a rosbag2 recording looks like on disk, without importing rosbags (slow to import: every
Dagster run process imports the ingest package, and only bags need the reader)."""

from __future__ import annotations

from pathlib import Path

METADATA = "metadata.yaml"


def is_rosbag2(path: Path) -> bool:
    """Whether a path is a rosbag2 recording: a bag directory (with metadata.yaml) or a .db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / METADATA).is_file()) or path.suffix == ".db3"
