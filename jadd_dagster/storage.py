"""The object store: where logs, scene outputs, chunk manifests and datasets live.

Keys are '/'-separated paths. The embedded default is a local folder; domain code reads and writes
through `LocalStore.path(key)` as plain files. (An S3 implementation behind the same interface
comes with the AWS deployment; see the README's "not yet" list.)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

LOGS = "logs"
CATALOG = "catalog"
SCENES = "scenes"
DATASETS = "datasets"
RUNS = "runs"


class LocalStore:
    """A folder on this machine as the object store."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        """The local path of a key (the folder or file need not exist)."""
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"object key must be relative and stay inside the store: {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list_children(self, prefix: str) -> list[str]:
        """Names of the entries directly under a prefix, sorted; none if it does not exist.

        Names starting with '.' are writes in progress (staging folders, temp files) and are skipped.
        """
        folder = self.path(prefix)
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def write_json(self, key: str, data) -> Path:
        """Write JSON atomically: readers see the old object or the whole new one, never a part."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True, default=str)
        os.replace(tmp, target)
        return target

    def read_json(self, key: str):
        return json.loads(self.path(key).read_text())
