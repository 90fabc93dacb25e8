"""MCAP ingest: drives recorded with the official MCAP writers (ROS 2 CDR and Foxglove protobuf,
real H.264 and JPEG payloads, tests/mcap_drives.py) become logs whose frames, poses, calibration,
lidar and CAN are what was recorded; bad recordings fail with the file, topic and message named."""

import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import dagster as dg
import numpy as np
import pytest
import simplejpeg
import yaml
from mcap.reader import make_reader
from mcap.writer import Writer as McapWriter
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoders
from mcap_ros2.decoder import DecoderFactory as Ros2Decoders
from PIL import Image

import mcap_drives as drives
from jadd_dagster.cli import main as jadd
from jadd_dagster.ingest import INGEST_REPORT, IngestError, TopicMapError, ingest_mcap, load_topic_map, parse_topic_map
from jadd_dagster.ingest.incoming import INGEST_ERROR, TOPIC_MAP
from jadd_dagster.ingest.messages import MessageError
from jadd_dagster.ingest.video import CameraVideo
from jadd_dagster.logs.reader import read_log
from jadd_dagster.sampling import SamplingProfile, sample_scene_timed
from jadd_dagster.scenes import cut_scenes, scene_statistics

TOPIC_MAPS = Path(__file__).resolve().parents[1] / "examples" / "topic-maps"
SEGMENTS = {"ros2": [(0, 12), (11, 21)], "foxglove": [(0, 21)]}  # ROS 2: two split files overlapping by 1 s


def _ingest(flavour: str, files, out: Path, **kwargs):
    dbc = drives.DRIVE_DBC if flavour == "ros2" else None
    return ingest_mcap(files, out, load_topic_map(TOPIC_MAPS / f"{flavour}.yaml"), dbc=dbc, **kwargs)


@pytest.fixture(scope="module", params=["ros2", "foxglove"])
def drive(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    recording = drives.write_drive(root / "mcap", request.param, SEGMENTS[request.param])
    result = _ingest(request.param, recording.files, root / "logs")
    return {"flavour": request.param, "recording": recording, "result": result, "log": read_log(result.path)}



def _recorded_h264_frames(files, topic: str, skip: int = 0) -> list[np.ndarray]:
    """The access units of an H.264 topic as recorded (repeats in overlapping files once; the
    first `skip` left out), decoded straight from the MCAP files: what the camera's encoder produced."""
    decoder = av.CodecContext.create("h264", "r")
    units = {}
    for path in files:
        with open(path, "rb") as stream:
            reader = make_reader(stream, decoder_factories=[Ros2Decoders(), ProtobufDecoders()])
            for _, _, message, decoded in reader.iter_decoded_messages(topics=[topic]):
                units.setdefault(message.log_time, bytes(decoded.data))
    return [f.to_ndarray(format="rgb24") for t in sorted(units)[skip:] for f in decoder.decode(av.Packet(units[t]))]



def test_h264_is_remuxed_so_the_log_decodes_to_exactly_the_recorded_frames(drive):
    recording, log = drive["recording"], drive["log"]
    frames = drives.video_frames(log.video_path("CAM_FRONT_LEFT"))
    recorded = _recorded_h264_frames(recording.files, "/cam_front_left/video")
    assert len(frames) == len(recorded) == len(recording.camera_frames["CAM_FRONT_LEFT"]) == 210
    assert all(np.array_equal(a, b) for a, b in zip(frames, recorded))  # bit-exact: not re-encoded
    with av.open(str(log.video_path("CAM_FRONT_LEFT"))) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 1_000_000)
        pts = [p.pts for p in container.demux(stream) if p.size]
    assert pts == [round(i * 1_000_000 / 10) for i in range(210)]  # frame i at i / camera_hz, in µs
    assert drive["result"].report["videos"]["CAM_FRONT_LEFT"]["reencoded"] is False


def _packets(path: Path) -> tuple[str, list[bytes]]:
    """A video's codec and its packets' bytes, as stored."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, [bytes(p) for p in container.demux(stream) if p.size]


def test_jpeg_frames_are_stored_as_the_recorded_bytes(drive):
    codec, packets = _packets(drive["log"].video_path("CAM_FRONT"))
    recorded = [drives.jpeg("CAM_FRONT", i) for i in drive["recording"].camera_frames["CAM_FRONT"]]
    assert codec == "mjpeg" and len(packets) == 210
    assert packets == recorded  # never decoded nor encoded: each message's JPEG file, byte for byte
    with av.open(str(drive["log"].video_path("CAM_FRONT"))) as container:
        stream = container.streams.video[0]
        assert stream.time_base == Fraction(1, 1_000_000) and stream.frames == 210
        pts = [p.pts for p in container.demux(stream) if p.size]
    assert pts == [round(i * 1_000_000 / 10) for i in range(210)]  # the same grid as an H.264 camera's
    assert drive["result"].report["videos"]["CAM_FRONT"] == {
        "source": "image", "codec": "mjpeg", "frames": 210, "reencoded": False, "dropped_waiting_for_keyframe": 0}


def test_jpeg_crf_encodes_jpeg_topics_once_to_h264(short_drive, tmp_path):
    data = yaml.safe_load((TOPIC_MAPS / "ros2.yaml").read_text())
    data["cameras"]["CAM_FRONT"]["jpeg_crf"] = 17
    result = ingest_mcap([short_drive], tmp_path, parse_topic_map(data), dbc=drives.DRIVE_DBC)
    # Compared as YUV 4:2:0, the planes both the JPEG and the video hold (no colour conversion).
    with av.open(str(read_log(result.path).video_path("CAM_FRONT"))) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray() for f in container.decode(video=0)]
    jpeg_decoder = av.CodecContext.create("mjpeg", "r")

    def source(index: int) -> np.ndarray:
        (frame,) = jpeg_decoder.decode(av.Packet(drives.jpeg("CAM_FRONT", index)))
        return frame.to_ndarray()

    assert len(frames) == 30
    for index in (0, 1, 17, 29):
        assert drives.psnr(frames[index], source(index)) > 35, index
        neighbour = source(index + 1 if index < 29 else index - 1)
        assert drives.psnr(frames[index], source(index)) > drives.psnr(frames[index], neighbour) + 5
    assert result.report["videos"]["CAM_FRONT"]["reencoded"] is True


def test_an_image_camera_keeps_one_format_and_size_and_each_image_is_checked_by_its_header(tmp_path):
    video = CameraVideo(tmp_path / "cam.mp4", 10)
    assert video.add("jpeg", drives.jpeg("CAM_FRONT", 0))
    small = simplejpeg.encode_jpeg(drives.image("CAM_FRONT", 1)[:32, :48].copy(), 90)
    problems = {"a 48x32 image after 96x64 ones": small,
                "a PNG image after JPEG ones: a camera topic keeps one format": drives.png("CAM_FRONT", 1),
                "not a decodable JPEG (truncated before its scan)": drives.jpeg("CAM_FRONT", 1)[:120],
                "not a decodable JPEG or PNG image": b"GIF89a" + bytes(64)}
    for message, data in problems.items():
        with pytest.raises(MessageError, match=re.escape(message)):
            video.add("jpeg", data)
    video.close()
    codec, packets = _packets(tmp_path / "cam.mp4")
    assert codec == "mjpeg" and packets == [drives.jpeg("CAM_FRONT", 0)]


def test_png_frames_are_stored_losslessly_and_encoded_once_at_sampling(tmp_path):
    recording = drives.write_drive(tmp_path / "mcap", "ros2", [(0, 3)], image_format="png")
    log = read_log(_ingest("ros2", recording.files, tmp_path / "logs").path)
    codec, packets = _packets(log.video_path("CAM_FRONT"))
    assert codec == "png" and packets == [drives.png("CAM_FRONT", i) for i in range(30)]
    assert all(np.array_equal(a, drives.image("CAM_FRONT", i)) for i, a in enumerate(drives.video_frames(log.video_path("CAM_FRONT"))))
    record, stats = _sample(log, tmp_path / "scene", SamplingProfile(channels=("CAM_FRONT",), jpeg_quality=95), 2)
    assert stats.copied == 0 and stats.per_channel["CAM_FRONT"]["decoded"] == len(record.frames) == 16
    by_stamp = dict(zip(recording.camera_stamps["CAM_FRONT"], recording.camera_frames["CAM_FRONT"]))
    for frame in record.frames:  # as close to the image as one JPEG encode at that quality (within 0.5 dB)
        source = drives.image("CAM_FRONT", by_stamp[frame.timestamp_us])
        written = simplejpeg.decode_jpeg((tmp_path / "scene" / frame.path).read_bytes(), colorspace="RGB")
        once = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(source, quality=95, colorsubsampling="420"), colorspace="RGB")
        assert drives.psnr(written, source) > drives.psnr(once, source) - 0.5


def _sample(log, out: Path, profile, seconds: float, start_s: float = 1.0):
    """sample_scene_timed over [start_s, start_s + seconds) of the drive: (SceneRecord, SamplingStats)."""
    start = drives.START_S * 1_000_000 + round(start_s * 1e6)
    return sample_scene_timed(log, 0, start, start + round(seconds * 1e6), profile, out, f"{log.manifest.log_id}/0",
                              threads=1)


def test_a_dataset_that_keeps_the_frames_as_they_are_gets_the_recorded_jpegs(drive, tmp_path):
    profile = SamplingProfile(keyframe_hz=2, sweep_hz=10, undistort=False, channels=("CAM_FRONT", "CAM_FRONT_LEFT"))
    record, stats = _sample(drive["log"], tmp_path, profile, 2)
    recording = drive["recording"]
    by_stamp = dict(zip(recording.camera_stamps["CAM_FRONT"], recording.camera_frames["CAM_FRONT"]))
    front = [f for f in record.frames if f.channel == "CAM_FRONT"]
    assert len(front) == 16
    for frame in front:  # byte for byte the JPEG the camera recorded at that header stamp
        assert (tmp_path / frame.path).read_bytes() == drives.jpeg("CAM_FRONT", by_stamp[frame.timestamp_us])
    assert stats.per_channel["CAM_FRONT"]["copied"] == 16 and stats.per_channel["CAM_FRONT"]["decoded"] == 0
    assert stats.per_channel["CAM_FRONT_LEFT"]["copied"] == 0  # H.264: decoded and encoded once
    # A distorted lens left as it is also keeps the JPEGs (the profile's quality does not apply).
    again, _ = _sample(drive["log"], tmp_path / "q50", SamplingProfile(jpeg_quality=50, channels=("CAM_FRONT",)), 2)
    assert [(tmp_path / "q50" / f.path).read_bytes() for f in again.frames] == [(tmp_path / f.path).read_bytes() for f in front]


# Resizing and undistorting decode each recorded JPEG once and encode it once at the profile's
# quality (95 here). The written frames are compared with the recorded JPEG put through OpenCV's own
# resize (area) or undistortion, in PSNR: undistorted at full size, each above 40 dB (measured
# 44-47); halved to 48x32, where the 4:2:0 chroma of the 16-pixel square and of the colour ramps'
# wraps is a few samples wide, each above 26 dB and their median above 33 (measured 27.6 and 35.4).
# Each is also 3 dB closer to its own source image than to the next frame's.
@pytest.mark.parametrize("change, worst, median", [("resize", 26, 33), ("undistort", 40, 40)])
@pytest.mark.parametrize("drive", ["ros2"], indirect=True)
def test_a_resized_or_undistorted_dataset_matches_the_source_images(drive, change, worst, median, tmp_path):
    size = (drives.WIDTH // 2, drives.HEIGHT // 2) if change == "resize" else None
    profile = SamplingProfile(undistort=change == "undistort", image_size=size, jpeg_quality=95, channels=("CAM_FRONT",))
    record, stats = _sample(drive["log"], tmp_path, profile, 2)
    assert stats.copied == 0 and stats.decoded == len(record.frames) == 16  # only the wanted JPEGs are decoded
    calib = drive["log"].calibration["CAM_FRONT"]
    out = record.cameras["CAM_FRONT"]

    def expected(index: int) -> np.ndarray:
        source = simplejpeg.decode_jpeg(drives.jpeg("CAM_FRONT", index), colorspace="RGB")
        if change == "resize":
            return cv2.resize(source, size, interpolation=cv2.INTER_AREA)
        return cv2.undistort(source, calib.camera_matrix, np.array(calib.distortion), None, np.array(out["intrinsic"]))

    by_stamp = dict(zip(drive["recording"].camera_stamps["CAM_FRONT"], drive["recording"].camera_frames["CAM_FRONT"]))
    scores = []
    for frame in record.frames:
        written = simplejpeg.decode_jpeg((tmp_path / frame.path).read_bytes(), colorspace="RGB")
        index = by_stamp[frame.timestamp_us]
        assert written.shape[:2] == (out["height"], out["width"])
        scores.append(drives.psnr(written, expected(index)))
        assert scores[-1] > worst, index
        assert scores[-1] > drives.psnr(written, expected(index + 1)) + 3, index
    assert float(np.median(scores)) > median


def test_times_are_the_header_stamps_in_us_and_split_files_merge_without_repeats(drive):
    recording, log, report = drive["recording"], drive["log"], drive["result"].report
    for channel in ("CAM_FRONT", "CAM_FRONT_LEFT"):
        assert log.frame_timestamps(channel).tolist() == recording.camera_stamps[channel]
    assert log.pose()["timestamp_us"].tolist() == recording.pose_stamps
    assert log.manifest.camera_hz == 10 and log.manifest.start_time_us == drives.START_S * 1_000_000
    repeats = 10 if drive["flavour"] == "ros2" else 0  # one second of overlap at 10 Hz
    assert report["streams"]["camera CAM_FRONT"]["duplicates_dropped"] == repeats
    assert report["streams"]["pose"]["stamps_from_log_time"] == 0
    assert report["gaps"] == [] and report["file_gaps"] == []


def test_poses_round_trip_shifted_into_a_map_frame_with_positive_x_and_y(drive):
    pose, origin = drive["log"].pose(), drive["result"].report["map_origin"]
    assert pose[["x", "y"]].min().min() == pytest.approx(50.0)
    for row in pose.iloc[[0, 333, -1]].itertuples():
        t_s = (row.timestamp_us - drives.START_S * 1_000_000) / 1e6
        (x, y, z), (qx, qy, qz, qw) = drives.pose_at(t_s)
        assert (row.x + origin["x"], row.y + origin["y"], row.z) == pytest.approx((x, y, z), abs=1e-9)
        assert (row.qw, row.qx, row.qy, row.qz) == pytest.approx((qw, qx, qy, qz), abs=1e-12)


def test_the_pose_can_come_from_tf(short_drive, tmp_path):
    data = yaml.safe_load((TOPIC_MAPS / "ros2.yaml").read_text())
    data["pose"] = {"topic": "/tf"}  # map -> base_link among the transforms on /tf
    from_tf = ingest_mcap([short_drive], tmp_path / "tf", parse_topic_map(data), dbc=drives.DRIVE_DBC)
    from_odometry = _ingest("ros2", [short_drive], tmp_path / "odom")
    pd_tf, pd_odom = read_log(from_tf.path).pose(), read_log(from_odometry.path).pose()
    assert len(pd_tf) == 150 and pd_tf.equals(pd_odom)


def test_calibration_comes_from_camera_info_and_static_tf(drive):
    log = drive["log"]
    for channel, (translation, rotation_xyzw) in drives.CAMERA_MOUNT.items():
        calib = log.calibration[channel]
        assert (calib.width, calib.height) == (drives.WIDTH, drives.HEIGHT)
        assert calib.intrinsic == drives.INTRINSIC and calib.distortion == drives.DISTORTION
        assert calib.translation == pytest.approx(translation)
        w = rotation_xyzw[3]
        assert calib.rotation == pytest.approx((w, *rotation_xyzw[:3]))
    assert log.lidar_calibration["LIDAR_TOP"].translation == pytest.approx(drives.LIDAR_MOUNT[0])
    assert log.lidar_calibration["LIDAR_TOP"].rotation == pytest.approx((1.0, 0.0, 0.0, 0.0))


def test_point_clouds_become_pcd_bin_sweeps(drive):
    log = drive["log"]
    stamps = log.lidar_timestamps("LIDAR_TOP")
    assert stamps.tolist() == drive["recording"].camera_stamps["CAM_FRONT"]  # recorded with the frames
    np.testing.assert_array_equal(log.lidar_sweep("LIDAR_TOP", int(stamps[42])), drives.cloud(42))


def test_can_signals_come_from_dbc_frames_and_decoded_fields(drive):
    can = drive["log"].can()
    # ROS 2: the first speed frame comes before the first brake message, so it has no row.
    waiting = 1 if drive["flavour"] == "ros2" else 0
    assert drive["result"].report["can_rows_before_every_signal"] == waiting
    assert len(can) == 2100 - waiting and np.allclose(can["speed_mps"], drives.SPEED_MPS, atol=0.01)
    assert np.allclose(can["yaw_rate_rps"], 0.02)
    defaults = drive["result"].report["can_defaults"]
    if drive["flavour"] == "ros2":
        t_s = (can["timestamp_us"] - drives.START_S * 1_000_000) / 1e6
        # A row is written at each speed frame with the latest steering, the one of the previous cycle.
        assert np.allclose(can["steering_deg"], 15 * np.sin(t_s - 0.01), atol=0.051)
        assert set(can["gear"]) == {3}  # the vehicle's 4 (drive) through the topic map's values table
        assert can.loc[(t_s >= 5.02) & (t_s < 6), "brake"].eq(0.25).all() and can.loc[t_s < 4.98, "brake"].eq(0).all()
        assert defaults == {"accel_mps2": 0.0, "throttle": 0.0, "turn_signal": 0}
        # std_msgs/Float64 has no header: its messages (100 Hz, 1 s of them in both files) are timed by log time.
        assert drive["result"].report["signal_topics_stamped_by_log_time"] == {"/vehicle/brake": 2100 + 100}
    else:
        assert set(defaults) == {"steering_deg", "accel_mps2", "brake", "throttle", "gear", "turn_signal"}


def test_gaps_between_files_go_into_ingest_json_and_the_scene_catalog(tmp_path):
    recording = drives.write_drive(tmp_path / "mcap", "ros2", [(0, 8), (11.35, 21)])
    result = _ingest("ros2", recording.files, tmp_path / "logs")
    report = json.loads((result.path / INGEST_REPORT).read_text())
    gaps = {g["stream"]: g for g in report["gaps"]}
    assert set(gaps) == {"camera CAM_FRONT", "camera CAM_FRONT_LEFT", "lidar LIDAR_TOP", "pose", "can"}
    assert gaps["pose"]["seconds"] == pytest.approx(11.36 - 7.98)  # the last pose before and first after
    assert report["file_gaps"][0]["seconds"] == pytest.approx(3.35, abs=0.02)
    # H.264 frames after the lost ones refer to frames the log lacks: dropped up to the next keyframe.
    assert report["videos"]["CAM_FRONT_LEFT"]["dropped_waiting_for_keyframe"] == 6
    log = read_log(result.path)
    frames = drives.video_frames(log.video_path("CAM_FRONT_LEFT"))
    first_after = log.frame_timestamps("CAM_FRONT_LEFT").tolist().index(drives._camera_stamp_ns(120) // 1000)
    # The second file starts at frame 114; 120 is the next keyframe (one every 10 frames).
    after_gap = _recorded_h264_frames(recording.files[1:], "/cam_front_left/video", skip=6)
    assert len(frames) - first_after == len(after_gap) == 90
    assert all(np.array_equal(a, b) for a, b in zip(frames[first_after:], after_gap))
    windows, _ = cut_scenes(log.manifest)
    catalog = scene_statistics(log.manifest, windows, log.can(), log.pose())
    assert catalog["has_gap"].tolist() == [True]
    assert catalog["max_can_gap_s"].iloc[0] == pytest.approx(11.35 - 7.99)


@pytest.fixture(scope="module")
def short_drive(tmp_path_factory):
    """Three seconds of the ROS 2 drive in one file: the base of the broken recordings."""
    root = tmp_path_factory.mktemp("short")
    return drives.write_drive(root, "ros2", [(0, 3)]).files[0]


def _rewrite(source: Path, target: Path, topic: str, index: int, change) -> Path:
    """A copy of an MCAP file (through the mcap library's own writer) with message `index` of
    `topic` changed: change(message) gives (log_time, data)."""
    with open(source, "rb") as f_in, open(target, "wb") as f_out:
        reader = make_reader(f_in)
        writer = McapWriter(f_out)
        writer.start(profile="ros2", library="test")
        summary = reader.get_summary()
        schema_ids = {sid: writer.register_schema(s.name, s.encoding, s.data) for sid, s in summary.schemas.items()}
        channel_ids = {cid: writer.register_channel(c.topic, c.message_encoding, schema_ids[c.schema_id])
                       for cid, c in summary.channels.items()}
        seen = 0
        for _, channel, message in reader.iter_messages(log_time_order=True):
            log_time, data = message.log_time, message.data
            if channel.topic == topic:
                if seen == index:
                    log_time, data = change(message)
                seen += 1
            writer.add_message(channel_ids[message.channel_id], log_time, data, log_time)
        writer.finish()
    return target


def _cli_ingest(files, out: Path, capsys, topic_map: Path = TOPIC_MAPS / "ros2.yaml") -> tuple[int, str]:
    code = jadd(["ingest", "--format", "mcap", *map(str, files), "--out", str(out), "--topic-map", str(topic_map),
                 "--dbc", str(drives.DRIVE_DBC)])
    return code, capsys.readouterr().err


def test_a_malformed_message_is_an_error_naming_file_topic_and_index(short_drive, tmp_path, capsys):
    broken = _rewrite(short_drive, tmp_path / "broken_0.mcap", "/cam_front/image/compressed", 4,
                      lambda m: (m.log_time, m.data[:40]))
    code, err = _cli_ingest([broken], tmp_path / "logs", capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith("error: broken_0.mcap: topic /cam_front/image/compressed: message 4: malformed sensor_msgs/CompressedImage")
    assert not list((tmp_path / "logs").glob("*")) if (tmp_path / "logs").exists() else True  # nothing is left


def test_an_image_that_does_not_decode_is_an_error_naming_its_message(short_drive, tmp_path, capsys):
    def garbage(message):  # valid CDR, but the payload is no longer a JPEG
        start = message.data.index(b"\xff\xd8\xff")
        return message.log_time, message.data[:start] + b"XYZ" + message.data[start + 3:]

    broken = _rewrite(short_drive, tmp_path / "garbled_0.mcap", "/cam_front/image/compressed", 7, garbage)
    code, err = _cli_ingest([broken], tmp_path / "logs", capsys)
    assert code == 1
    assert "garbled_0.mcap: topic /cam_front/image/compressed: message 7: not a decodable JPEG or PNG image" in err


def test_a_message_out_of_order_is_an_error_naming_it(short_drive, tmp_path, capsys):
    # Message 5 of the pose is logged as if it came 0.2 s early: its header stamp then runs backwards.
    broken = _rewrite(short_drive, tmp_path / "late_0.mcap", "/odom", 5, lambda m: (m.log_time - 200_000_000, m.data))
    code, err = _cli_ingest([broken], tmp_path / "logs", capsys)
    assert code == 1
    assert "late_0.mcap: topic /odom: message" in err and "out of order" in err


def test_a_missing_topic_is_an_error_naming_it_and_the_files(short_drive, tmp_path, capsys):
    data = yaml.safe_load((TOPIC_MAPS / "ros2.yaml").read_text())
    data["cameras"]["CAM_BACK"] = {"topic": "/cam_back/image/compressed", "calibration": "/cam_back/camera_info"}
    topic_map = tmp_path / "map.yaml"
    topic_map.write_text(yaml.safe_dump(data))
    code, err = _cli_ingest([short_drive], tmp_path / "logs", capsys, topic_map)
    assert code == 1
    assert f"topic /cam_back/image/compressed (camera CAM_BACK): no messages in {short_drive.name}" in err
    assert f"topic /cam_back/camera_info (calibration of CAM_BACK): no messages in {short_drive.name}" in err


def test_a_bad_topic_map_names_the_field():
    data = yaml.safe_load((TOPIC_MAPS / "foxglove.yaml").read_text())
    data["can"]["signals"]["speed_kph"] = data["can"]["signals"].pop("speed_mps")
    with pytest.raises(TopicMapError) as error:
        parse_topic_map(data, "map.yaml")
    assert str(error.value).startswith("map.yaml:\ncan: signals ['speed_kph'] are not CAN columns")
    with pytest.raises(IngestError, match="no DBC file"):
        ingest_mcap([Path("x.mcap")], Path("/nonexistent"), load_topic_map(TOPIC_MAPS / "ros2.yaml"))


def test_uploaded_drives_are_converted_in_runs_of_their_own_and_then_registered(short_drive, tmp_path):
    from jadd_dagster.definitions import defs
    from jadd_dagster.defs.incoming import DRIVE_TAG
    from jadd_dagster.defs.resources import StoreResource

    good, bad = tmp_path / "incoming" / "drive-a", tmp_path / "incoming" / "drive-b"
    for folder in (good, bad):
        folder.mkdir(parents=True)
        shutil.copy(short_drive, folder / "drive_0.mcap")
        shutil.copy(drives.DRIVE_DBC, folder / "vehicle.dbc")
    shutil.copy(TOPIC_MAPS / "ros2.yaml", good / TOPIC_MAP)
    (bad / TOPIC_MAP).write_text((TOPIC_MAPS / "ros2.yaml").read_text().replace("/odom}", "/nowhere}"))
    resources = {"store": StoreResource(url=str(tmp_path))}
    repo = defs.get_repository_def()

    with dg.instance_for_test() as instance:
        tick = drives.sensor_ticker(instance, resources)
        # The sensor converts nothing itself: it asks for one run per complete drive.
        requests = tick("incoming_drive_sensor").run_requests
        assert sorted(r.tags[DRIVE_TAG] for r in requests) == ["drive-a", "drive-b"]
        assert not (tmp_path / "logs").exists()
        job = repo.get_job("convert_drive_job")
        waiting = instance.create_run_for_job(job, run_config=requests[0].run_config, tags=requests[0].tags)
        assert [r.tags[DRIVE_TAG] for r in tick("incoming_drive_sensor").run_requests] == [
            r.tags[DRIVE_TAG] for r in requests[1:]]  # a drive with a run queued is not asked for again
        instance.delete_run(waiting.run_id)
        outcomes = {r.tags[DRIVE_TAG]: job.execute_in_process(run_config=r.run_config, instance=instance, tags=r.tags,
                                                              resources=resources, raise_on_error=False)
                    for r in requests}
        assert outcomes["drive-a"].success and not outcomes["drive-b"].success
        assert (bad / INGEST_ERROR).read_text().startswith("topic /nowhere (pose): no messages in drive_0.mcap")
        assert tick("incoming_drive_sensor").run_requests == []  # converted, or failed and recorded
        registered = tick("drive_log_sensor")
    assert [r.partition_key for r in registered.run_requests] == ["drive-a"]
    assert read_log(tmp_path / "logs" / "drive-a").manifest.log_id == "drive-a"
    assert not (tmp_path / "logs" / "drive-b").exists()


@pytest.fixture(scope="module")
def two_rates(tmp_path_factory):
    """21 s of the ROS 2 drive with its cameras at rates of their own: the JPEG one (CAM_FRONT) at
    12 Hz, the H.264 one (CAM_FRONT_LEFT) at 30 Hz."""
    root = tmp_path_factory.mktemp("rates")
    recording = drives.write_drive(root / "mcap", "ros2", [(0, 21)], rates=RATES)
    result = _ingest("ros2", recording.files, root / "logs")
    return {"recording": recording, "result": result, "log": read_log(result.path)}


RATES = {"CAM_FRONT": 12, "CAM_FRONT_LEFT": 30}


def test_cameras_at_different_rates_are_ingested_and_sampled_at_their_own_rates(two_rates, tmp_path):
    log, recording = two_rates["log"], two_rates["recording"]
    assert log.manifest.camera_rates_hz == RATES and log.manifest.camera_hz == 30
    assert json.loads((log.path / "manifest.json").read_text())["format_version"] == 2  # older readers refuse it
    for channel, hz in RATES.items():
        assert log.camera_hz(channel) == hz
        assert log.frame_timestamps(channel).tolist() == recording.camera_stamps[channel]
        with av.open(str(log.video_path(channel))) as container:
            pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
        assert pts == [round(i * 1_000_000 / hz) for i in range(21 * hz)]
    # Keyframes 20-24 ms after a 12 Hz frame: within half the camera's own period, not half of 30 Hz's.
    profile = SamplingProfile(keyframe_hz=2, sweep_hz=10, channels=tuple(RATES))
    record, stats = _sample(log, tmp_path, profile, 2, start_s=1.02)
    for channel in RATES:
        frames = [f for f in record.frames if f.channel == channel]
        assert len(frames) == 16 and {f.timestamp_us for f in frames} <= set(recording.camera_stamps[channel])
        keys = [f.timestamp_us - t for f, t in zip([f for f in frames if f.is_key_frame], record.keyframe_times_us)]
        assert all(abs(offset) <= 1e6 / (2 * RATES[channel]) + 2_000 for offset in keys)
    assert stats.per_channel["CAM_FRONT"]["copied"] == 16


@pytest.mark.e2e
def test_an_ingested_log_with_cameras_at_two_rates_builds_a_dataset_the_devkit_loads(two_rates, tmp_path):
    nusc, summary = drives.build_two_camera_dataset(two_rates["result"].path, "mcap-rates", tmp_path)
    assert len(nusc.scene) == 1 and len(nusc.sample) == 40
    start, recording = drives.START_S * 1_000_000, two_rates["recording"]
    index = {c: dict(zip(recording.camera_stamps[c], recording.camera_frames[c])) for c in RATES}
    h264 = _recorded_h264_frames(recording.files, "/cam_front_left/video")
    records = {c: [r for r in nusc.sample_data if r["channel"] == c] for c in RATES}
    assert {c: len(r) for c, r in records.items()} == {c: 40 + 39 * 4 for c in RATES}
    for channel, channel_records in records.items():
        # Every sample_data is a recorded frame at its message's header time.
        assert {r["timestamp"] for r in channel_records} <= set(recording.camera_stamps[channel])
    for record in records["CAM_FRONT"]:  # kept as they are: the recorded JPEG files
        jpeg = (Path(summary["dataroot"]) / record["filename"]).read_bytes()
        assert jpeg == drives.jpeg("CAM_FRONT", index["CAM_FRONT"][record["timestamp"]])
    for record in records["CAM_FRONT_LEFT"][::17]:
        image = np.asarray(Image.open(Path(summary["dataroot"]) / record["filename"]).convert("RGB"))
        frame = index["CAM_FRONT_LEFT"][record["timestamp"]]
        assert drives.psnr(image, h264[frame]) > 30 and drives.psnr(image, h264[frame]) > drives.psnr(image, h264[frame + 1]) + 3
    for channel in RATES:
        record = nusc.get("sample_data", nusc.sample[10]["data"][channel])
        pose = nusc.get("ego_pose", record["ego_pose_token"])
        (x, y, _), _ = drives.pose_at((record["timestamp"] - start) / 1e6)
        origin = two_rates["result"].report["map_origin"]
        assert (pose["translation"][0] + origin["x"], pose["translation"][1] + origin["y"]) == pytest.approx((x, y), abs=0.01)
