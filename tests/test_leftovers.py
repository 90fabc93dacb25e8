"""What killed builds leave staged in a local store is removed, never what a live build writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jadd_dagster.cli import main as jadd
from jadd_dagster.leftovers import find_leftovers, remove_leftovers


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (stamp, stamp))
    os.utime(path, (stamp, stamp))


def test_old_staging_folders_go_and_recent_ones_stay(tmp_path):
    log = tmp_path / "scenes" / "sampled" / "p" / "log-1"
    old = log / ".0003.staging-abc"
    (old / "CAM_FRONT").mkdir(parents=True)
    (old / "CAM_FRONT" / "1.jpg").write_bytes(b"x" * 1000)
    live = log / ".0004.staging-def"
    live.mkdir()
    (live / "scene.json").write_bytes(b"{}")
    tmp_file = tmp_path / "datasets" / "d" / ".index.json.abc.tmp"
    tmp_file.parent.mkdir(parents=True)
    tmp_file.write_bytes(b"y" * 10)
    kept = log / "0001"  # a published scene: not a leftover
    kept.mkdir()
    (kept / "scene.json").write_bytes(b"{}")
    _age(tmp_path, 7200)
    (live / "scene.json").write_bytes(b"{...}")  # a live build just wrote here
    removed = remove_leftovers(tmp_path, older_than_s=3600)
    assert sorted(item.path for item in removed) == sorted([old, tmp_file])
    assert sum(item.bytes for item in removed) == 1010
    assert live.exists() and kept.exists() and not old.exists() and not tmp_file.exists()


def test_a_sampling_worker_killed_mid_scene_leaves_a_leftover_that_clean_removes(tmp_path, capsys):
    """SIGKILL a real worker while it writes a scene; `jadd store clean` reclaims the folder."""
    from jadd_dagster.compute.chunks import ChunkManifest
    from jadd_dagster.sim import make_logs
    from jadd_dagster.logs.reader import read_log
    from jadd_dagster.planning import sampling_profile
    from jadd_dagster.scenes import cut_scenes
    from jadd_dagster.spec import DatasetSpec
    from jadd_dagster.storage import LocalStore
    from jadd_dagster import build
    import pandas as pd

    work = tmp_path / "work"
    store = LocalStore(work / "store")
    # One 20 s scene: the worker is killed at its first staged frame.
    (path,) = make_logs(work / "store" / "logs", 1, 0.4, seed=2, channels=("CAM_FRONT",), image_size=(320, 180))
    rows = pd.DataFrame([{"scene_id": w.scene_id, "log_id": w.log_id, "scene_index": w.index,
                          "start_time_us": w.start_time_us, "end_time_us": w.end_time_us}
                         for w in cut_scenes(read_log(path).manifest)[0]])
    profile = sampling_profile(DatasetSpec(name="k", channels=["CAM_FRONT"], keyframe_hz=10, sweep_hz=30))
    manifest = ChunkManifest("c", "sampled", profile.to_json(), store.url, "runs/r/results",
                             build.sampling_tasks(rows, profile.key()))
    store.write_json("m.json", manifest.to_json())
    worker = subprocess.Popen([sys.executable, "-m", "jadd_dagster.compute.worker", "--store", store.url, "--manifest", "m.json"])
    log_folder = work / "store" / "scenes" / "sampled" / profile.key() / path.name
    deadline = time.time() + 120
    while time.time() < deadline and not any(log_folder.glob(".*.staging-*/CAM_FRONT/*.jpg")):
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    staged = list(log_folder.glob(".*.staging-*"))
    assert staged, "the worker was killed before it staged anything"
    _age(work / "store", 7200)
    assert jadd(["store", "clean", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert f"removed {staged[0]}" in out and "bytes reclaimed" in out
    assert not any(log_folder.glob(".*.staging-*"))
    assert find_leftovers(work / "store", 0) == []
