"""Benchmark: publishing (and reading back) a scene-sized folder on S3, one request at a time
against TRANSFER_THREADS at a time.

The S3 server is the tests' SeaweedFS (`weed mini` on 127.0.0.1, started with the helpers of
tests/services/s3.py), so a request's latency is ~1 ms here; on AWS S3 it is tens of ms, and the
gain of concurrent requests there is larger than measured here (this bench adds no latency).

Each folder holds `files` random (incompressible, like JPEG) files of --kb KB under two camera
folders, plus scene.json as the completion marker. Rows:
- upload, sequential (before): the previous `ObjectStore.publish_folder` and `S3Store.upload_file`
  (kept below as the baseline): one managed transfer (boto3 `upload_file`) after another, the
  marker last
- upload, sequential put_object: the same loop with today's `S3Store.upload_file` (one
  put_object a file below the multipart threshold), to separate the two changes
- upload, concurrent (now): `S3Store.publish_folder` now (`upload_files`, TRANSFER_THREADS in
  flight), the marker last
- download, sequential (before) / sequential get_object / concurrent (now): the same folder read
  back as `local_folder` does: the previous loop of managed `download_file`s, the same loop with
  today's `S3Store.download_file` (one GET a small object), and `download_files`
Each cell is the median of --repeat runs; speedup is the "before" row's seconds / the row's
seconds, same size, same run; client CPU ms a file is this process's CPU time (all threads) over
the files. Client and server share this machine's CPUs.

Usage: python bench/bench_store_uploads.py [--files 600 1200] [--kb 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from services.s3 import S3Server, stop, wait_until_serving, weed_binary, weed_mini_command

from jadd_dagster.s3store import S3Store, transfer_config
from jadd_dagster.storage import TRANSFER_THREADS, ObjectStore, check_key, inside, usable_listed_key

MARKER = "scene.json"
UPLOADS = ("upload sequential (before)", "upload sequential put_object", "upload concurrent (now)")
DOWNLOADS = ("download sequential (before)", "download sequential get_object", "download concurrent (now)")


@contextlib.contextmanager
def s3_server(root: Path) -> Iterator[S3Server]:
    """SeaweedFS on 127.0.0.1, as the tests' `s3_server` fixture starts it."""
    data_dir = root / "data"
    data_dir.mkdir()
    log = root / "weed.log"
    command, ports = weed_mini_command(weed_binary(), data_dir)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports[0]}", access_key="jadd-bench-access-key",
                      secret_key="jadd-bench-secret-key")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key,
           "TMPDIR": str(root)}
    env.pop("S3_BUCKET", None)
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    try:
        wait_until_serving(server, process, log)
        yield server
    finally:
        stop(process, ports)


def managed_upload_file(store: S3Store, path: Path, key: str) -> None:
    """S3Store.upload_file before session 7: a managed transfer (a thread pool of its own) per file."""
    store.client.upload_file(str(path), store.bucket, store.object_key(key), Config=transfer_config())


def publish_folder_sequential(store: S3Store, folder: Path, prefix: str, last=(), upload=None) -> None:
    """The baseline: ObjectStore.publish_folder before session 7, one upload after another, each
    with `upload(store, path, key)` (S3Store.upload_file now when None)."""
    upload = upload or (lambda store, path, key: store.upload_file(path, key))
    store.delete_prefix(prefix)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    late = {folder / name for name in last}
    for path in [p for p in files if p not in late] + [p for p in files if p in late]:
        upload(store, path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def managed_download_file(store: S3Store, key: str, path: Path) -> None:
    """S3Store.download_file before session 7: a managed transfer (HEAD, GET, a thread pool) per file."""
    store.client.download_file(store.bucket, store.object_key(key), str(path), Config=transfer_config())


def download_sequential(store: S3Store, prefix: str, root: Path, download=None) -> None:
    """The baseline: ObjectStore.local_folder's loop before session 7, one download after another,
    each with `download(store, key, path)` (S3Store.download_file now when None)."""
    download = download or (lambda store, key, path: store.download_file(key, path))
    base = check_key(prefix)
    for key in store.list_keys(prefix):
        target = inside(root, key[len(base) + 1:]) if usable_listed_key(key, store.url) else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            download(store, key, target)


def download_concurrent(store: ObjectStore, prefix: str, root: Path) -> None:
    """ObjectStore.local_folder's listing now, into root: download_files."""
    base = check_key(prefix)
    wanted = [(key, inside(root, key[len(base) + 1:])) for key in store.list_keys(prefix)]
    store.download_files([(key, target) for key, target in wanted if target is not None])


def scene_folder(folder: Path, files: int, kb: int) -> int:
    """A staged scene: `files` random files of kb KB and the marker; its size in bytes."""
    for i in range(files):
        path = folder / ("CAM_FRONT" if i % 2 else "CAM_BACK") / f"{1_000_000 + i * 100_000}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kb * 1024))
    (folder / MARKER).write_text("{}")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed(action) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all threads) of action()."""
    started, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[600, 1200])
    parser.add_argument("--kb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; TRANSFER_THREADS = {TRANSFER_THREADS}; "
          f"local SeaweedFS (~1 ms a request; AWS S3: tens of ms)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="jadd-bench-uploads-") as tmp, s3_server(Path(tmp)) as server:
        store = S3Store(server.new_bucket(), prefix="jadd", client=server.client())
        for files in args.files:
            folder = Path(tmp) / f"scene-{files}"
            size = scene_folder(folder, files, args.kb)
            times = {mode: [] for mode in (*UPLOADS, *DOWNLOADS)}
            for run in range(args.repeat):
                prefix = f"scenes/{files}/{run}"
                # Alternate the order, so none always meets a warmer server.
                uploads = [
                    (UPLOADS[0], lambda: publish_folder_sequential(store, folder, prefix, [MARKER], managed_upload_file)),
                    (UPLOADS[1], lambda: publish_folder_sequential(store, folder, prefix, [MARKER])),
                    (UPLOADS[2], lambda: store.publish_folder(folder, prefix, [MARKER])),
                ]
                for mode, action in uploads if run % 2 == 0 else uploads[::-1]:
                    times[mode].append(timed(action))
                downloads = (lambda *a: download_sequential(*a, managed_download_file), download_sequential,
                             download_concurrent)
                for mode, download in zip(DOWNLOADS, downloads):
                    with tempfile.TemporaryDirectory(dir=tmp) as into:
                        times[mode].append(timed(lambda: download(store, prefix, Path(into))))
                        got = sum(1 for p in Path(into).rglob("*") if p.is_file())
                        assert got == files + 1, f"{mode}: {got} files back, {files + 1} expected"
                store.delete_prefix(prefix)
            for modes in (UPLOADS, DOWNLOADS):
                baseline = statistics.median(wall for wall, _ in times[modes[0]])
                for mode in modes:
                    seconds = statistics.median(wall for wall, _ in times[mode])
                    cpu_ms = statistics.median(cpu for _, cpu in times[mode]) / (files + 1) * 1000
                    operation, _, how = mode.partition(" ")
                    rows.append((operation, how, files + 1, size / 1e6, seconds, (files + 1) / seconds,
                                 baseline / seconds, cpu_ms))

    print(f"\nmedian of {args.repeat} runs, {args.kb} KB files + the marker; load now {os.getloadavg()[0]:.1f}\n")
    print("| operation | mode | files | MB | seconds | files/s | speedup | client CPU ms a file |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for operation, mode, files, mb, seconds, rate, speedup, cpu_ms in rows:
        print(f"| {operation} | {mode} | {files} | {mb:.0f} | {seconds:.2f} | {rate:.0f} | {speedup:.2f}x | {cpu_ms:.1f} |")


if __name__ == "__main__":
    main()
