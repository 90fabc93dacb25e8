"""The object store: where logs, scene outputs, chunk manifests and datasets live.

Keys are '/'-separated relative paths. Two implementations share one interface: `LocalStore` (a
folder on this machine, the embedded default) and `S3Store` (jadd_dagster/s3store.py). Domain code
works on local folders; it gets them from the store with `local_folder` (inputs: zero-copy for a
local store, downloaded for S3) and `staged_output` (outputs: published atomically when the block
ends, with a completion marker written last).

Writes are atomic: an object is never visible as complete before it is.

Keys are checked in one place (`key_problem`): relative, no empty, '.' or '..' segment, no
backslash and no control character. Listings come from other writers too (anyone who can put an
object in the bucket), so the stores skip objects and names whose keys fail that check, and report
each on the `jadd_dagster.storage` logger, instead of joining them to a local folder or failing
the whole listing. Zero-byte S3 "folder markers" (keys ending in '/', made by consoles) are
skipped quietly.

A remote store moves the many files of one output or input (a scene's ~1,200 frames) through a
bounded pool of threads (`TRANSFER_THREADS` requests in flight, `upload_files`/`download_files`):
each request waits on the network, not on the CPU. A local store renames or reads in place.

A local store writes files with mode 0666 and folders with 0777, less the process umask (0644
and 0755 with the usual umask 022), whichever operation wrote them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

LOGS = "logs"
CATALOG = "catalog"
SCENES = "scenes"
DATASETS = "datasets"
RUNS = "runs"

# Requests in flight while one output is published or one input fetched. A request to S3 waits
# tens of ms on the network and costs ~5 ms of client CPU (a 200 KB frame, bench_store_uploads):
# at 30 ms a 2-vCPU worker's CPUs become the limit from 2 x (30 + 5) / 5 = 14 requests in flight,
# so 16 hide the latency (a scene's 1,200 frames: 75 rounds instead of 1,200) while staying far
# below S3's per-prefix rates (3,500 PUT/s, 5,500 GET/s) and inside the client's connection pool
# (s3store.client_config sizes it from this). More would only queue on the CPUs.
TRANSFER_THREADS = 16


logger = logging.getLogger(__name__)


def key_problem(key: str) -> str | None:
    """Why key cannot name an object inside the store, or None when it can.

    A key is relative and '/'-separated, with no empty, '.' or '..' segment, no backslash and no
    control character (NUL included). Joined to a local folder, such a key stays inside it: an S3
    key 'logs/a//tmp/x' would otherwise name /tmp/x there."""
    if not key:
        return "empty key"
    if key.startswith("/"):
        return "absolute key"
    odd = sorted({c for c in key if c == "\\" or ord(c) < 0x20 or c == "\x7f"})
    if odd:
        return f"contains {', '.join(repr(c) for c in odd)}"
    segments = key.split("/")
    if "" in segments:
        return "empty segment"
    if "." in segments or ".." in segments:
        return "'.' or '..' segment"
    return None


def check_key(key: str) -> str:
    """The key (a trailing '/' dropped) if it names an object inside the store; ValueError naming
    the problem otherwise."""
    trimmed = key[:-1] if key.endswith("/") and len(key) > 1 else key
    problem = key_problem(trimmed)
    if problem is not None:
        raise ValueError(f"object key must be relative and stay inside the store ({problem}): {key!r}")
    return trimmed


def is_folder_marker(key: str) -> bool:
    """A zero-byte 'folder' object that S3 consoles create (a key ending in '/'); it holds no data."""
    return key.endswith("/") and key_problem(key.rstrip("/")) is None


def usable_listed_key(key: str, where: str) -> bool:
    """True if a key from a listing names an object inside the store; otherwise False, and the
    object is reported (logged as a warning naming it and the reason; folder markers quietly)."""
    if is_folder_marker(key):
        logger.debug("skipped folder marker %r in %s", key, where)
        return False
    problem = key_problem(key)
    if problem is not None:
        logger.warning("skipped object %r in %s: not a usable key (%s)", key, where, problem)
        return False
    return True


def process_umask() -> int:
    """The process's umask: read from /proc on Linux, else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class TransferError(OSError):
    """One object of a batch could not be transferred; the message names the key and the store,
    the cause (`__cause__`) is the original error."""


def transfer_all(transfers: Sequence[tuple[str, str, Callable[[], None]]], threads: int = TRANSFER_THREADS) -> None:
    """Run each (key, description, transfer) with at most `threads` in flight; return when all
    are complete.

    On the first failure no further transfer starts, the running ones are waited for (no thread
    outlives the call, an interrupt included), and the error is raised: unchanged if its message
    names the key already (a missing object, a refused key), else as a TransferError whose message
    gives the description (what went where) and the error."""
    if not transfers:
        return
    pool = ThreadPoolExecutor(max_workers=min(threads, len(transfers)), thread_name_prefix="jadd-transfer")
    try:
        futures = [(key, description, pool.submit(transfer)) for key, description, transfer in transfers]
        wait([future for _, _, future in futures], return_when=FIRST_EXCEPTION)
        for key, description, future in futures:  # the first failure in the batch's order
            if future.done() and future.exception() is not None:
                raise transfer_error(key, description, future.exception())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def transfer_error(key: str, description: str, error: BaseException) -> BaseException:
    """The error to raise for a failed transfer: itself if it names the key, else wrapped."""
    if not isinstance(error, Exception) or key in str(error) or repr(key) in str(error):
        return error
    wrapped = TransferError(f"could not {description}: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


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
    def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> None:
        """Write an object atomically. With `if_absent`, only if there is none yet:
        FileExistsError otherwise, so of two writers exactly one wins (locks are built on it)."""

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

    def keys_starting_with(self, prefix: str) -> Iterator[str]:
        """The keys whose name starts with prefix, which may end inside a name (e.g. the frames
        'samples/CAM_FRONT/<log>__CAM_FRONT__' of one log): the objects beside it, filtered."""
        folder, _, start = prefix.rpartition("/")
        return (key for key in self.list_keys(folder) if key.startswith(prefix) and "/" not in key[len(folder) + 1:])

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
            root = Path(tmp).resolve()
            base = check_key(prefix)
            wanted = []
            for key in self.list_keys(prefix):
                relative = key[len(base) + 1 :] if key.startswith(f"{base}/") else ""
                if include is not None and not include(relative):
                    continue
                target = inside(root, relative) if usable_listed_key(key, self.url) else None
                if target is not None:
                    wanted.append((key, target))
            self.download_files(wanted)
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
        """Upload a local folder under prefix, replacing what was there; the `last` files go up
        only once all the others are complete in the store, and not at all if one of them fails."""
        self.delete_prefix(prefix)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        late = {folder / name for name in last}

        def key(path: Path) -> str:
            return f"{prefix}/{path.relative_to(folder).as_posix()}"

        self.upload_files([(p, key(p)) for p in files if p not in late])  # complete when it returns
        for path in (p for p in files if p in late):  # one by one: the markers are few
            self.upload_file(path, key(path))

    def upload_files(self, pairs: Sequence[tuple[Path, str]]) -> None:
        """Upload each (local path, key), TRANSFER_THREADS at a time; every object is complete in
        the store when this returns. The first failure is raised (see transfer_all) and no upload
        is running any more by then; some of the others may be in the store. A key that names no
        object (see key_problem) fails the batch before any upload starts."""
        for _, key in pairs:
            check_key(key)
        transfer_all([
            (key, f"upload {path} to {self.describe(key)}", lambda path=path, key=key: self.upload_file(path, key))
            for path, key in pairs
        ])

    def download_files(self, pairs: Sequence[tuple[str, Path]]) -> None:
        """Download each (key, local path), TRANSFER_THREADS at a time; every file is complete
        when this returns. The first failure is raised (see transfer_all)."""
        for _, path in pairs:  # here, not in the threads: parents shared by many files
            path.parent.mkdir(parents=True, exist_ok=True)
        transfer_all([
            (key, f"download {self.describe(key)} to {path}", lambda key=key, path=path: self.download_file(key, path))
            for key, path in pairs
        ])


def inside(root: Path, relative: str) -> Path | None:
    """root/relative if relative is a usable key whose path, resolved, stays under root (a
    resolved folder); None, reported, otherwise."""
    problem = key_problem(relative)
    target = root / relative
    if problem is None and not target.resolve().is_relative_to(root):
        problem = f"its local path {target.resolve()} leaves {root}"
    if problem is not None:
        logger.warning("skipped object %r under %s: not a usable key (%s)", relative, root, problem)
        return None
    return target


class LocalStore(ObjectStore):
    """A folder on this machine as the object store.

    Symbolic links that the store's operator puts inside the root (e.g. logs/ on another disk)
    are followed; keys themselves can never leave the root (see key_problem).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        umask = process_umask()
        self.file_mode = 0o666 & ~umask
        self.folder_mode = 0o777 & ~umask

    def path(self, key: str) -> Path:
        """The local path of a key (the file need not exist)."""
        path = self.root / check_key(key)
        if not Path(os.path.normpath(path)).is_relative_to(self.root):  # cannot happen for a checked key
            raise ValueError(f"object key must be relative and stay inside the store: {key!r}")
        return path

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def describe(self, key: str) -> str:
        return str(self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def list_children(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        names = (p.name for p in folder.iterdir() if not p.name.startswith("."))
        return sorted(n for n in names if usable_listed_key(n, str(folder)))

    def list_keys(self, prefix: str) -> Iterator[str]:
        folder = self.path(prefix)
        if folder.is_file():
            yield check_key(prefix)
            return
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            rel = path.relative_to(self.root)
            if path.is_file() and not any(part.startswith(".") for part in rel.parts):
                if usable_listed_key(rel.as_posix(), str(self.root)):
                    yield rel.as_posix()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"no object {key!r} in {self.root}") from None

    def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, self.file_mode)  # mkstemp makes 0600
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if if_absent:
                try:
                    os.link(tmp, target)  # fails if the name exists: an atomic create-if-absent
                except FileExistsError:
                    raise FileExistsError(f"object {key!r} already exists in {self.root}") from None
                finally:
                    Path(tmp).unlink(missing_ok=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path(key), path)

    def upload_files(self, pairs: Sequence[tuple[Path, str]]) -> None:
        """One after another: a local copy waits on the disk, not on a network round trip."""
        for path, key in pairs:
            self.upload_file(path, key)

    def download_files(self, pairs: Sequence[tuple[str, Path]]) -> None:
        for key, path in pairs:
            self.download_file(key, path)

    def upload_file(self, path: Path, key: str) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.upload.tmp")
        shutil.copyfile(path, tmp)
        os.chmod(tmp, self.file_mode)
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
        folder.chmod(self.folder_mode)  # mkdtemp makes 0700
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
