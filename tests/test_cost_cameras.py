"""The estimate for logs whose cameras have rates of their own or store recorded JPEGs.

The catalog carries each log's camera rates, codecs and distorted lenses (scene_index writes them
from the manifest, the videos' headers or ingest.json and the calibration); the plan reads them
there, one row a log, never a file. A camera slower than the sweep rate has its own rate's frames
(each used once); a JPEG camera whose frames are kept as they are is priced at a copy's cost.
Logs from a catalog made before these columns are priced as before.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest

import mcap_drives as drives
from jadd_dagster.cost import CostTable
from jadd_dagster.ingest import ingest_mcap, load_topic_map
from jadd_dagster.logs import read_log
from jadd_dagster.defs.resources import PipelineSettings
from jadd_dagster.planning import CameraStream, CostInputs, catalog_camera_streams, estimate_lines, make_plan
from jadd_dagster.scenes import camera_codecs, cut_scenes, parse_channel_values, scene_statistics
from jadd_dagster.spec import parse_spec
from jadd_dagster.storage import LocalStore

TOPIC_MAPS = Path(__file__).resolve().parents[1] / "examples" / "topic-maps"
CHANNELS = ["CAM_FRONT", "CAM_FRONT_LEFT"]
# Figures that tell the rates apart: a frame priced at 5, 10 or 30 Hz, or copied, costs its own.
TABLE = CostTable(cpu_seconds_per_frame={2: 0.5, 5: 0.4, 10: 0.2, 30: 0.1}, cpu_seconds_per_frame_undistorted=None,
                  frame_overhead_seconds=0.0, encode_seconds_per_frame=0.0, copy_seconds_per_frame=0.003,
                  reference_megapixels=1.44, native_megapixels=1.44)


def catalog(log_id: str, scenes: int, cameras: dict | None) -> pd.DataFrame:
    """Catalog rows of 20 s scenes of one log; cameras: {channel: (Hz, codec, distorted)} as
    scene_index writes them (None: a row from a catalog made before the camera columns)."""
    rows = []
    for i in range(scenes):
        row = {"scene_id": f"{log_id}/{i:04d}", "log_id": log_id, "scene_index": i, "location": "here",
               "vehicle": "v", "channels": ",".join(CHANNELS), "camera_sizes": "CAM_FRONT=1600x900,CAM_FRONT_LEFT=1600x900",
               "start_time_us": i * 20_000_000, "end_time_us": (i + 1) * 20_000_000, "duration_s": 20.0, "has_gap": False}
        if cameras is not None:
            row |= {"camera_rates_hz": ",".join(f"{c}={hz}" for c, (hz, _, _) in cameras.items()),
                    "camera_codecs": ",".join(f"{c}={codec}" for c, (_, codec, _) in cameras.items()),
                    "distorted_cameras": ",".join(c for c, (_, _, distorted) in cameras.items() if distorted)}
        rows.append(row)
    return pd.DataFrame(rows)


def spec(sweep_hz: int, **changes):
    return parse_spec({"name": "rates", "channels": CHANNELS, "keyframe_hz": 2, "sweep_hz": sweep_hz, "undistort": False,
                       "autolabel": False, **changes})


def estimate(s, scenes: pd.DataFrame) -> dict:
    """The plan's work, with the cameras' sizes and streams as the catalog gives them."""
    costing = lambda ids, sizes, streams: CostInputs(TABLE, camera_sizes=sizes, camera_streams=streams)  # noqa: E731
    return make_plan(s, scenes, PipelineSettings(cost=TABLE.to_mapping()), None, "run", costing).estimate["work"]


def test_a_camera_slower_than_the_sweeps_counts_its_own_frames_and_an_older_catalogs_log_as_before():
    scenes = pd.concat([catalog("log-new", 3, {"CAM_FRONT": (12, "h264", False), "CAM_FRONT_LEFT": (30, "h264", False)}),
                        catalog("log-old", 2, None)], ignore_index=True)
    scenes.loc[scenes["log_id"] == "log-old", ["camera_rates_hz", "camera_codecs", "distorted_cameras"]] = None
    work = estimate(spec(30), scenes)
    # 40 keyframes over 19.5 s and the frames between them: a 30 Hz camera has 19.5 × 30 + 1, the 12 Hz
    # one each of its 19.5 × 12 + 1 once; the old catalog's log: 20 s × 30 Hz for both cameras, as before.
    assert work["frames"] == 3 * ((19.5 * 30 + 1) + (19.5 * 12 + 1)) + 2 * 2 * 20 * 30
    # Both cameras decode every frame they give (the 12 Hz one all of its own): the 30 Hz figure.
    assert work["sampling_s"] == pytest.approx(work["frames"] * 0.1)


def test_a_lidar_is_counted_one_sweep_a_keyframe():
    """sampling/lidar.py writes one sweep per keyframe, whatever sweep_hz: 40 in a 20 s scene."""
    scenes = catalog("log-new", 3, {"CAM_FRONT": (30, "h264", False), "CAM_FRONT_LEFT": (30, "h264", False)})
    scenes["channels"] = ",".join([*CHANNELS, "LIDAR_TOP"])
    cameras = estimate(spec(10), scenes)["frames"]
    with_lidar = estimate(spec(10, channels=[*CHANNELS, "LIDAR_TOP"]), scenes)["frames"]
    assert with_lidar - cameras == 3 * 20 * 2


@pytest.mark.parametrize("sweep_hz, table_hz", [(2, 5), (10, 30), (30, 30)])
def test_a_slow_cameras_frames_are_priced_at_the_share_of_its_frames_kept(sweep_hz, table_hz):
    """The table was measured on 30 Hz footage: a 12 Hz camera at 2 Hz keeps 1 frame in 6, as 30 Hz
    footage does at 5 Hz; at 10 Hz, 5 in 6 (25 Hz: the nearest figure is 30 Hz's)."""
    one = spec(sweep_hz, channels=["CAM_FRONT"])
    work = estimate(one, catalog("log", 1, {"CAM_FRONT": (12, "h264", False)}))
    assert work["sampling_s"] == pytest.approx(work["frames"] * TABLE.seconds_per_frame(False, table_hz))


@pytest.mark.parametrize("changes, distorted, copied", [
    ({}, False, True),
    ({"undistort": True}, False, True),  # an undistorted lens needs no remap: kept as it is
    ({"undistort": True}, True, False),
    ({"image_width": 800, "image_height": 450}, False, False),
    ({"image_width": 1600, "image_height": 900}, False, True),  # the camera's own size
])
def test_a_jpeg_cameras_frames_kept_as_they_are_are_priced_as_copies(changes, distorted, copied):
    scenes = catalog("log", 2, {"CAM_FRONT": (30, "mjpeg", distorted), "CAM_FRONT_LEFT": (30, "h264", distorted)})
    s = spec(10, **changes)
    work = estimate(s, scenes)
    per_camera = 2 * (19.5 * 10 + 1)
    decoded = TABLE.seconds_per_frame(s.undistort, 10, 1.44, 1.44 if "image_width" not in changes
                                      else changes["image_width"] * changes["image_height"] / 1e6)
    front = per_camera * (0.003 if copied else decoded)
    assert work["frames"] == 2 * per_camera
    assert work["sampling_s"] == pytest.approx(front + per_camera * decoded)


def test_the_catalog_reads_rates_codecs_and_lenses_once_a_log():
    scenes = catalog("log", 3, {"CAM_FRONT": (12, "mjpeg", True), "CAM_FRONT_LEFT": (30, "", False)})
    assert catalog_camera_streams(scenes) == {"log": {"CAM_FRONT": CameraStream(12.0, "mjpeg", True),
                                                      "CAM_FRONT_LEFT": CameraStream(30.0, "", False)}}
    assert catalog_camera_streams(catalog("old", 1, None)) == {}
    assert parse_channel_values("CAM_FRONT=12,CAM_BACK=") == {"CAM_FRONT": "12"} and parse_channel_values(None) == {}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The ROS 2 MCAP drive, ingested: CAM_FRONT recorded JPEGs at 12 Hz, CAM_FRONT_LEFT H.264 at 30 Hz."""
    root = tmp_path_factory.mktemp("drive")
    recording = drives.write_drive(root / "mcap", "ros2", [(0, 3)], rates={"CAM_FRONT": 12, "CAM_FRONT_LEFT": 30})
    result = ingest_mcap(recording.files, root / "logs", load_topic_map(TOPIC_MAPS / "ros2.yaml"), dbc=drives.DRIVE_DBC)
    return result.path


def test_scene_index_rows_carry_the_cameras_rates_codecs_and_lenses(ingested, tmp_path):
    log = read_log(ingested)
    assert camera_codecs(log) == {"CAM_FRONT": "mjpeg", "CAM_FRONT_LEFT": "h264"}  # from the videos' headers
    # Without the videos (a remote store fetches only the small files), from ingest.json.
    bare = tmp_path / ingested.name
    shutil.copytree(ingested, bare, ignore=shutil.ignore_patterns("*.mp4"))
    assert camera_codecs(type(log)(bare, log.manifest, log.calibration)) == {"CAM_FRONT": "mjpeg", "CAM_FRONT_LEFT": "h264"}
    windows, _ = cut_scenes(log.manifest, 1.0)
    rows = scene_statistics(log.manifest, windows, log.can(), log.pose(), log.calibration, camera_codecs(log))
    assert set(rows["camera_rates_hz"]) == {"CAM_FRONT=12,CAM_FRONT_LEFT=30"}
    assert set(rows["camera_codecs"]) == {"CAM_FRONT=mjpeg,CAM_FRONT_LEFT=h264"}
    lenses = ",".join(c for c, calib in sorted(log.calibration.items()) if any(calib.distortion))
    assert set(rows["distorted_cameras"]) == {lenses}
    streams = catalog_camera_streams(rows)[log.manifest.log_id]
    assert {c: (s.rate_hz, s.codec) for c, s in streams.items()} == {"CAM_FRONT": (12, "mjpeg"), "CAM_FRONT_LEFT": (30, "h264")}


def test_the_plan_reads_no_log_file_for_rates_and_codecs(tmp_path):
    """At a million scenes the plan must not read a file per log: what it prices comes from the catalog."""
    from jadd_dagster.defs.cost_report import plan_costing
    from jadd_dagster.defs.resources import AutolabelModels, RegistryResource, StoreResource

    store = LocalStore(tmp_path / "store")
    reads = []
    original = LocalStore.get_bytes
    LocalStore.get_bytes = lambda self, key: reads.append(key) or original(self, key)
    try:
        settings = PipelineSettings(cost=TABLE.to_mapping())
        s = spec(30)
        costing = plan_costing(s, RegistryResource(url=f"sqlite:///{tmp_path}/r.db"), AutolabelModels(), settings,
                               StoreResource(url=str(store.root)))
        scenes = catalog("log", 2, {"CAM_FRONT": (12, "mjpeg", False), "CAM_FRONT_LEFT": (30, "h264", False)})
        plan = make_plan(s, scenes, settings, None, "run", costing)
        work = plan.estimate["work"]
        assert reads == []
        front, left = 2 * (19.5 * 12 + 1), 2 * (19.5 * 30 + 1)
        assert work["frames"] == front + left and work["copied_frames"] == front
        assert work["sampling_s"] == pytest.approx(front * 0.003 + left * 0.1)
        # What `jadd build` prints before the work, and the launchpad's breakdown, say so.
        assert f"{front + left:,.0f} frames ({front:,.0f} copied as recorded) of 2 scenes" in estimate_lines(plan.estimate)
    finally:
        LocalStore.get_bytes = original
