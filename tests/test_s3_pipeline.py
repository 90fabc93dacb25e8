"""A dataset build whose object store is a real S3-compatible server (SeaweedFS on 127.0.0.1)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from jadd_dagster.cli import main as jadd
from jadd_dagster.s3store import S3Store
from profiles import use_profile

pytestmark = [pytest.mark.e2e, pytest.mark.s3]


def test_a_dataset_builds_with_everything_in_s3(s3_server, two_short_logs, tmp_path, monkeypatch):
    from nuscenes.nuscenes import NuScenes

    bucket = s3_server.new_bucket()
    for name, value in {
        "JADD_S3_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_REGION": s3_server.region,
    }.items():
        monkeypatch.setenv(name, value)  # the worker processes inherit these
    use_profile(tmp_path, monkeypatch, storage={"url": f"s3://{bucket}/jadd"})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "s3e2e", "channels": ["CAM_FRONT"], "image_width": 64, "image_height": 36,
                                    "autolabel": True}))

    code = jadd(["build", "--spec", str(spec), "--logs", str(two_short_logs), "--workdir", str(tmp_path / "work")])

    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert code == 0, summary
    profile_root = summary["dataroot"].removeprefix(f"s3://{bucket}/jadd/")
    assert summary["dataroot"] == f"s3://{bucket}/jadd/{profile_root}" and profile_root.startswith("scenes/sampled/")
    assert summary["scenes"] == 2 and summary["failed_scenes"] == {}
    store = S3Store.from_url(f"s3://{bucket}/jadd")
    assert store.exists("logs/log-11-0001/manifest.json") and store.exists("catalog/scene_catalog.parquet")
    assert not (tmp_path / "work" / "store").exists()  # nothing went to a local store
    assert summary["preview"] == "datasets/s3e2e/preview.jpg" and len(store.get_bytes(summary["preview"])) > 1000
    (version,) = summary["versions"]
    local = tmp_path / "download"

    def download(version: str, target: Path) -> None:
        """What a user syncs: the part's version folder and the frames its tables reference."""
        with store.local_folder(f"{profile_root}/{version}") as folder:
            shutil.copytree(folder, target / version)
        for name in ("samples", "sweeps"):
            with store.local_folder(f"{profile_root}/{name}") as folder:
                shutil.copytree(folder, target / name, dirs_exist_ok=True)

    download(version, local)
    nusc = NuScenes(version=version, dataroot=str(local), verbose=False)
    assert len(nusc.scene) == 2 and len(nusc.sample) == 2 * 40
    path, _, _ = nusc.get_sample_data(nusc.sample[5]["data"]["CAM_FRONT"])
    assert Path(path).stat().st_size > 0
    assert len(list((local / "sweeps" / "CAM_FRONT").iterdir())) == 2 * 39 * 4
    # The merge copied no frame inside the store: every frame key is the one the sampling wrote.
    frames = [k for k in store.list_keys(profile_root) if k.split("/")[3] in ("samples", "sweeps")]
    assert len(frames) == 2 * (40 + 39 * 4)

    # The labels were scored against the logs' ground truth, fetched from S3 for the val scenes.
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(tmp_path / "work" / "dagster_home"))
    metadata = instance.fetch_materializations(dg.AssetKey("dataset_labels"), limit=1).records[0].asset_materialization.metadata
    assert metadata["labels_computed"].value == 2
    assert 0.0 <= metadata["autolabel_mAP"].value <= 1.0 and "autolabel_AP_per_class" in metadata

    # A rebuild with fewer scenes publishes a new part; the index lists only it.
    spec.write_text(yaml.safe_dump({"name": "s3e2e", "channels": ["CAM_FRONT"], "image_width": 64, "image_height": 36,
                                    "autolabel": True, "max_scenes": 1}))
    assert jadd(["build", "--spec", str(spec), "--logs", str(two_short_logs), "--workdir", str(tmp_path / "work")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["scenes"] == 1 and summary["cached_scenes"] == 1
    (smaller_version,) = summary["versions"]
    assert smaller_version != version
    smaller = tmp_path / "download-again"
    download(smaller_version, smaller)
    again = NuScenes(version=smaller_version, dataroot=str(smaller), verbose=False)
    assert len(again.scene) == 1 and all((smaller / sd["filename"]).is_file() for sd in again.sample_data)
