"""The object store: where logs, scene outputs, chunk manifests and datasets live.

Keys are '/'-separated relative paths. Two implementations share one interface: `LocalStore` (a
folder on this machine, the embedded default) and `S3Store` (jadd_dagster/s3store.py). Domain code
works on local folders; it gets them from the store with `local_folder` (inputs: zero-copy for a
local store, downloaded for S3) and `staged_output` (outputs: published atomically when the block
ends, with a completion marker written last).

Writes are atomic: an object is never visible as complete before it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LOGS = "logs"
CATALOG = "catalog"
SCENES = "scenes"
DATASETS = "datasets"
RUNS = "runs"


def check_key(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/") or "\\" in key:
        raise ValueError(f"object key must be relative and stay inside the store: {key!r}")
    return key.strip("/")


class ObjectStore(ABC):
    """A key-value store of files. Subclasses implement the primitives; helpers build on them."""

    url: str

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names directly under a prefix (files and 'folders'), sorted; names starting with '.'
        are writes in progress and are skipped; none if the prefix does not exist."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every object key under a prefix, recursively (keys relative to the store)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError naming the key if there is none."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically."""

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def upload_file(self, path: Path, key: str) -> None:
        """Copy a local file to a key, atomically."""

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None:
        """Copy an object without reading it here (hard link locally, server-side copy on S3)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete these objects (files, not folders); a key that does not exist is no error."""
        for key in keys:
            self.delete_prefix(key)

    def local_path(self, key: str) -> Path | None:
        """The key's path on this machine if the store is a local folder, else None."""
        return None

    # Helpers built on the primitives.

    def read_json(self, key: str):
        return json.loads(self.get_bytes(key))

    def write_json(self, key: str, data) -> None:
        self.put_bytes(key, json.dumps(data, indent=1, sort_keys=True, default=str).encode())

    def describe(self, key: str) -> str:
        """Where a key lives, for people: a path or an s3:// URL."""
        return f"{self.url.rstrip('/')}/{key}"

    @contextmanager
    def local_folder(
        self, prefix: str, scratch: Path | None = None, include: Callable[[str], bool] | None = None
    ) -> Iterator[Path]:
        """A local folder holding the objects under prefix, for reading.

        include(relative name) chooses what to fetch from a remote store (e.g. everything but the
        videos); a local store gives its own folder, where everything is.
        """
        local = self.local_path(prefix)
        if local is not None:
            yield local
            return
        with tempfile.TemporaryDirectory(dir=scratch, prefix="jadd-in-") as tmp:
            root = Path(tmp)
            for key in self.list_keys(prefix):
                relative = key[len(prefix.rstrip("/")) + 1 :]
                if include is not None and not include(relative):
                    continue
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.download_file(key, target)
            yield root

    @contextmanager
    def staged_output(self, prefix: str, last: Sequence[str] = (), scratch: Path | None = None) -> Iterator[Path]:
        """A fresh local folder to write into; published under prefix when the block succeeds.

        Files named in `last` (relative paths, e.g. the completion marker) are published after all
        others, so a reader that sees them sees a complete output. The previous content of prefix
        is replaced. Nothing is published if the block raises.
        """
        local = self.local_path(prefix)
        base = local.parent if local is not None else scratch
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=f".{Path(prefix).name}.staging-"))
        try:
            yield tmp
            self.publish_folder(tmp, prefix, last)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def publish_folder(self, folder: Path, prefix: str, last: Sequence[str] = ()) -> None:
        """Upload a local folder under prefix, replacing what was there; `last` files go last."""
        self.delete_prefix(prefix)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        late = {folder / name for name in last}
        for path in [p for p in files if p not in late] + [p for p in files if p in late]:
            self.upload_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


class LocalStore(ObjectStore):
    """A folder on this machine as the object store."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def path(self, key: str) -> Path:
        """The local path of a key (the file need not exist)."""
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def describe(self, key: str) -> str:
        return str(self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list_children(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder = self.path(prefix)
        if folder.is_file():
            yield check_key(prefix)
            return
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            rel = path.relative_to(self.root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                yield rel.as_posix()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.root}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), path)

    def upload_file(self, path: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.upload.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def copy(self, src_key: str, dst_key: str) -> None:
        src, dst = self.path(src_key), self.path(dst_key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system: fall back to a copy
            shutil.copyfile(src, dst)

    def delete_prefix(self, prefix: str) -> None:
        target = self.path(prefix)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()

    def publish_folder(self, folder: Path, prefix: str, last: Sequence[str] = ()) -> None:
        """Swap the staged folder into place: one rename publishes everything at once, the
        completion markers included, with no copy."""
        target = self.path(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        folder.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def open_store(url: str) -> ObjectStore:
    """A store from a URL: a plain path or file:// for a local folder, s3://bucket/prefix for S3."""
    if url.startswith("s3://"):
        from jadd_dagster.s3store import S3Store

        return S3Store.from_url(url)
    return LocalStore(url.removeprefix("file://"))


def write_parquet(store: ObjectStore, key: str, table) -> None:
    """Write a pandas DataFrame as one parquet object."""
    import io

    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    store.put_bytes(key, buffer.getvalue())


def read_parquet(store: ObjectStore, key: str):
    """Read a parquet object into a pandas DataFrame."""
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(key)))
