"""Drive logs from others (issue 9): bad calibrations, ids and store objects are refused or skipped
at ingest, naming the file and the field, and never reach the sampler's memory or other logs."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic, undistortion_maps
from jadd_dagster.logs import LogFormatError, read_log, validate_log
from jadd_dagster.logs.stored import list_log_ids, open_stored_log
from jadd_dagster.sim import make_logs
from jadd_dagster.storage import LocalStore
from verbatim_s3 import put_raw, verbatim_s3_store  # noqa: F401  (a fixture)

SIZE = (64, 36)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory) -> Path:
    """One tiny valid log: six seconds of CAM_FRONT at 64x36, no objects."""
    (path,) = make_logs(tmp_path_factory.mktemp("logs"), 1, 0.1, 3, ("CAM_FRONT",), SIZE, workers=1, objects=False)
    return path


def copy_of(log_path: Path, where: Path, name: str | None = None) -> Path:
    folder = where / (name or log_path.name)
    shutil.copytree(log_path, folder)
    return folder


def edit_calibration(folder: Path, change) -> None:
    path = folder / "calibration.json"
    data = json.loads(path.read_text())
    change(data["CAM_FRONT"])
    path.write_text(json.dumps(data))  # NaN and Infinity are written as JSON's extensions allow


def set_at(*path_and_value):
    *path, value = path_and_value

    def change(calib: dict):
        target = calib
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


# Calibrations (items 4 and 7): plausible, finite, and the video's size.

BAD_CALIBRATIONS = {
    "NaN distortion": (set_at("distortion", 2, float("nan")), "distortion p1 nan must be finite"),
    "infinite distortion": (set_at("distortion", 0, float("inf")), "distortion k1 inf must be finite"),
    "huge distortion": (set_at("distortion", 4, 1e30), "distortion k3 1e+30 must be finite and within"),
    "a lens that does not rectify": (set_at("distortion", [1.0, 1.0, 1.0, 1.0, 1.0]), "does not rectify"),
    "NaN focal length": (set_at("intrinsic", 0, 0, float("nan")), "intrinsic [[nan"),
    "absurd focal length": (set_at("intrinsic", 1, 1, 1e9), "intrinsic fy 1e+09 pixels"),
    "principal point off the image": (set_at("intrinsic", 0, 2, -50.0), "intrinsic cx -50 is outside the image"),
    "huge image": (lambda c: c.update(width=40000, height=40000), "width 40000 pixels must be 16..8192"),
    "infinite width": (set_at("width", float("inf")), "malformed calibration (OverflowError"),
    "NaN translation": (set_at("translation", 1, float("nan")), "nan, 1.6] must be 3 finite metres"),
    "far translation": (set_at("translation", 0, 5000.0), "translation [5000.0"),
    "NaN rotation": (set_at("rotation", 0, float("nan")), "rotation [nan"),
}


@pytest.mark.parametrize("case", list(BAD_CALIBRATIONS))
def test_an_implausible_calibration_is_refused_naming_the_file_and_field(log_path, tmp_path, case):
    folder = copy_of(log_path, tmp_path)
    change, expected = BAD_CALIBRATIONS[case]
    edit_calibration(folder, change)
    with pytest.raises(LogFormatError) as raised:
        read_log(folder)
    message = str(raised.value)
    assert message.startswith(f"{folder}: calibration.json: CAM_FRONT: ") and expected in message, message
    assert any(expected in problem for problem in validate_log(folder))


def test_a_huge_calibration_is_refused_before_any_large_allocation(log_path, tmp_path):
    folder = copy_of(log_path, tmp_path)
    edit_calibration(folder, lambda c: c.update(width=40000, height=40000))
    tracemalloc.start()
    try:
        with pytest.raises(LogFormatError, match="width 40000"):
            read_log(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_a_calibration_of_another_size_than_its_video_is_refused(log_path, tmp_path):
    folder = copy_of(log_path, tmp_path)
    width, height = 2 * SIZE[0], 2 * SIZE[1]
    edit_calibration(folder, lambda c: c.update(width=width, height=height, intrinsic=pinhole_intrinsic(width, height, 70)))
    with pytest.raises(LogFormatError) as raised:
        read_log(folder)
    assert str(raised.value) == (
        f"{folder}: calibration.json: CAM_FRONT: width x height {width}x{height} differs from the "
        f"{SIZE[0]}x{SIZE[1]} frames of cameras/CAM_FRONT.mp4"
    )


def test_a_video_that_is_no_video_is_refused_naming_it(log_path, tmp_path):
    folder = copy_of(log_path, tmp_path)
    (folder / "cameras" / "CAM_FRONT.mp4").write_bytes(b"not a video at all")
    with pytest.raises(LogFormatError, match=r"cameras/CAM_FRONT.mp4: not a readable video"):
        read_log(folder)


def test_undistortion_refuses_an_implausible_calibration_on_any_path():
    good = CameraCalibration("CAM_FRONT", 320, 180, pinhole_intrinsic(320, 180, 70), distortion=(-0.3, 0.1, 0, 0, 0))
    map_x, _, out = undistortion_maps(good)
    assert map_x.shape == (180, 320) and out.intrinsic[0][0] > 100
    for bad in [
        CameraCalibration("CAM_FRONT", 320, 180, good.intrinsic, distortion=(-0.3, 0.1, float("nan"), 0, 0)),
        CameraCalibration("CAM_FRONT", 40000, 40000, pinhole_intrinsic(40000, 40000, 70)),
    ]:
        with pytest.raises(ValueError, match="^CAM_FRONT: calibration cannot be used"):
            undistortion_maps(bad, out_size=(64, 36))


# Log ids (item 10): a log is known by its folder.


def test_a_manifest_that_claims_another_folders_id_is_refused_for_that_log_only(log_path, tmp_path):
    store = LocalStore(tmp_path / "store")
    copy_of(log_path, store.root / "logs", "log-a")
    copy_of(log_path, store.root / "logs", "log-b")
    manifest = store.root / "logs" / "log-a" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "log_id": "log-a"}))
    with open_stored_log(store, "log-a") as log:
        assert log.manifest.log_id == "log-a"
    with pytest.raises(LogFormatError) as raised:
        with open_stored_log(store, "log-b"):
            pass
    message = str(raised.value)
    assert message.startswith(f"{store.root / 'logs' / 'log-b'}: manifest.json: log_id {log_path.name!r}")
    assert "is not the log's folder 'log-b'" in message


def test_log_ids_are_folder_names_that_can_be_partition_keys(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")
    for name in ["log-1", "a...b", "a|b", "with space", "m\\bad", "m\bad"]:
        put_raw(store, f"logs/{name}/manifest.json", b"{}")
    assert list_log_ids(store) == ["log-1"]
    for name in ["a...b", "a|b", "with space"]:
        assert repr(name) in caplog.text


# Objects on S3 that are no files of the log (items 1 and 11).


def upload_log(store, folder: Path, log_id: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.upload_file(path, f"logs/{log_id}/{path.relative_to(folder).as_posix()}")


def test_a_log_with_folder_markers_reads_like_one_without(s3_store, log_path, tmp_path):
    upload_log(s3_store, log_path, log_path.name)
    for marker in [f"logs/{log_path.name}/", f"logs/{log_path.name}/cameras/"]:  # what S3 consoles write
        put_raw(s3_store, marker, b"")
    with open_stored_log(s3_store, log_path.name, with_videos=True, scratch=tmp_path) as log:
        assert log.manifest.log_id == log_path.name
        assert log.video_path("CAM_FRONT").stat().st_size > 0
    assert list_log_ids(s3_store) == [log_path.name]


def test_staging_a_log_skips_objects_whose_keys_would_leave_the_folder(verbatim_s3_store, log_path, tmp_path, caplog):
    store = verbatim_s3_store
    upload_log(store, log_path, log_path.name)
    outside = tmp_path / "outside" / "x.txt"
    put_raw(store, f"logs/{log_path.name}/{outside}")  # logs/<id>//tmp/.../outside/x.txt
    put_raw(store, f"logs/{log_path.name}/../../escape.txt")
    put_raw(store, f"logs/{log_path.name}/cameras\\CAM_FRONT.mp4")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with open_stored_log(store, log_path.name, with_videos=True, scratch=scratch) as log:
        staged = sorted(p.relative_to(log.path).as_posix() for p in log.path.rglob("*") if p.is_file())
        assert np.array_equal(log.frame_timestamps("CAM_FRONT"), read_log(log_path).frame_timestamps("CAM_FRONT"))
    assert staged == sorted(p.relative_to(log_path).as_posix() for p in log_path.rglob("*") if p.is_file())
    assert not outside.exists() and not (tmp_path / "escape.txt").exists() and not (scratch / "escape.txt").exists()
    assert str(outside) in caplog.text and "escape.txt" in caplog.text


# --- Point clouds are checked before they reach a dataset ---------------------------------------

def _sweep_log(tmp_path: Path) -> Path:
    root = tmp_path / "logs" / "log-p"
    (root / "lidar" / "LIDAR_TOP").mkdir(parents=True)
    return root


def test_a_symlinked_point_cloud_is_refused_and_its_target_never_read(tmp_path):
    from jadd_dagster.sampling.lidar import checked_point_cloud

    root = _sweep_log(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(10, np.float32).tobytes())
    secret.chmod(0o600)
    (root / "lidar" / "LIDAR_TOP" / "1000.pcd.bin").symlink_to(secret)
    with pytest.raises(ValueError, match="symbolic link"):
        checked_point_cloud(root, root / "lidar" / "LIDAR_TOP" / "1000.pcd.bin")
    linked_folder = tmp_path / "elsewhere"
    linked_folder.mkdir()
    (linked_folder / "2000.pcd.bin").write_bytes(np.zeros(10, np.float32).tobytes())
    (root / "lidar" / "OTHER").symlink_to(linked_folder, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        checked_point_cloud(root, root / "lidar" / "OTHER" / "2000.pcd.bin")


@pytest.mark.parametrize("values, problem", [
    (np.zeros(7, np.uint8), "not a whole number"),  # the 7-byte file the devkit failed on
    (np.zeros(0, np.float32), "not a whole number"),
    (np.array([1, 2, 3, np.nan, 0], np.float32), "non-finite"),
    (np.array([1, 2, np.inf, 4, 0], np.float32), "non-finite"),
])
def test_a_point_cloud_must_be_whole_finite_five_float_points(tmp_path, values, problem):
    from jadd_dagster.sampling.lidar import checked_point_cloud

    root = _sweep_log(tmp_path)
    path = root / "lidar" / "LIDAR_TOP" / "1000.pcd.bin"
    path.write_bytes(values.tobytes())
    with pytest.raises(ValueError, match=problem):
        checked_point_cloud(root, path)
    good = np.arange(10, dtype=np.float32)
    path.write_bytes(good.tobytes())
    assert checked_point_cloud(root, path) == good.tobytes()
