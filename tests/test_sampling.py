"""Sampling: frame selection at the profile's rates, one decode pass, JPEG output and scene records.

The test videos are made here: every frame shows its own index as a 12-bit pattern of big blocks,
so a written JPEG can be checked to be the frame at its timestamp. Lens tests draw a bright dot
where the distorted lens model puts a known point and look for it in the output image.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import simplejpeg

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic, project_points
from jadd_dagster.logs import format as fmt
from jadd_dagster.logs.format import LogManifest
from jadd_dagster.sampling import (
    DecodeError,
    DecodeStats,
    MissingKeyframes,
    SamplingError,
    SamplingProfile,
    decode_frames,
    read_packets,
    sample_scene,
    sample_scene_timed,
    select_frames,
)
from jadd_dagster.scene_record import SceneRecord

T0 = 1_700_000_000_000_000  # log start, µs
PERIOD = 1e6 / 30
BLOCK_W, BLOCK_H = 80, 60  # 4 x 3 blocks of a 320 x 180 frame carry 12 bits
DARK, BRIGHT = 40, 220
X264 = "keyint=45:min-keyint=45:scenecut=0:b-adapt=0:bframes=3"  # several GOPs, B-frames everywhere


def camera_times(n: int, offset_us: int, jitter_us: int = 0, seed: int = 0) -> np.ndarray:
    """30 Hz frame timestamps from T0 + offset, with optional uniform jitter."""
    times = T0 + offset_us + np.rint(np.arange(n) * PERIOD).astype(np.int64)
    if jitter_us:
        times += np.random.default_rng(seed).integers(-jitter_us, jitter_us + 1, n)
    return times


# --- test videos and logs -------------------------------------------------------------------------


def index_image(i: int, width: int = 320, height: int = 180) -> np.ndarray:
    img = np.full((height, width, 3), DARK, np.uint8)
    for bit in range(12):
        if (i >> bit) & 1:
            row, col = divmod(bit, 4)
            img[row * BLOCK_H : (row + 1) * BLOCK_H, col * BLOCK_W : (col + 1) * BLOCK_W] = BRIGHT
    return img


def read_index(jpeg: bytes) -> int:
    gray = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[..., 0].astype(float)
    value = 0
    for bit in range(12):
        row, col = divmod(bit, 4)
        block = gray[row * BLOCK_H + 15 : (row + 1) * BLOCK_H - 15, col * BLOCK_W + 15 : (col + 1) * BLOCK_W - 15]
        value |= int(block.mean() > (DARK + BRIGHT) / 2) << bit
    return value


def write_video(path: Path, images, width: int, height: int, x264: str = X264, rate: int = 30) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "16", "x264-params": x264}
        for i, rgb in enumerate(images):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


class TinyLog:
    """A drive log on disk in the raw format, read back by the DriveLog interface sample_scene uses."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.manifest = LogManifest.from_json(json.loads((folder / fmt.MANIFEST).read_text()))
        calib = json.loads((folder / fmt.CALIBRATION).read_text())
        self.calibration = {c: CameraCalibration.from_json(d) for c, d in calib.items()}

    def can(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / fmt.CAN)

    def pose(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / fmt.POSE)

    def frame_timestamps(self, channel: str) -> np.ndarray:
        return pd.read_parquet(self.folder / fmt.timestamps_file(channel))["timestamp_us"].to_numpy()

    def video_path(self, channel: str) -> Path:
        return self.folder / fmt.video_file(channel)

    def pose_at(self, timestamps_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pose = self.pose()
        t = pose["timestamp_us"].to_numpy()
        trans = np.stack([np.interp(timestamps_us, t, pose[c].to_numpy()) for c in ("x", "y", "z")], axis=1)
        quat = np.stack([np.interp(timestamps_us, t, pose[c].to_numpy()) for c in ("qw", "qx", "qy", "qz")], axis=1)
        return trans, quat / np.linalg.norm(quat, axis=1, keepdims=True)


def make_tiny_log(
    folder: Path,
    cameras: dict[str, tuple[int, int]],
    calibrations: dict[str, CameraCalibration] | None = None,
    images=None,
    x264: str = X264,
) -> TinyLog:
    """cameras maps channel to (frame count, timestamp offset µs); images(channel, i) -> RGB frame."""
    (folder / "cameras").mkdir(parents=True)
    calibrations = calibrations or {
        ch: CameraCalibration(ch, 320, 180, pinhole_intrinsic(320, 180, 70.0)) for ch in cameras
    }
    images = images or (lambda channel, i: index_image(i))
    duration = int(max(n for n, _ in cameras.values()) * PERIOD)
    manifest = LogManifest("tiny", "car-1", "test-town", T0, duration, tuple(cameras))
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest.to_json()))
    (folder / fmt.CALIBRATION).write_text(json.dumps({c: calibrations[c].to_json() for c in cameras}))
    for channel, (n, offset) in cameras.items():
        calib = calibrations[channel]
        frames = (images(channel, i) for i in range(n))
        write_video(folder / fmt.video_file(channel), frames, calib.width, calib.height, x264)
        pd.DataFrame({"timestamp_us": camera_times(n, offset)}).to_parquet(folder / fmt.timestamps_file(channel))
    can_t = T0 + np.arange(0, duration + 20_000, 10_000, dtype=np.int64)
    can = pd.DataFrame({c: np.linspace(0, 1, can_t.size) for c in fmt.CAN_COLUMNS[1:]})
    can.insert(0, "timestamp_us", can_t)
    can.to_parquet(folder / fmt.CAN)
    pose_t = T0 + np.arange(0, duration + 40_000, 20_000, dtype=np.int64)
    secs = (pose_t - T0) / 1e6
    yaw = 0.1 * secs
    pose = pd.DataFrame(
        {"timestamp_us": pose_t, "x": 5.0 * secs, "y": 2.0 + secs, "z": np.zeros_like(secs),
         "qw": np.cos(yaw / 2), "qx": 0.0, "qy": 0.0, "qz": np.sin(yaw / 2)}
    )
    pose.to_parquet(folder / fmt.POSE)
    return TinyLog(folder)


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory) -> TinyLog:
    """Two cameras, 6 s each, with different timestamp offsets."""
    return make_tiny_log(tmp_path_factory.mktemp("log"), {"CAM_FRONT": (180, 4_000), "CAM_BACK": (180, 11_000)})


# --- profile ----------------------------------------------------------------------------------------


def test_profile_key_is_stable_and_follows_every_setting():
    base = SamplingProfile(2, 10, False, None, 90, ("CAM_FRONT",))
    assert base.key() == SamplingProfile(2, 10, False, None, 90, ["CAM_FRONT"]).key()
    assert len(base.key()) == 12 and int(base.key(), 16) >= 0
    variants = [
        SamplingProfile(2, 2, False, None, 90, ("CAM_FRONT",)),
        SamplingProfile(2, 10, True, None, 90, ("CAM_FRONT",)),
        SamplingProfile(2, 10, False, (800, 450), 90, ("CAM_FRONT",)),
        SamplingProfile(2, 10, False, None, 85, ("CAM_FRONT",)),
        SamplingProfile(2, 10, False, None, 90, ("CAM_FRONT", "CAM_BACK")),
    ]
    assert len({base.key(), *(v.key() for v in variants)}) == 6
    assert SamplingProfile.from_json(base.to_json()) == base


@pytest.mark.parametrize("keyframe_hz, sweep_hz", [(3, 30), (10, 5), (2, 5), (2, 25)])
def test_profile_rejects_rates_that_do_not_nest(keyframe_hz, sweep_hz):
    with pytest.raises(ValueError):
        SamplingProfile(keyframe_hz, sweep_hz)


# --- frame selection --------------------------------------------------------------------------------


def test_2_hz_keyframes_and_10_hz_sweeps_of_a_20_s_scene():
    times = camera_times(30 * 25, offset_us=7_000)
    start = T0 + 2_000_000
    sel = select_frames(times, start, start + 20_000_000, 2, 10)
    keys = [s for s in sel if s.is_key_frame]
    sweeps = [s for s in sel if not s.is_key_frame]
    assert len(keys) == 40
    assert len(sweeps) == 160 - 4  # the 4 sweeps after the last keyframe (19.6 .. 19.9 s) are dropped
    assert [s.keyframe_index for s in keys] == list(range(40))
    assert all(s.keyframe_index is None for s in sweeps)
    # Each keyframe is the frame nearest its target: the frame grid is offset by 7 ms.
    for k, s in enumerate(keys):
        target = start + k * 500_000
        expected = int(round((target - T0 - 7_000) / PERIOD))
        assert s.frame_index == expected and s.timestamp_us == times[expected]
        assert abs(s.timestamp_us - target) <= PERIOD / 2
    key_times = np.array([s.timestamp_us for s in keys])
    assert np.all(np.abs(np.diff(key_times) - 500_000) <= PERIOD)
    sweep_targets = [start + j * 100_000 for j in range(200) if j % 5 and j < 195]
    assert [abs(s.timestamp_us - t) <= PERIOD / 2 for s, t in zip(sweeps, sweep_targets)] == [True] * 156
    assert [s.frame_index for s in sel] == sorted({s.frame_index for s in sel})  # time order, none twice


@pytest.mark.parametrize("keyframe_hz, sweep_hz", [(2, 10), (2, 30), (5, 10), (10, 30), (2, 2)])
def test_sweeps_lie_strictly_between_keyframes_and_none_after_the_last(keyframe_hz, sweep_hz):
    times = camera_times(30 * 12, offset_us=-5_000, jitter_us=1_500, seed=keyframe_hz)
    start, end = T0 + 500_000, T0 + 10_500_000
    sel = select_frames(times, start, end, keyframe_hz, sweep_hz)
    keys = [s for s in sel if s.is_key_frame]
    assert len(keys) == 10 * keyframe_hz
    ratio = sweep_hz // keyframe_hz
    assert len(sel) - len(keys) == (len(keys) - 1) * (ratio - 1)  # one per sweep target, none lost
    current = -1
    for s in sel:
        if s.is_key_frame:
            assert s.keyframe_index == current + 1
            current = s.keyframe_index
        else:
            assert keys[current].timestamp_us < s.timestamp_us < keys[current + 1].timestamp_us
    assert sel[-1].is_key_frame


def test_30_hz_keyframes_take_every_frame():
    times = camera_times(300, offset_us=12_000, jitter_us=2_000, seed=3)
    sel = select_frames(times, T0, T0 + 10_000_000, 30, 30)
    assert [s.frame_index for s in sel] == list(range(300))
    assert all(s.is_key_frame for s in sel) and [s.keyframe_index for s in sel] == list(range(300))


def test_a_dropped_frame_skips_the_sweep_it_would_serve():
    times = np.delete(camera_times(300, 0), [16])  # frame at 0.533 s lost: no frame near 0.5-0.55 s
    sel = select_frames(times, T0, T0 + 2_000_000, 2, 30)
    sweeps = [s.timestamp_us - T0 for s in sel if not s.is_key_frame]
    assert len(sweeps) == 3 * 14 - 1
    assert not any(483_000 < t < 550_000 for t in sweeps)  # only the keyframe's own frame there
    assert len({s.frame_index for s in sel}) == len(sel)


def test_a_keyframe_without_a_frame_near_it_is_reported():
    times = np.delete(camera_times(300, 0), [14, 15, 16])  # 0.467 .. 0.533 s lost
    with pytest.raises(MissingKeyframes) as err:
        select_frames(times, T0, T0 + 2_000_000, 2, 10)
    assert err.value.times_us == [T0 + 500_000]


# --- decoding ---------------------------------------------------------------------------------------


def test_decode_pass_seeks_once_and_returns_the_wanted_frames(tiny_log):
    video = tiny_log.video_path("CAM_FRONT")
    wanted = [50, 53, 56, 60, 89, 91, 140]
    stats = DecodeStats()
    got = [(i, read_index(simplejpeg.encode_jpeg(f.to_ndarray(format="rgb24"), 95))) for i, f in
           decode_frames(video, wanted, 180, stats=stats)]
    assert got == [(i, i) for i in wanted]
    assert stats.seeks == 1
    assert stats.decoded <= 140 - 45 + 1  # started at the GOP of frame 50 (keyframe 45), stopped at 140


def test_a_seek_that_lands_after_the_first_wanted_frame_is_retried_further_back(tiny_log, monkeypatch):
    open_video = av.open

    class LateFirstSeek:
        """A container whose first seek lands one GOP late, as a demuxer seeking by DTS can."""

        def __init__(self, *args, **kwargs):
            self.container, self.seeks = open_video(*args, **kwargs), 0

        def __getattr__(self, name):
            return getattr(self.container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.container.close()

        def seek(self, offset, **kwargs):
            self.seeks += 1
            late = int(45 / 30 / self.container.streams.video[0].time_base) if self.seeks == 1 else 0
            self.container.seek(offset + late, **kwargs)

    monkeypatch.setattr(av, "open", LateFirstSeek)
    stats = DecodeStats()
    got = [(i, read_index(simplejpeg.encode_jpeg(f.to_ndarray(format="rgb24"), 95))) for i, f in
           decode_frames(tiny_log.video_path("CAM_FRONT"), [50, 70], 180, stats=stats)]
    assert got == [(50, 50), (70, 70)] and stats.seeks == 2


def test_skipping_unwanted_frames_changes_no_wanted_frame(tiny_log):
    video = tiny_log.video_path("CAM_FRONT")
    wanted = list(range(1, 180, 3))
    skipped, full = DecodeStats(), DecodeStats()
    a = [(i, f.to_ndarray(format="yuv420p")) for i, f in decode_frames(video, wanted, 180, stats=skipped)]
    b = [(i, f.to_ndarray(format="yuv420p"))
         for i, f in decode_frames(video, wanted, 180, stats=full, skip_unwanted=False)]
    assert [i for i, _ in a] == [i for i, _ in b] == wanted
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
    assert skipped.decoded < full.decoded


def _jpeg_log(folder: Path, jpeg=lambda i: simplejpeg.encode_jpeg(index_image(i), 90, colorsubsampling="420")) -> TinyLog:
    """The tiny log with CAM_FRONT stored as recorded JPEG images (the format ingest writes for a
    JPEG camera: one packet a frame, codec mjpeg), jpeg(i) being frame i's file."""
    from jadd_dagster.ingest.video import CameraVideo

    log = make_tiny_log(folder, {"CAM_FRONT": (90, 4_000)})
    video = CameraVideo(log.video_path("CAM_FRONT"), 30)
    log.video_path("CAM_FRONT").unlink()
    for i in range(90):
        video.add("jpeg", jpeg(i))
    video.close()
    return log


def _without_huffman_tables(jpeg: bytes) -> bytes:
    """The JPEG without its DHT segments, as motion-JPEG cameras send frames (decoders fill in
    the standard tables, which libjpeg-turbo's encoder used)."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos + 1] != 0xDA:
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xC4:
            out += jpeg[pos : pos + 2 + length]
        pos += 2 + length
    return bytes(out + jpeg[pos:])


def test_an_intra_only_video_gives_its_wanted_packets_and_decodes_only_those(tmp_path):
    log = _jpeg_log(tmp_path)
    video, wanted = log.video_path("CAM_FRONT"), [3, 10, 11, 40]
    stats = DecodeStats()
    packets = list(read_packets(video, wanted, 90, 30, stats))
    assert [i for i, _ in packets] == wanted
    assert [p for _, p in packets] == [simplejpeg.encode_jpeg(index_image(i), 90, colorsubsampling="420") for i in wanted]
    assert stats.seeks == 1 and stats.decoded == 0 and stats.not_decoded == 40 - 3 + 1 - 4  # read past, not decoded
    stats = DecodeStats()
    frames = [(i, read_index(simplejpeg.encode_jpeg(f.to_ndarray(format="rgb24"), 95)))
              for i, f in decode_frames(video, wanted, 90, 30, stats, threads=1)]
    assert frames == [(i, i) for i in wanted] and stats.decoded == 4
    with pytest.raises(DecodeError, match="not pictures of their own"):
        list(read_packets(make_tiny_log(tmp_path / "h264", {"CAM_FRONT": (30, 0)}).video_path("CAM_FRONT"), [1], 30))


def test_kept_jpegs_are_copied_and_a_resize_decodes_and_encodes_them_once(tmp_path):
    log = _jpeg_log(tmp_path / "log")
    start, end = T0 + 500_000, T0 + 2_500_000
    kept, stats = sample_scene_timed(log, 0, start, end, SamplingProfile(2, 10, False, None, 60), tmp_path / "kept", "t/0")
    assert stats.copied == stats.frames == len(kept.frames) == 4 + 3 * 4 and stats.decoded == 0
    for frame in kept.frames:
        index = int(np.searchsorted(log.frame_timestamps("CAM_FRONT"), frame.timestamp_us))
        assert (tmp_path / "kept" / frame.path).read_bytes() == simplejpeg.encode_jpeg(
            index_image(index), 90, colorsubsampling="420")
    resized, stats = sample_scene_timed(log, 0, start, end, SamplingProfile(2, 10, False, (160, 90), 60),
                                        tmp_path / "resized", "t/0")
    assert stats.copied == 0 and stats.decoded == len(resized.frames)
    for frame in resized.frames:
        index = int(np.searchsorted(log.frame_timestamps("CAM_FRONT"), frame.timestamp_us))
        small = simplejpeg.decode_jpeg((tmp_path / "resized" / frame.path).read_bytes())
        assert small.shape == (90, 160, 3)
        assert read_index(simplejpeg.encode_jpeg(cv2.resize(small, (320, 180)), 95)) == index


def test_a_jpeg_without_huffman_tables_is_encoded_instead_of_copied(tmp_path):
    log = _jpeg_log(tmp_path / "log", lambda i: _without_huffman_tables(
        simplejpeg.encode_jpeg(index_image(i), 90, colorsubsampling="420")))
    record, stats = sample_scene_timed(log, 0, T0 + 500_000, T0 + 1_500_000, SamplingProfile(2, 10), tmp_path / "s", "t/0")
    assert stats.copied == 0 and stats.frames == len(record.frames) == 2 + 4
    for frame in record.frames:
        jpeg = (tmp_path / "s" / frame.path).read_bytes()
        index = int(np.searchsorted(log.frame_timestamps("CAM_FRONT"), frame.timestamp_us))
        assert b"\xff\xc4" in jpeg and read_index(jpeg) == index


def test_each_camera_is_selected_at_its_own_rate(tmp_path):
    """A 10 Hz camera beside a 30 Hz one: a keyframe 40 ms from the nearest 10 Hz frame is within
    half that camera's period, which half the 30 Hz period (the log's camera_hz) would refuse."""
    folder = tmp_path / "log"
    log = make_tiny_log(folder, {"CAM_FRONT": (90, 0), "CAM_BACK": (30, 0)})
    write_video(folder / fmt.video_file("CAM_BACK"), (index_image(i) for i in range(30)), 320, 180, rate=10)
    pd.DataFrame({"timestamp_us": T0 + np.arange(30, dtype=np.int64) * 100_000}).to_parquet(
        folder / fmt.timestamps_file("CAM_BACK"))
    manifest = json.loads((folder / fmt.MANIFEST).read_text()) | {"camera_rates_hz": {"CAM_FRONT": 30, "CAM_BACK": 10}}
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest))
    log = TinyLog(folder)
    start = T0 + 40_000
    record = sample_scene(log, 0, start, start + 1_000_000, SamplingProfile(2, 2, channels=("CAM_FRONT", "CAM_BACK")),
                          tmp_path / "s", "t/0")
    back = [f for f in record.frames if f.channel == "CAM_BACK"]
    assert [f.timestamp_us for f in back] == [T0, T0 + 500_000]
    assert [read_index((tmp_path / "s" / f.path).read_bytes()) for f in back] == [0, 5]


def test_each_jpeg_is_the_frame_at_its_timestamp(tiny_log, tmp_path):
    profile = SamplingProfile(2, 10, False, None, 90, ("CAM_FRONT", "CAM_BACK"))
    start, end = T0 + 1_300_000, T0 + 4_300_000
    record, stats = sample_scene_timed(tiny_log, 0, start, end, profile, tmp_path, "tiny/0000")
    assert stats.seeks == 2 and stats.frames == len(record.frames) == 2 * (6 + 5 * 4)
    for channel in profile.channels:
        times = tiny_log.frame_timestamps(channel)
        for frame in (f for f in record.frames if f.channel == channel):
            jpeg = (tmp_path / frame.path).read_bytes()
            assert read_index(jpeg) == int(np.searchsorted(times, frame.timestamp_us))
            assert simplejpeg.decode_jpeg_header(jpeg)[:2] == (180, 320)


def test_native_jpeg_keeps_the_source_colours(tiny_log, tmp_path):
    """Straight from the decoder's planes, limited-range video comes out at full range."""
    profile = SamplingProfile(2, 2, False, None, 95, ("CAM_FRONT",))
    record = sample_scene(tiny_log, 0, T0 + 2_000_000, T0 + 3_000_000, profile, tmp_path / "native", "tiny/0001")
    resized = sample_scene(
        tiny_log, 0, T0 + 2_000_000, T0 + 3_000_000,
        SamplingProfile(2, 2, False, (318, 178), 95, ("CAM_FRONT",)), tmp_path / "resized", "tiny/0001",
    )
    for root, rec in ((tmp_path / "native", record), (tmp_path / "resized", resized)):
        frame = rec.frames[0]
        rgb = simplejpeg.decode_jpeg((root / frame.path).read_bytes())
        truth = index_image(int(np.searchsorted(tiny_log.frame_timestamps("CAM_FRONT"), frame.timestamp_us)))
        truth = cv2.resize(truth, (frame.width, frame.height), interpolation=cv2.INTER_AREA)
        assert np.median(np.abs(rgb.astype(int) - truth)) <= 2


# --- scene output -----------------------------------------------------------------------------------


def test_scene_has_one_keyframe_per_channel_per_index_and_round_trips(tiny_log, tmp_path):
    profile = SamplingProfile(5, 10, False, None, 80, ("CAM_FRONT", "CAM_BACK"))
    start, end = T0 + 400_000, T0 + 5_400_000
    record = sample_scene(tiny_log, 3, start, end, profile, tmp_path, "tiny/0003")
    assert record.keyframe_times_us == [start + k * 200_000 for k in range(25)]
    for channel in profile.channels:
        keys = [f.keyframe_index for f in record.frames if f.channel == channel and f.is_key_frame]
        assert keys == list(range(25))
        assert len([f for f in record.frames if f.channel == channel and not f.is_key_frame]) == 24
    assert SceneRecord.load(tmp_path) == record
    assert record.profile == profile.key() and record.scene_index == 3 and record.log_id == "tiny"
    assert record.cameras["CAM_BACK"] == tiny_log.calibration["CAM_BACK"].to_json()
    assert sorted(p.name for p in (tmp_path / "CAM_FRONT").iterdir()) == sorted(
        f"{f.timestamp_us}.jpg" for f in record.frames if f.channel == "CAM_FRONT"
    )
    frame = record.frames[7]
    trans, quat = tiny_log.pose_at(np.array([frame.timestamp_us]))
    assert np.allclose(frame.ego_pose.translation, trans[0]) and np.allclose(frame.ego_pose.rotation, quat[0])
    for name in ("can.parquet", "pose.parquet"):
        t = pd.read_parquet(tmp_path / name)["timestamp_us"].to_numpy()
        assert t[0] < start <= t[1] and t[-2] < end <= t[-1]


def test_a_scene_past_the_end_of_the_video_names_the_channel(tmp_path):
    log = make_tiny_log(tmp_path / "log", {"CAM_FRONT": (90, 0), "CAM_FRONT_LEFT": (45, 0)})
    profile = SamplingProfile(2, 10, False, None, 90, ("CAM_FRONT", "CAM_FRONT_LEFT"))
    with pytest.raises(SamplingError, match=r"tiny/0000: CAM_FRONT_LEFT .*keyframe time 1700000001500000"):
        sample_scene(log, 0, T0, T0 + 3_000_000, profile, tmp_path / "out", "tiny/0000")
    assert not (tmp_path / "out").exists()  # found before any decoding, nothing written
    with pytest.raises(SamplingError, match="CAM_BACK"):
        sample_scene(log, 0, T0, T0 + 1_000_000, SamplingProfile(channels=("CAM_BACK",)), tmp_path / "o2", "x")


def test_a_video_shorter_than_its_timestamps_is_an_error(tmp_path):
    log = make_tiny_log(tmp_path / "log", {"CAM_FRONT": (60, 0)})
    pd.DataFrame({"timestamp_us": camera_times(90, 0)}).to_parquet(log.folder / fmt.timestamps_file("CAM_FRONT"))
    with pytest.raises(SamplingError, match="CAM_FRONT.*60 frames in the video but 90"):
        sample_scene(log, 0, T0, T0 + 2_500_000, SamplingProfile(), tmp_path / "out", "tiny/0000")


# --- lens and size ----------------------------------------------------------------------------------


DISTORTED = CameraCalibration(
    "CAM_FRONT", 640, 360, pinhole_intrinsic(640, 360, 100.0), distortion=(-0.28, 0.07, 0.0005, -0.0004, 0.0)
)
WORLD_POINTS = np.array([[0.0, 0.0, 10.0], [-5.5, -2.8, 10.0], [5.0, 2.6, 10.0], [6.0, -1.0, 10.0], [-2.0, 3.0, 10.0]])


def dot_image(calib: CameraCalibration, sigma: float = 1.6, chroma: bool = False) -> np.ndarray:
    """A dot at each world point's distorted projection: bright on dark, or (chroma) a blue dot of
    the same luma as its grey surround, which only the colour planes can carry."""
    u, v = np.meshgrid(np.arange(calib.width), np.arange(calib.height))
    dots = np.zeros((calib.height, calib.width))
    for px, py in project_points(WORLD_POINTS, calib, distorted=True):
        dots += np.exp(-((u - px) ** 2 + (v - py) ** 2) / (2 * sigma**2))
    if not chroma:
        return np.repeat(np.clip(230 * dots + 16, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    ycrcb = np.stack([np.full_like(dots, 110), np.full_like(dots, 128), 128 + 90 * dots], axis=2)
    return cv2.cvtColor(np.clip(ycrcb, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def dot_centre(image: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    """Centroid (x, y) of the bright blob in a single-channel image around pixel near."""
    x0, y0 = int(round(near[0])), int(round(near[1]))
    patch = image[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].astype(float)
    weights = np.clip(patch - np.percentile(patch, 50) - 10, 0, None)
    ys, xs = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


@pytest.fixture(scope="module")
def dot_log(tmp_path_factory) -> TinyLog:
    image = dot_image(DISTORTED)
    return make_tiny_log(
        tmp_path_factory.mktemp("dots"), {"CAM_FRONT": (15, 0)}, {"CAM_FRONT": DISTORTED}, lambda c, i: image
    )


@pytest.fixture(scope="module")
def colour_dot_log(tmp_path_factory) -> TinyLog:
    image = dot_image(DISTORTED, sigma=5.0, chroma=True)
    return make_tiny_log(
        tmp_path_factory.mktemp("colour"), {"CAM_FRONT": (3, 0)}, {"CAM_FRONT": DISTORTED}, lambda c, i: image
    )


@pytest.mark.parametrize("image_size", [None, (480, 270), (320, 180), (213, 120)])
@pytest.mark.parametrize("undistort", [True, False])
def test_a_world_point_lands_where_the_output_calibration_projects_it(dot_log, tmp_path, undistort, image_size):
    profile = SamplingProfile(2, 2, undistort, image_size, 95, ("CAM_FRONT",))
    record = sample_scene(dot_log, 0, T0, T0 + 400_000, profile, tmp_path, "dots/0000")
    out = CameraCalibration.from_json(record.cameras["CAM_FRONT"])
    frame = record.frames[0]
    gray = simplejpeg.decode_jpeg((tmp_path / frame.path).read_bytes(), colorspace="GRAY")[..., 0]
    assert gray.shape == (frame.height, frame.width) == (out.height, out.width)
    assert out.is_distorted != undistort
    expected = project_points(WORLD_POINTS, out, distorted=not undistort)
    inside = np.all((expected > 8) & (expected < np.array([out.width, out.height]) - 9), axis=1)
    assert inside.sum() >= 3
    for pixel in expected[inside]:
        # Well under 1 px, so that a half-pixel slip in the resize convention fails too.
        assert np.linalg.norm(dot_centre(gray, pixel) - pixel) < 0.3


@pytest.mark.parametrize(
    "undistort, image_size", [(True, None), (True, (320, 180)), (False, (317, 179)), (True, (213, 120))]
)
def test_colour_lands_with_the_luma(colour_dot_log, tmp_path, undistort, image_size):
    """The half-resolution colour planes are remapped on their own grid: check they stay aligned."""
    profile = SamplingProfile(2, 2, undistort, image_size, 95, ("CAM_FRONT",))
    record = sample_scene(colour_dot_log, 0, T0, T0 + 100_000, profile, tmp_path, "colour/0000")
    out = CameraCalibration.from_json(record.cameras["CAM_FRONT"])
    rgb = simplejpeg.decode_jpeg((tmp_path / record.frames[0].path).read_bytes())
    blue = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 2]
    radius = 10 if image_size is None else 6
    expected = project_points(WORLD_POINTS, out, distorted=not undistort)
    inside = np.all((expected > radius + 1) & (expected < np.array([out.width, out.height]) - radius - 2), axis=1)
    assert inside.sum() >= 3
    for pixel in expected[inside]:
        # Aligned: < 0.2 px; a slip of half a colour sample (one source pixel) shows as 0.4-1 px.
        assert np.linalg.norm(dot_centre(blue, pixel, radius) - pixel) < 0.3


def test_resize_sets_the_image_size_and_scales_the_intrinsics(dot_log, tmp_path):
    profile = SamplingProfile(2, 2, False, (320, 180), 90, ("CAM_FRONT",))
    record = sample_scene(dot_log, 0, T0, T0 + 400_000, profile, tmp_path, "dots/0000")
    out = CameraCalibration.from_json(record.cameras["CAM_FRONT"])
    assert (out.width, out.height) == (320, 180)
    assert np.allclose(out.camera_matrix[:2], DISTORTED.camera_matrix[:2] / 2)
    assert out.distortion == DISTORTED.distortion and out.rotation == DISTORTED.rotation
    header = simplejpeg.decode_jpeg_header((tmp_path / record.frames[0].path).read_bytes())
    assert header[:2] == (180, 320)


# --- a generated log --------------------------------------------------------------------------------


def test_sample_a_generated_log(tmp_path):
    generator = pytest.importorskip("jadd_dagster.sim.generator")
    reader = pytest.importorskip("jadd_dagster.logs.reader")
    channels = ("CAM_FRONT", "CAM_BACK_LEFT")
    (path,) = generator.make_logs(tmp_path / "logs", 1, 0.1, 7, channels=channels, image_size=(320, 180))
    log = reader.read_log(path)
    start, end = log.manifest.start_time_us + 1_000_000, log.manifest.start_time_us + 5_000_000
    native = sample_scene(log, 0, start, end, SamplingProfile(2, 10, channels=channels), tmp_path / "native", "g/0")
    profile = SamplingProfile(2, 10, True, (160, 90), 85, channels)
    small = sample_scene(log, 0, start, end, profile, tmp_path / "small", "g/0")
    assert SceneRecord.load(tmp_path / "small") == small
    for record in (native, small):
        for channel in channels:
            frames = [f for f in record.frames if f.channel == channel]
            assert [f.keyframe_index for f in frames if f.is_key_frame] == list(range(8))
            assert len(frames) == 8 + 7 * 4
            assert {(f.width, f.height) for f in frames} == {(320, 180) if record is native else (160, 90)}
    for channel in channels:
        times = log.frame_timestamps(channel)
        # Ground truth from an independent decoder (OpenCV's own FFmpeg), every frame in order.
        capture = cv2.VideoCapture(str(log.video_path(channel)))
        count = int(np.searchsorted(times, end)) + 1
        truth = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(count)]
        for f in (f for f in native.frames if f.channel == channel):
            i = int(np.searchsorted(times, f.timestamp_us))
            assert times[i] == f.timestamp_us
            rgb = simplejpeg.decode_jpeg((tmp_path / "native" / f.path).read_bytes()).astype(int)
            error = [np.abs(rgb - truth[j]).mean() for j in (i - 1, i, i + 1)]
            # JPEG noise only, and nearer this frame than its neighbours (equal if parked).
            assert error[1] < 4 and error[1] <= min(error) + 0.25
