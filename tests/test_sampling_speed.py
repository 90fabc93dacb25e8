"""What makes sampling fast must not change what it writes.

The decode pass leaves out what no wanted frame needs (GOP tails, whole GOPs, unwanted
non-reference frames) and a worker uses every CPU it may (frame-threaded decoder, a pool that
encodes): each wanted frame must still be bit-identical to a full single-threaded decode, each
JPEG the same bytes as the single-threaded run, and every timestamp the same. The pixel tolerance
against the previous implementation (which decoded every reference frame and encoded in one
thread, with the same encoder) is therefore zero: the JPEG bytes are compared. The bench's smoke
run keeps bench/bench_sampling.py working.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import simplejpeg

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic
from jadd_dagster.sampling import (
    THREADS_ENV,
    DecodeStats,
    FrameEncoder,
    SamplingProfile,
    available_cpus,
    decode_frames,
    sample_scene_timed,
    sampling_threads,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_sampling import T0, X264, make_tiny_log, read_index  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 180  # 4 GOPs of 45 frames, 3 B-frames between references
OPEN_GOP = X264 + ":open-gop=1"  # keyframes after the first are I frames, not IDR: GOPs refer back


def wanted_sets() -> dict[str, list[int]]:
    return {
        "2 Hz": list(range(7, FRAMES, 15)),
        "10 Hz": list(range(1, FRAMES, 3)),
        "30 Hz": list(range(20, 150)),
        "one GOP skipped": [50, 53, 56, 140, 141],
        "last frame": [179],
    }


def full_decode(video: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """The reference: every frame decoded, one thread, nothing skipped."""
    frames = decode_frames(video, wanted, FRAMES, skip_unwanted=False, threads=1)
    return {i: f.to_ndarray(format="yuv420p") for i, f in frames}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    return {
        "closed": make_tiny_log(root / "closed", {"CAM_FRONT": (FRAMES, 3_000), "CAM_BACK": (FRAMES, 9_000)}),
        "open": make_tiny_log(root / "open", {"CAM_FRONT": (FRAMES, 3_000)}, x264=OPEN_GOP),
    }


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("gop", ["closed", "open"])
def test_a_pass_that_skips_what_is_not_needed_gives_the_full_decodes_frames(logs, gop, threads):
    video = logs[gop].video_path("CAM_FRONT")
    for name, wanted in wanted_sets().items():
        stats = DecodeStats()
        got = {i: f.to_ndarray(format="yuv420p") for i, f in decode_frames(video, wanted, FRAMES, stats=stats,
                                                                            threads=threads)}
        truth = full_decode(video, wanted)
        assert list(got) == list(truth) == wanted, name
        assert all(np.array_equal(got[i], truth[i]) for i in wanted), name
        if gop == "open":
            assert stats.not_decoded == 0, name  # the next GOP may refer into this one: keep it all
        elif name in ("2 Hz", "one GOP skipped"):
            assert stats.not_decoded > 0, name
    # A whole GOP without a wanted frame (frames 90-134) is not decoded when an IDR frame follows it.
    stats = DecodeStats()
    list(decode_frames(logs["closed"].video_path("CAM_FRONT"), [50, 140], FRAMES, stats=stats, threads=threads))
    assert stats.not_decoded >= 45 and stats.decoded <= 140 - 45 + 1 - 45


@pytest.mark.parametrize(
    "undistort, image_size", [(False, None), (True, None), (True, (160, 90))], ids=["native", "undistorted", "half"]
)
def test_two_threads_write_the_same_bytes_and_timestamps_as_one(tmp_path, undistort, image_size):
    distorted = CameraCalibration(
        "CAM_FRONT", 320, 180, pinhole_intrinsic(320, 180, 90.0), distortion=(-0.25, 0.06, 0.0004, -0.0003, 0.0)
    )
    plain = CameraCalibration("CAM_BACK", 320, 180, pinhole_intrinsic(320, 180, 70.0))
    log = make_tiny_log(
        tmp_path / "log", {"CAM_FRONT": (FRAMES, 3_000), "CAM_BACK": (FRAMES, 9_000)},
        {"CAM_FRONT": distorted, "CAM_BACK": plain},
    )
    profile = SamplingProfile(2, 30, undistort, image_size, 90, ("CAM_FRONT", "CAM_BACK"))
    start, end = T0 + 700_000, T0 + 5_200_000
    outputs = {}
    for threads in (1, 2):
        record, stats = sample_scene_timed(log, 0, start, end, profile, tmp_path / str(threads), "t/0", threads)
        assert stats.threads == threads
        files = {f.path: (tmp_path / str(threads) / f.path).read_bytes() for f in record.frames}
        outputs[threads] = (record, files)
    (one, one_files), (two, two_files) = outputs[1], outputs[2]
    assert two == one  # frames, timestamps, poses, calibrations
    assert two_files == one_files
    for frame in one.frames if image_size is None else []:  # each JPEG is the frame at its own timestamp
        times = log.frame_timestamps(frame.channel)
        assert read_index(one_files[frame.path]) == int(np.searchsorted(times, frame.timestamp_us))


@pytest.mark.parametrize("gop", ["closed", "open"])
def test_one_cameras_frames_cut_into_pieces_for_threads_are_the_same_bytes(logs, tmp_path, gop):
    """One camera and several threads: its frames are cut into runs that decoders of their own
    decode side by side (sampling/scene._pieces), cuts falling inside GOPs; open GOPs refer back
    across the cut. Every file and record must equal the one-thread run's."""
    log = logs[gop]
    for sweep_hz in (10, 30):
        profile = SamplingProfile(2, sweep_hz, False, None, 90, ("CAM_FRONT",))
        runs = {}
        for threads in (1, 2, 3):
            out = tmp_path / f"{sweep_hz}-{threads}"
            record, stats = sample_scene_timed(log, 0, T0 + 400_000, T0 + 5_600_000, profile, out, "t/p", threads)
            runs[threads] = (record, {f.path: (out / f.path).read_bytes() for f in record.frames}, stats)
        one = runs[1]
        for threads in (2, 3):
            record, files, stats = runs[threads]
            assert stats.seeks >= threads, (sweep_hz, threads)  # each piece started its own decoder
            assert record == one[0] and files == one[1], (sweep_hz, threads)


def test_jpegs_are_the_bytes_of_a_full_decode_encoded_alike(logs, tmp_path):
    """The previous implementation decoded every reference frame; encoding its frames with the
    same encoder gives the bytes sample_scene writes now (tolerance: none)."""
    log = logs["closed"]
    profile = SamplingProfile(2, 10, True, (240, 135), 90, ("CAM_FRONT",))
    record, stats = sample_scene_timed(log, 0, T0 + 1_000_000, T0 + 5_900_000, profile, tmp_path, "t/1", 1)
    assert stats.not_decoded > 0
    times = log.frame_timestamps("CAM_FRONT")
    encoder = FrameEncoder(log.calibration["CAM_FRONT"], profile.image_size, True, 90)
    wanted = [int(np.searchsorted(times, f.timestamp_us)) for f in record.frames]
    reference = decode_frames(log.video_path("CAM_FRONT"), wanted, FRAMES, skip_unwanted=False, threads=1)
    for frame, (index, decoded) in zip(record.frames, reference):
        assert times[index] == frame.timestamp_us
        assert (tmp_path / frame.path).read_bytes() == encoder.encode(decoded)


@pytest.mark.parametrize("size", [(239, 135), (240, 135), (213, 120)])
def test_odd_sized_jpegs_are_the_same_bytes_every_time(logs, size):
    """libjpeg-turbo reads an odd-sized luma plane one row / column past its end; the encoder
    pads it, so the bytes do not depend on what memory lies beyond the plane."""
    (_, frame), = decode_frames(logs["closed"].video_path("CAM_FRONT"), [40], FRAMES, threads=1)
    encoder = FrameEncoder(logs["closed"].calibration["CAM_FRONT"], size, False, 90)
    first = encoder.encode(frame)
    for fill in range(0, 256, 32):
        clutter = [np.full((size[1] + 2, size[0] + 2), fill, np.uint8) for _ in range(4)]  # reuse freed memory
        assert encoder.encode(frame) == first, fill
        del clutter


def test_limited_to_full_range_is_the_previous_lookup_table_for_every_value(logs):
    """The range conversion moved from cv2.LUT to cv2.addWeighted (float32, SIMD): every input value
    of every plane size (vector body and scalar tail) maps as the tables did, so native JPEGs are
    the bytes the LUT gave."""
    from jadd_dagster.sampling.encode import _CHROMA_LINE, _CHROMA_TO_FULL, _LUMA_LINE, _LUMA_TO_FULL

    values = np.tile(np.arange(256, dtype=np.uint8), 4 * 1600 * 3).reshape(-1, 1600)  # 1600 wide, as video
    for (scale, offset), table in ((_LUMA_LINE, _LUMA_TO_FULL), (_CHROMA_LINE, _CHROMA_TO_FULL)):
        for plane in (values, values[:, :1597], values[:7, 3:40], values[:1, :1]):
            assert np.array_equal(cv2.addWeighted(plane, scale, plane, 0.0, offset), cv2.LUT(plane, table))
    (_, frame), = decode_frames(logs["closed"].video_path("CAM_FRONT"), [40], FRAMES, threads=1)
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes[:3]]
    tables = (_LUMA_TO_FULL, _CHROMA_TO_FULL, _CHROMA_TO_FULL)
    previous = simplejpeg.encode_jpeg_yuv_planes(*[cv2.LUT(p, t) for p, t in zip(planes, tables)], quality=90)
    assert FrameEncoder(logs["closed"].calibration["CAM_FRONT"], None, False, 90).encode(frame) == previous


@pytest.mark.parametrize("size", [None, (800, 450), (640, 360), (401, 227)])
def test_cb_and_cr_warped_in_one_pass_are_each_plane_warped_alone(size):
    """The chroma planes go through one 4-channel remap (and the prefilter of a shrink) together:
    each comes out as the single-plane warp made it, so the JPEGs are the same bytes."""
    calib = CameraCalibration("CAM_FRONT", 1600, 900, pinhole_intrinsic(1600, 900, 100.0),
                              distortion=(-0.28, 0.08, 0.0005, -0.0005, 0.0))
    chroma = FrameEncoder(calib, size, True, 90).chroma
    rng = np.random.default_rng(7)
    cb = cv2.GaussianBlur(rng.integers(0, 256, (450, 800), dtype=np.uint8), (5, 5), 2)
    cr = rng.integers(0, 256, (450, 800), dtype=np.uint8)
    warped_cb, warped_cr = chroma.pair(cb, cr)
    assert np.array_equal(warped_cb, chroma(cb)) and np.array_equal(warped_cr, chroma(cr))
    assert warped_cb.flags.c_contiguous and warped_cr.flags.c_contiguous


def test_an_encoder_is_made_once_per_camera_and_profile(monkeypatch, logs):
    """Every piece and scene of a camera shares one encoder (its remap tables); threads asking at
    once wait for the one making it, and a failed making is not kept."""
    from concurrent.futures import ThreadPoolExecutor
    import threading
    import time

    from jadd_dagster.sampling import encode

    made, fail_next = [], [True]
    lock = threading.Lock()

    class Counted(encode.FrameEncoder):
        def __init__(self, *args):
            with lock:
                made.append(args)
                if fail_next[0]:
                    fail_next[0] = False
                    raise ValueError("first making fails")
            time.sleep(0.05)  # long enough for the other threads to ask meanwhile
            super().__init__(*args)

    monkeypatch.setattr(encode, "FrameEncoder", Counted)
    monkeypatch.setattr(encode, "_encoders", type(encode._encoders)())
    calib = logs["closed"].calibration["CAM_FRONT"]
    with pytest.raises(ValueError, match="first making fails"):
        encode.frame_encoder(calib, (240, 135), True, 90)
    with ThreadPoolExecutor(4) as pool:
        encoders = list(pool.map(lambda _: encode.frame_encoder(calib, (240, 135), True, 90), range(8)))
    assert len(made) == 2 and all(e is encoders[0] for e in encoders)
    assert encode.frame_encoder(calib, [240, 135], True, 90) is encoders[0]
    assert encode.frame_encoder(calib, (240, 135), True, 80) is not encoders[0]
    for quality in range(10, 10 + encode.ENCODER_CACHE_SIZE):
        encode.frame_encoder(calib, None, False, quality)
    assert len(encode._encoders) == encode.ENCODER_CACHE_SIZE
    assert encode.frame_encoder(calib, (240, 135), True, 90) is not encoders[0]  # the oldest went first


def test_threads_follow_the_cpus_the_process_may_use(monkeypatch):
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))
    one_cpu = sorted(os.sched_getaffinity(0))[:1]
    code = "import os; from jadd_dagster.sampling import sampling_threads; print(sampling_threads())"
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    pinned = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, one_cpu),
    )
    assert pinned.stdout.strip() == "1"
    monkeypatch.setenv(THREADS_ENV, "3")
    assert sampling_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=THREADS_ENV):
        sampling_threads()


def test_the_sampling_bench_runs(capsys, logs):
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed: the bench's baselines need it (apt-get install -y ffmpeg)")
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_sampling

    rows = bench_sampling.main(["--smoke", "--repeat", "2"])
    printed = capsys.readouterr().out
    assert "Medians of 2 rounds" in printed and len(rows[0]["walls"]) == 2
    ours = [r for r in rows if r["path"].startswith("ours")]
    assert {r["path"] for r in ours} == {"ours, undistorted"}
    assert all(r["frames"] > 0 and r["cpu"] > 0 for r in rows)
    assert any(r["path"] == "ffmpeg: naive per-scene CLI" for r in rows)
    assert any(r["path"] == "ffmpeg: decode the whole file" for r in rows)
    if len(os.sched_getaffinity(0)) >= 2:
        assert "same bytes" in printed and "DIFFERENT" not in printed
    bench_sampling.encode_profile(logs["closed"].video_path("CAM_FRONT"), frames=3)
    steps = capsys.readouterr().out
    assert all(f"| {variant} |" in steps for variant in bench_sampling.VARIANTS)


def test_a_videos_codec_is_read_once_and_again_when_the_file_changes(tmp_path, monkeypatch):
    """video_codec is asked for every scene of a camera: the header is read once per version of
    the file, and a file replaced at the same path is read again."""
    from jadd_dagster.sampling import decode

    def write(path, codec, pix_fmt):
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=30)
            stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
            for _ in range(2):
                frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for packet in stream.encode(frame.reformat(format=pix_fmt)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    video = tmp_path / "CAM_FRONT.mp4"
    write(video, "libx264", "yuv420p")
    opened = []
    real_open = decode.av.open
    def counted(path, *args, **kwargs):
        if not args:  # opened for reading (write() opens with "w")
            opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode.av, "open", counted)
    assert [decode.video_codec(video) for _ in range(3)] == ["h264"] * 3 and len(opened) == 1
    write(video, "mjpeg", "yuvj420p")
    os.utime(video, ns=(1, 1))  # a new version even where the clock is coarse
    assert decode.video_codec(video) == "mjpeg" and len(opened) == 2
