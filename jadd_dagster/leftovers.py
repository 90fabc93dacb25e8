"""Leftovers of killed builds in a local store: staging folders and temporary files, removed safely.

A local store writes every object and folder under a hidden temporary name first (`.<name>.staging-*`,
`.<name>.*.tmp`, `.<name>.upload.tmp`, `.<name>.old-<pid>`, `.merge-*`) and renames it into place;
a process killed with SIGKILL leaves those behind. They are invisible to every listing but take
disk space. One is removed only when nothing in it changed for `older_than_s`: a live build keeps
writing into what it stages (a scene takes seconds, a part minutes), so its folders are never
touched. On S3 nothing is staged in the bucket (incomplete multipart uploads are for a lifecycle
rule: AbortIncompleteMultipartUpload).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

LEFTOVER = re.compile(r"^\.(.+\.staging-.+|.+\.tmp|.+\.old-\d+|merge-.+)$")
SKIPPED = {"samples", "sweeps"}  # frames are renamed into place, never staged there
DEFAULT_AGE_S = 3600.0


@dataclass(frozen=True)
class Leftover:
    path: Path
    bytes: int


def _newest_and_size(path: Path) -> tuple[float, int]:
    """The newest modification time (s) in a file or tree and its size in bytes, links not followed."""
    info = path.lstat()
    newest, size = info.st_mtime, info.st_size if not path.is_dir() else 0
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                item = os.lstat(os.path.join(root, name))
                newest = max(newest, item.st_mtime)
                size += item.st_size if name in files else 0
    return newest, size


def find_leftovers(
    root: Path, older_than_s: float = DEFAULT_AGE_S, now: float | None = None, max_depth: int | None = None
) -> list[Leftover]:
    """Leftovers under root (a local store's folder, or a part of it) untouched for older_than_s,
    looking at most max_depth folders down (None: everywhere)."""
    now = time.time() if now is None else now
    found = []
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        for name in [*dirs, *files]:
            if LEFTOVER.match(name):
                path = Path(folder) / name
                newest, size = _newest_and_size(path)
                if now - newest >= older_than_s:
                    found.append(Leftover(path, size))
        deeper = max_depth is None or depth < max_depth
        dirs[:] = [d for d in dirs if deeper and not LEFTOVER.match(d) and d not in SKIPPED
                   and not os.path.islink(os.path.join(folder, d))]
    return sorted(found, key=lambda item: str(item.path))


def remove_leftovers(root: Path, older_than_s: float = DEFAULT_AGE_S, max_depth: int | None = None) -> list[Leftover]:
    """Delete the leftovers under root untouched for older_than_s; what was removed, with sizes."""
    removed = []
    for item in find_leftovers(root, older_than_s, max_depth=max_depth):
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        removed.append(item)
    return removed
