"""rosbag2 ingest: drives recorded as rosbag2 bags in SQLite storage with rosbags' own Writer
(tests/rosbag_drives.py: the ROS 2 drive of tests/mcap_drives.py, real H.264 and JPEG payloads)
become logs whose frames, poses, calibration, lidar and CAN are what was recorded; the pose may
come from a TF chain map -> odom -> base_footprint -> base_link; bad bags fail naming the file,
topic and message; bags dropped under incoming/ are converted by the sensor's runs."""

import json
import math
import shutil
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pytest
import simplejpeg
import yaml
from PIL import Image
from rosbags.highlevel import AnyReader

import mcap_drives as drives
import rosbag_drives as bags
from jadd_dagster.cli import main as jadd
from jadd_dagster.ingest import INGEST_REPORT, IngestError, ingest_drive, load_topic_map, parse_topic_map
from jadd_dagster.ingest.incoming import INGEST_ERROR, TOPIC_MAP
from jadd_dagster.ingest.messages import MessageError, Transform
from jadd_dagster.ingest.tf_tree import LINK_MAX_GAP_S, PoseChain, StaticTree
from jadd_dagster.logs.reader import read_log
from jadd_dagster.scenes import cut_scenes, scene_statistics

TOPIC_MAPS = Path(__file__).resolve().parents[1] / "examples" / "topic-maps"
ROS2_MAP = TOPIC_MAPS / "ros2.yaml"
START_US = drives.START_S * 1_000_000


def _ingest(paths, out: Path, topic_map=None, **kwargs):
    topic_map = topic_map if topic_map is not None else load_topic_map(ROS2_MAP)
    return ingest_drive(paths, out, topic_map, dbc=drives.DRIVE_DBC, format="rosbag2", **kwargs)


def _chain_map():
    """map -> odom -> base_footprint on /tf, base_footprint -> base_link static."""
    return load_topic_map(TOPIC_MAPS / "rosbag2-tf-chain.yaml")


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """21 s of the drive in two bags overlapping by 1 s, ingested."""
    root = tmp_path_factory.mktemp("rosbag")
    recording = bags.write_drive(root / "bags", [(0, 12), (11, 21)])
    result = _ingest(recording.files, root / "logs", log_id="drive")
    return {"recording": recording, "result": result, "log": read_log(result.path)}


def _recorded_h264_frames(bag_paths, topic: str, skip: int = 0) -> list[np.ndarray]:
    """The access units of an H.264 topic as recorded (repeats in overlapping bags once; the first
    `skip` left out), read with rosbags' high-level reader and decoded: what the encoder produced."""
    decoder = av.CodecContext.create("h264", "r")
    units = {}
    with AnyReader(list(bag_paths)) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        for connection, log_time, raw in reader.messages(connections=connections):
            units.setdefault(log_time, bytes(reader.deserialize(raw, connection.msgtype).data))
    return [f.to_ndarray(format="rgb24") for t in sorted(units)[skip:] for f in decoder.decode(av.Packet(units[t]))]




def test_bags_of_one_drive_merge_into_one_log_with_the_recorded_frames_and_times(drive):
    recording, log, report = drive["recording"], drive["log"], drive["result"].report
    frames = drives.video_frames(log.video_path("CAM_FRONT_LEFT"))
    recorded = _recorded_h264_frames(recording.files, "/cam_front_left/video")
    assert len(frames) == len(recorded) == 210
    assert all(np.array_equal(a, b) for a, b in zip(frames, recorded))  # remuxed bit-exact, not re-encoded
    with av.open(str(log.video_path("CAM_FRONT"))) as container:
        jpeg_frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    source = simplejpeg.decode_jpeg(drives.jpeg("CAM_FRONT", 57), colorspace="RGB")
    assert len(jpeg_frames) == 210 and drives.psnr(jpeg_frames[57], source) > 30
    for channel in ("CAM_FRONT", "CAM_FRONT_LEFT"):
        assert log.frame_timestamps(channel).tolist() == recording.camera_stamps[channel]
    assert log.pose()["timestamp_us"].tolist() == recording.pose_stamps
    assert log.manifest.camera_hz == 10 and log.manifest.start_time_us == START_US
    assert report["source_format"] == "rosbag2"
    assert [f["name"] for f in report["files"]] == ["drive_0.db3", "drive_1.db3"]
    assert report["streams"]["camera CAM_FRONT"]["duplicates_dropped"] == 10  # one second of overlap at 10 Hz
    assert report["gaps"] == [] and report["file_gaps"] == []


def test_poses_calibration_lidar_and_can_round_trip(drive):
    log, report = drive["log"], drive["result"].report
    origin = report["map_origin"]
    for row in log.pose().iloc[[0, 333, -1]].itertuples():
        (x, y, z), (qx, qy, qz, qw) = drives.pose_at(bags.seconds_of(row.timestamp_us))
        assert (row.x + origin["x"], row.y + origin["y"], row.z) == pytest.approx((x, y, z), abs=1e-9)
        assert (row.qw, row.qx, row.qy, row.qz) == pytest.approx((qw, qx, qy, qz), abs=1e-12)
    for channel, (translation, rotation_xyzw) in drives.CAMERA_MOUNT.items():
        calib = log.calibration[channel]
        assert calib.intrinsic == drives.INTRINSIC and calib.distortion == drives.DISTORTION
        assert calib.translation == pytest.approx(translation)
        assert calib.rotation == pytest.approx((rotation_xyzw[3], *rotation_xyzw[:3]))
    assert log.lidar_calibration["LIDAR_TOP"].translation == pytest.approx(drives.LIDAR_MOUNT[0])
    stamps = log.lidar_timestamps("LIDAR_TOP")
    np.testing.assert_array_equal(log.lidar_sweep("LIDAR_TOP", int(stamps[42])), drives.cloud(42))
    can = log.can()
    assert len(can) == 2100 - 1 and np.allclose(can["speed_mps"], drives.SPEED_MPS, atol=0.01)  # via the DBC
    t_s = (can["timestamp_us"] - START_US) / 1e6
    assert np.allclose(can["steering_deg"], 15 * np.sin(t_s - 0.01), atol=0.051)
    assert np.allclose(can["yaw_rate_rps"], 0.02) and set(can["gear"]) == {3}


def test_a_tf_chain_map_odom_base_link_gives_the_composed_poses(tmp_path):
    recording = bags.write_drive(tmp_path / "bags", [(0, 3)], tf_chain=True)
    result = _ingest(recording.files, tmp_path / "logs", _chain_map())
    pose, origin, chain = read_log(result.path).pose(), result.report["map_origin"], result.report["pose_chain"]
    assert chain["frames"] == ["map", "odom", "base_footprint", "base_link"]
    assert [link["kind"] for link in chain["links"]] == ["dynamic", "dynamic", "static"]
    assert chain["poses_at"] == "odom -> base_footprint"
    # No extrapolation: the poses after the last map -> odom transform (2 Hz) are left out, and said so.
    last_map_odom = recording.map_odom_stamps[-1]
    kept = [s for s in recording.pose_stamps if s <= last_map_odom]
    assert pose["timestamp_us"].tolist() == kept
    assert chain["poses_dropped"] == {"map -> odom": len(recording.pose_stamps) - len(kept)}
    for row in pose.itertuples():  # between two map -> odom transforms too: interpolated
        (x, y, z), yaw = bags.chain_pose_at(bags.seconds_of(row.timestamp_us))
        assert (row.x + origin["x"], row.y + origin["y"], row.z) == pytest.approx((x, y, z), abs=1e-9)
        assert (row.qw, row.qz) == pytest.approx((math.cos(yaw / 2), math.sin(yaw / 2)), abs=1e-9)
        assert (row.qx, row.qy) == pytest.approx((0.0, 0.0), abs=1e-12)
    # The sensors hang from base_link, the chain's static bottom link does not move them.
    assert read_log(result.path).calibration["CAM_FRONT"].translation == pytest.approx(drives.CAMERA_MOUNT["CAM_FRONT"][0])


def test_a_broken_tf_chain_names_the_missing_link_and_the_time(tmp_path):
    recording = bags.write_drive(tmp_path / "bags", [(0, 1)], tf_chain=True, map_odom=False)
    with pytest.raises(IngestError) as error:
        _ingest(recording.files, tmp_path / "logs", _chain_map())
    assert str(error.value) == (
        f"topic /tf (pose): the TF chain from 'map' to 'base_link' is broken: frame 'odom' has no parent on /tf or "
        f"/tf_static at {START_US} µs, the first pose time (the chain found: base_link <- base_footprint <- odom; "
        "missing: the link from 'map' to 'odom')")


def _transform(parent: str, child: str, t_s: float, x: float = 0.0) -> Transform:
    return Transform(parent, child, START_US + round(t_s * 1e6), (x, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))


def test_a_chain_link_is_never_extrapolated_nor_interpolated_over_a_long_gap():
    chain = PoseChain("map", "base_link", StaticTree(), "/tf", "/tf_static")
    for t_s in (10.0, 10.0 + LINK_MAX_GAP_S + 1):  # map -> odom: two transforms too far apart
        chain.add(_transform("map", "odom", t_s, x=t_s), 0)
    for k in range(5):  # odom -> base_link between them, and one after
        chain.add(_transform("odom", "base_link", 10.5 + k, x=1.0), 0)
    with pytest.raises(IngestError) as error:
        chain.poses()
    assert str(error.value) == (
        f"topic /tf (pose): link map -> odom has no two transforms within {LINK_MAX_GAP_S} s around any pose time "
        f"(its 2 transforms from {START_US + 10_000_000} to {START_US + 13_000_000} µs; the poses, at "
        f"odom -> base_link, from {START_US + 10_500_000} to {START_US + 14_500_000} µs)")
    with pytest.raises(MessageError, match="out of order"):  # within its link
        chain.add(_transform("map", "odom", 11.0), 0)
    with pytest.raises(MessageError, match="frame 'odom' has parent 'map' and now 'earth'"):
        chain.add(_transform("earth", "odom", 14.0), 0)


def test_links_that_come_before_the_static_link_joining_them_are_kept():
    static = StaticTree()
    chain = PoseChain("map", "base_link", static, "/tf", "/tf_static")
    for k in range(2):  # odom -> base_footprint and map -> odom, before base_footprint -> base_link is known
        chain.add(_transform("odom", "base_footprint", 0.02 * k, x=1.0 + k), 0)
    chain.add(_transform("map", "odom", 0.0, x=10.0), 0)
    static.add(Transform("base_footprint", "base_link", None, (0.0, 0.0, 0.3), (1.0, 0.0, 0.0, 0.0)))
    chain.add(_transform("odom", "base_footprint", 0.04, x=3.0), 0)
    chain.add(_transform("map", "odom", 1.0, x=11.0), 0)
    times, positions, rotations = chain.poses()
    assert (times - START_US).tolist() == [0, 20_000, 40_000]
    np.testing.assert_allclose(positions, [[11.0, 0, 0.3], [12.02, 0, 0.3], [13.04, 0, 0.3]], atol=1e-12)
    np.testing.assert_allclose(rotations, [[1.0, 0, 0, 0]] * 3, atol=1e-12)
    assert chain.report["poses_dropped"] == {"map -> odom": 0}


def test_a_lone_db3_file_is_read_and_a_bag_without_its_db3_is_named(tmp_path, capsys):
    recording = bags.write_drive(tmp_path / "bags", [(0, 1)])
    lone = recording.files[0] / "drive_0.db3"
    code, out, err = _cli_ingest([lone], tmp_path / "logs", capsys)  # --format auto
    assert code == 0, err
    log = read_log(tmp_path / "logs" / "drive")  # drive_0.db3 -> drive
    assert log.frame_timestamps("CAM_FRONT").tolist() == recording.camera_stamps["CAM_FRONT"]
    lone.unlink()
    code, _, err = _cli_ingest(recording.files, tmp_path / "more-logs", capsys, "--format", "rosbag2")
    assert code == 1 and err.startswith("error: drive_0: not a readable rosbag2 bag (ReaderError: ")
    assert "drive_0.db3" in err


def test_a_bag_in_rosbag2_s_mcap_storage_gives_the_same_log_through_either_reader(tmp_path):
    recording = bags.write_drive(tmp_path / "bags", [(0, 2)], storage="mcap")
    (bag,) = recording.files
    through_rosbags = read_log(_ingest([bag], tmp_path / "rosbag2").path)
    mcap_files = sorted(bag.glob("*.mcap"))
    through_mcap = read_log(ingest_drive(mcap_files, tmp_path / "mcap", load_topic_map(ROS2_MAP), dbc=drives.DRIVE_DBC,
                                         format="mcap").path)
    assert through_rosbags.pose().equals(through_mcap.pose()) and len(through_rosbags.pose()) == 100
    assert through_rosbags.can().equals(through_mcap.can())
    for channel in ("CAM_FRONT", "CAM_FRONT_LEFT"):
        assert through_rosbags.frame_timestamps(channel).tolist() == recording.camera_stamps[channel]
        assert through_mcap.frame_timestamps(channel).tolist() == recording.camera_stamps[channel]
    assert through_rosbags.calibration == through_mcap.calibration


def _cli_ingest(paths, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = jadd(["ingest", *map(str, paths), "--out", str(out), "--topic-map", str(ROS2_MAP),
                 "--dbc", str(drives.DRIVE_DBC), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_malformed_message_is_an_error_naming_file_topic_and_index(tmp_path, capsys):
    recording = bags.write_drive(tmp_path / "bags", [(0, 1)], name="broken",
                                 corrupt={("/cam_front/image/compressed", 4): lambda data: data[:40]})
    code, _, err = _cli_ingest(recording.files, tmp_path / "logs", capsys, "--format", "rosbag2")
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: broken_0/broken_0.db3: topic /cam_front/image/compressed: message 4: "
                          "malformed sensor_msgs/msg/CompressedImage")
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())  # nothing is left


def test_a_bag_without_stored_definitions_decodes_the_standard_ros2_types(tmp_path):
    recording = bags.write_drive(tmp_path / "bags", [(0, 2)], definitions=False)
    with pytest.raises(IngestError) as error:  # as a Humble bag: custom types cannot be decoded
        _ingest(recording.files, tmp_path / "logs")
    assert str(error.value) == (
        "drive_0/drive_0.db3: topic /cam_front_left/video: message 0: message type foxglove_msgs/msg/CompressedVideo "
        "has no definition stored in the bag and is not a standard ROS 2 humble type (rosbag2 stores definitions "
        "from Iron on; or convert the bag to MCAP with them)")
    data = yaml.safe_load(ROS2_MAP.read_text())
    del data["cameras"]["CAM_FRONT_LEFT"], data["lidars"]
    data["can"] = {"signals": {"speed_mps": {"topic": "/odom", "field": "twist.twist.linear.x"},
                               "brake": {"topic": "/vehicle/brake", "field": "data"}}}
    result = ingest_drive(recording.files, tmp_path / "logs", parse_topic_map(data), format="rosbag2")
    log = read_log(result.path)
    assert log.frame_timestamps("CAM_FRONT").tolist() == recording.camera_stamps["CAM_FRONT"]
    assert log.calibration["CAM_FRONT"].intrinsic == drives.INTRINSIC
    assert np.allclose(log.can()["speed_mps"], drives.SPEED_MPS)


def test_gaps_between_compressed_bags_are_reported_and_a_bag_is_found_without_format(tmp_path, capsys):
    recording = bags.write_drive(tmp_path / "bags", [(0, 4), (6.35, 10)], compress=True)
    code, out, err = _cli_ingest(recording.files, tmp_path / "logs", capsys)  # --format auto
    assert code == 0, err
    assert f"written to {tmp_path / 'logs' / 'drive_0'}" in out  # the first bag directory's name
    report = json.loads((tmp_path / "logs" / "drive_0" / INGEST_REPORT).read_text())
    assert report["source_format"] == "rosbag2"
    gaps = {g["stream"]: g for g in report["gaps"]}
    assert set(gaps) == {"camera CAM_FRONT", "camera CAM_FRONT_LEFT", "lidar LIDAR_TOP", "pose", "can"}
    assert gaps["pose"]["seconds"] == pytest.approx(6.36 - 3.98)
    assert report["file_gaps"][0]["seconds"] == pytest.approx(2.35, abs=0.02)
    assert "GAP pose: 2.380 s" in err
    log = read_log(tmp_path / "logs" / "drive_0")
    windows, _ = cut_scenes(log.manifest)
    catalog = scene_statistics(log.manifest, windows, log.can(), log.pose())
    assert catalog["has_gap"].all()


def test_a_bag_dropped_under_incoming_is_converted_by_the_sensor_s_run(tmp_path):
    from jadd_dagster.definitions import defs
    from jadd_dagster.defs.incoming import DRIVE_TAG
    from jadd_dagster.defs.resources import StoreResource

    recording = bags.write_drive(tmp_path / "recorded", [(0, 1), (1, 2)])
    nested, flat = tmp_path / "incoming" / "drive-r", tmp_path / "incoming" / "drive-s"
    for bag in recording.files:  # several bag directories of one drive
        shutil.copytree(bag, nested / bag.name)
    shutil.copytree(recording.files[0], flat)  # the drive's folder is the bag directory
    for folder in (nested, flat):
        shutil.copy(drives.DRIVE_DBC, folder / "vehicle.dbc")
    resources = {"store": StoreResource(url=str(tmp_path))}
    repo = defs.get_repository_def()

    with dg.instance_for_test() as instance:
        tick = drives.sensor_ticker(instance, resources)
        assert tick("incoming_drive_sensor").run_requests == []  # no topic map yet: still uploading
        for folder in (nested, flat):
            shutil.copy(ROS2_MAP, folder / TOPIC_MAP)
        requests = tick("incoming_drive_sensor").run_requests
        assert sorted(r.tags[DRIVE_TAG] for r in requests) == ["drive-r", "drive-s"]
        job = repo.get_job("convert_drive_job")
        for request in requests:
            outcome = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags,
                                             resources=resources, raise_on_error=False)
            assert outcome.success, (tmp_path / "incoming" / request.tags[DRIVE_TAG] / INGEST_ERROR).read_text()
        assert tick("incoming_drive_sensor").run_requests == []
        registered = tick("drive_log_sensor")
    assert sorted(r.partition_key for r in registered.run_requests) == ["drive-r", "drive-s"]
    whole, first = read_log(tmp_path / "logs" / "drive-r"), read_log(tmp_path / "logs" / "drive-s")
    assert whole.frame_timestamps("CAM_FRONT").tolist() == recording.camera_stamps["CAM_FRONT"]  # both bags
    assert len(first.frame_timestamps("CAM_FRONT")) == 10  # the first bag's second


@pytest.mark.e2e
def test_an_ingested_bag_builds_a_dataset_the_devkit_loads(drive, tmp_path):
    nusc, summary = drives.build_two_camera_dataset(drive["result"].path, "rosbag2", tmp_path)
    assert len(nusc.scene) == 1 and len(nusc.sample) == 40
    recorded = _recorded_h264_frames(drive["recording"].files, "/cam_front_left/video")
    record = nusc.get("sample_data", nusc.sample[10]["data"]["CAM_FRONT_LEFT"])
    index = int(round((record["timestamp"] - START_US) / 100_000))
    image = np.asarray(Image.open(Path(summary["dataroot"]) / record["filename"]).convert("RGB"))
    assert drives.psnr(image, recorded[index]) > 30 and drives.psnr(image, recorded[index]) > drives.psnr(image, recorded[index + 1]) + 3
    pose = nusc.get("ego_pose", record["ego_pose_token"])
    (x, y, _), _ = drives.pose_at((record["timestamp"] - START_US) / 1e6)
    origin = drive["result"].report["map_origin"]
    assert (pose["translation"][0] + origin["x"], pose["translation"][1] + origin["y"]) == pytest.approx((x, y), abs=0.01)
    calibrated = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    assert calibrated["translation"] == pytest.approx(list(drives.CAMERA_MOUNT["CAM_FRONT_LEFT"][0]))
