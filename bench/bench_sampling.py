"""Benchmark: sampling camera video at 2, 10 and 30 Hz, on 1 and 2 cores, beside two ffmpeg baselines.

Footage: one 1600x900, 30 fps H.264 camera video that decodes like real driving video, made here
with ffmpeg (`testsrc2` with temporal noise `noise=alls=8:allf=t`, libx264 preset medium, a
keyframe every 30 frames, x264's default B-frames), or any video given with --video. It is cut into
scenes of --scene-seconds (20 s) and each scene is sampled by `sample_scene_timed`, the scenes side
by side on the child's threads as the worker runs a chunk (compute/schedule.py), for every
rate x {native, undistorted, undistorted at half size} x {1 core, 2 cores}:
keyframes at 2 Hz and sweeps at the rate (all of them keyframes at 2 Hz), JPEG quality 90.

Every run is a fresh child process pinned to its cores with sched_setaffinity (the sampler sizes
its threads from the affinity mask, as on a Batch child of 1 or 2 vCPUs). CPU seconds are the
child's own rusage (all its threads) around the sampling, without its start-up; wall seconds are
taken around the same code. On a machine that others share, CPU seconds are the figure to compare
for one core; wall time is what the 2-core speedup is read from (1-core wall / 2-core wall: under a
steady load both runs get a fair share per thread).

Baselines, in the same run and on the same cores: ffmpeg decoding the whole file
(`ffmpeg -i in.mp4 -t SPAN -f null -`, SPAN the scenes' footage: the whole file unless --scenes
leaves some out), and the naive per-scene ffmpeg CLI extracting JPEGs
(`ffmpeg -ss START -i in.mp4 -t 20 -vf fps=RATE -q:v 2 out_%05d.jpg`, one call per scene). On 2
cores, one more row runs two whole-file decodes at once, each a single-threaded process pinned to a
core of its own: two jobs that share nothing, so its "2-core ×" is what this machine's two cores
give decoding work at best (shared caches and memory bandwidth, or two vCPUs on one physical core).

Ratios: "× naive" is the naive CLI's CPU s over ours (higher is better); "/ decode" is our CPU s
over the whole-file decode's (lower is better); "2-core ×" is the 2-core throughput (frames a
wall second) over the 1-core throughput of the same configuration. The 2-core runs must write the
same bytes as the 1-core runs: the table says "same bytes" (a SHA-256 over every file) or the bench
fails.

--repeat N runs the whole sequence N times (rounds). A VM's runs of identical work differ by 10-15 %
as its host's load drifts, so a ratio of two runs made far apart says as much about the drift as
about the code: each ratio is formed within a round (our run and its baselines minutes apart) and
the table gives the median of the rounds' ratios with their range; seconds are medians.

    python bench/bench_sampling.py [--video FILE] [--seconds 60] [--scene-seconds 20] [--rates 2 10 30] [--repeat N]
    python bench/bench_sampling.py --smoke   # tiny footage, one rate (tests/test_sampling_speed.py runs it)
    python bench/bench_sampling.py --video FILE --encode-profile   # FrameEncoder's steps, CPU ms a frame
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jadd_dagster.camera import CameraCalibration, pinhole_intrinsic  # noqa: E402
from jadd_dagster.logs import format as fmt  # noqa: E402

CHANNEL = "CAM_FRONT"
START_US = 1_700_000_000_000_000
VARIANTS = ("native", "undistorted", "undistorted, half size")
STEPS = ("decode_cpu_s", "encode_cpu_s", "write_cpu_s")
PARALLEL_DECODE = "ffmpeg: two whole-file decodes at once, one a core"


def make_footage(path: Path, width: int, height: int, seconds: float, preset: str = "medium") -> None:
    """A 30 fps H.264 video that decodes like driving footage: moving test pattern + temporal noise."""
    command = [
        _ffmpeg(), "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30:duration={seconds}",
        "-vf", "noise=alls=8:allf=t", "-c:v", "libx264", "-preset", preset,
        "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(path),
    ]
    subprocess.run(command, check=True)


def make_log(folder: Path, video: Path) -> tuple[int, int, int]:
    """A one-camera drive log around video (linked, not copied): (frames, width, height)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
    (folder / "cameras").mkdir(parents=True)
    os.symlink(video.resolve(), folder / fmt.video_file(CHANNEL))
    duration = int(frames * 1_000_000 / 30)
    calib = CameraCalibration(
        CHANNEL, width, height, pinhole_intrinsic(width, height, 100.0), distortion=(-0.28, 0.08, 0.0005, -0.0005, 0.0)
    )
    manifest = fmt.LogManifest("bench", "car", "town", START_US, duration, (CHANNEL,))
    (folder / fmt.MANIFEST).write_text(json.dumps(manifest.to_json()))
    (folder / fmt.CALIBRATION).write_text(json.dumps({CHANNEL: calib.to_json()}))
    stamps = START_US + (2 * np.arange(frames, dtype=np.int64) * 1_000_000 + 30) // 60
    pd.DataFrame({"timestamp_us": stamps}).to_parquet(folder / fmt.timestamps_file(CHANNEL))
    t = START_US + np.arange(0, duration + 100_001, 10_000, dtype=np.int64)
    can = pd.DataFrame({c: np.zeros(t.size) for c in fmt.CAN_COLUMNS[1:]})
    can = can.astype({"gear": "int8", "turn_signal": "int8"})
    can.insert(0, "timestamp_us", t)
    can.to_parquet(folder / fmt.CAN)
    t = t[::2]
    pose = pd.DataFrame({"timestamp_us": t, "x": (t - START_US) / 1e5, "y": 1.0, "z": 0.0})
    pose = pose.assign(qw=1.0, qx=0.0, qy=0.0, qz=0.0)
    pose.to_parquet(folder / fmt.POSE)
    return frames, width, height


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if not found:
        raise SystemExit("ffmpeg not found: the baselines need it (apt-get install -y ffmpeg)")
    return found


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(job: dict) -> dict:
    """One run, in this (pinned) process: sample every scene, or run the ffmpeg commands."""
    if job["kind"] == "ffmpeg":
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        if job.get("one_per_core"):  # all at once, each pinned to a core of its own
            cores = sorted(os.sched_getaffinity(0))
            running = [subprocess.Popen(command, preexec_fn=lambda core=core: os.sched_setaffinity(0, [core]))
                       for command, core in zip(job["commands"], cores)]
            if any(p.wait() for p in running):
                raise SystemExit(f"ffmpeg failed: {job['commands'][0]}")
        for command in [] if job.get("one_per_core") else job["commands"]:
            Path(command[-1]).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(command, check=True)
        wall = time.perf_counter() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        frames = sum(1 for p in Path(job["out"]).rglob("*.jpg")) if job.get("out") else job["frames"]
        return {"wall": wall, "cpu": cpu, "frames": frames}

    import cv2

    from jadd_dagster.compute.schedule import side_by_side
    from jadd_dagster.logs.reader import read_log
    from jadd_dagster.sampling import SamplingProfile, sample_scene_timed, sampling_threads

    cv2.setNumThreads(1)  # as the worker does (compute/worker.py): its threads are the sampler's own

    log = read_log(Path(job["log"]))
    profile = SamplingProfile.from_json(job["profile"])
    out = Path(job["out"])
    totals: dict[str, float] = {}

    def sample(scene: tuple[int, tuple[int, int]], threads: int):
        i, (start, end) = scene
        return sample_scene_timed(log, i, start, end, profile, out / f"{i:04d}", f"bench/{i:04d}", threads=threads)

    cpu, wall = _cpu(), time.perf_counter()
    # As the worker does (compute/worker.py): scenes side by side on its threads.
    for _, outcome in side_by_side(list(enumerate(job["scenes"])), sample, sampling_threads()):
        _, stats = outcome.result()
        for name, value in stats.to_json().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = totals.get(name, 0) + value
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    digest = hashlib.sha256()
    for path in sorted(out.rglob("*.jpg")):
        digest.update(str(path.relative_to(out)).encode())
        digest.update(path.read_bytes())
    return {"wall": wall, "cpu": cpu, "frames": int(totals["frames"]), "threads": sampling_threads(),
            "sha256": digest.hexdigest(), "steps": totals}


def run_pinned(job: dict, cores: list[int]) -> dict:
    """child(job) in a fresh Python process pinned to cores."""
    command = [sys.executable, __file__, "--child", json.dumps(job)]
    env = {k: v for k, v in os.environ.items() if k != "JADD_SAMPLING_THREADS"}
    done = subprocess.run(
        command, check=True, capture_output=True, text=True, env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def profile_json(rate: int, variant: str, width: int, height: int) -> dict:
    size = [width // 2, height // 2] if variant == "undistorted, half size" else None
    return {"keyframe_hz": 2, "sweep_hz": rate, "undistort": variant != "native", "image_size": size,
            "jpeg_quality": 90, "channels": [CHANNEL]}


def bench(args) -> list[list[dict]]:
    """Every run of the table, round by round (--repeat rounds of the whole sequence); each row a
    dict (see print_table)."""
    work = Path(tempfile.mkdtemp(prefix="bench-sampling-"))
    try:
        video = Path(args.video) if args.video else work / "footage.mp4"
        if not args.video:
            t = time.perf_counter()
            make_footage(video, args.width, args.height, args.seconds, args.preset)
            print(f"footage made in {time.perf_counter() - t:.0f} s", flush=True)
        frames, width, height = make_log(work / "log", video)
        scene_us = int(args.scene_seconds * 1_000_000)
        count = min(args.scenes or 10**9, int(frames / 30 * 1_000_000) // scene_us)
        if count < 1:
            raise SystemExit(f"{video}: {frames} frames is shorter than one {args.scene_seconds} s scene")
        scenes = [(START_US + i * scene_us, START_US + (i + 1) * scene_us) for i in range(count)]
        available = sorted(os.sched_getaffinity(0))
        core_sets = {1: available[:1], 2: available[:2]} if len(available) >= 2 else {1: available[:1]}
        print(f"{video.name}: {width}x{height}, {frames} frames at 30 fps; {count} scenes of {args.scene_seconds} s; "
              f"cores {available}; load average {os.getloadavg()[0]:.1f}", flush=True)
        ffmpeg = _ffmpeg()
        span = f"{count * args.scene_seconds}"  # the whole file when the scenes cover it (the default)
        decode = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(video), "-t", span, "-map", "0:v",
                  "-f", "null", "-"]
        rounds = []
        for number in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"round {number} of {args.repeat}; load average {os.getloadavg()[0]:.1f}", flush=True)
            rows = []
            # Each configuration runs on 1 core and then at once on 2, so that both see the same load.
            for cores, pinned in core_sets.items():
                job = {"kind": "ffmpeg", "commands": [decode], "frames": int(count * scene_us * 30 / 1e6)}
                result = run_pinned(job, pinned)
                rows.append({"rate": "all", "path": "ffmpeg: decode the whole file", "cores": cores, **result})
                print(rows[-1], flush=True)
            if 2 in core_sets:  # how well this machine runs two decoders at once: the ceiling for 2 cores
                single = decode[:4] + ["-threads", "1"] + decode[4:]  # -threads before -i: the decoder's
                result = run_pinned({"kind": "ffmpeg", "commands": [single, single], "one_per_core": True,
                                     "frames": 2 * int(count * scene_us * 30 / 1e6)}, core_sets[2])
                rows.append({"rate": "all", "path": PARALLEL_DECODE, "cores": 2, **result})
                print(rows[-1], flush=True)
            for rate in args.rates:
                for cores, pinned in core_sets.items():
                    out = work / f"cli-{rate}-{cores}"
                    commands = [
                        [ffmpeg, "-nostdin", "-loglevel", "error", "-ss", f"{(s - START_US) / 1e6:.6f}",
                         "-i", str(video), "-t", f"{args.scene_seconds}", "-vf", f"fps={rate}", "-q:v", "2",
                         str(out / f"{i:04d}" / "%05d.jpg")]
                        for i, (s, _) in enumerate(scenes)
                    ]
                    result = run_pinned({"kind": "ffmpeg", "commands": commands, "out": str(out)}, pinned)
                    rows.append({"rate": rate, "path": "ffmpeg: naive per-scene CLI", "cores": cores, **result})
                    print(rows[-1], flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                for variant in args.variants:
                    for cores, pinned in core_sets.items():
                        out = work / f"ours-{rate}-{variant}-{cores}".replace(" ", "").replace(",", "")
                        job = {"kind": "sample", "log": str(work / "log"), "scenes": scenes, "out": str(out),
                               "profile": profile_json(rate, variant, width, height)}
                        result = run_pinned(job, pinned)
                        rows.append({"rate": rate, "path": f"ours, {variant}", "cores": cores, **result})
                        print({k: v for k, v in rows[-1].items() if k != "steps"}, flush=True)
                        shutil.rmtree(out, ignore_errors=True)
            rows.sort(key=lambda r: (r["cores"], r["rate"] != "all"))  # stable: rates and paths in run order
            rounds.append(rows)
        return rounds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(rounds: list[list[dict]]) -> None:
    """The table: each run's medians over the rounds; each ratio formed within a round (ours
    against the baselines run minutes apart in the same round, not hours apart) and given as the
    median of the rounds' ratios, with their range when there are several rounds."""
    rows = summarised(rounds)

    def find(rows, rate, path, cores):
        return next((r for r in rows if r["rate"] == rate and r["path"] == path and r["cores"] == cores), None)

    def ratio(r, formed) -> str:
        values = []
        for round_rows in rounds:
            mine = find(round_rows, r["rate"], r["path"], r["cores"])
            value = formed(round_rows, mine) if mine else None
            if value is not None:
                values.append(value)
        if not values:
            return ""
        text = f"{np.median(values):.2f}"
        return text + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")

    def times_naive(rows, r):
        naive = find(rows, r["rate"], "ffmpeg: naive per-scene CLI", r["cores"])
        return naive["cpu"] / r["cpu"] if naive and r["path"].startswith("ours") else None

    def over_decode(rows, r):
        decode = find(rows, "all", "ffmpeg: decode the whole file", r["cores"])
        return r["cpu"] / decode["cpu"] if decode and r["rate"] != "all" else None

    def two_cores(rows, r):
        one = find(rows, r["rate"], r["path"] if r["path"] != PARALLEL_DECODE else "ffmpeg: decode the whole file", 1)
        return (r["frames"] / r["wall"]) / (one["frames"] / one["wall"]) if one and r["cores"] == 2 else None

    if len(rounds) > 1:
        print(f"\nMedians of {len(rounds)} rounds; ratios: the median of the rounds' own ratios (lowest–highest).")
    print("\n| rate | path | cores | frames | CPU s | CPU ms/frame | wall s | frames/s (wall) | "
          "× naive CLI | / whole decode | 2-core × | 2-core output |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        one = find(rows, r["rate"], r["path"], 1)
        cells = [
            f"{r['rate']} Hz" if r["rate"] != "all" else "-", r["path"], str(r["cores"]), str(r["frames"]),
            f"{r['cpu']:.2f}", f"{1000 * r['cpu'] / max(r['frames'], 1):.1f}", f"{r['wall']:.2f}",
            f"{r['frames'] / r['wall']:.1f}",
            ratio(r, times_naive), ratio(r, over_decode), ratio(r, two_cores),
            ("same bytes" if one["sha256"] == r["sha256"] else "DIFFERENT")
            if r["path"].startswith("ours") and r["cores"] == 2 and one else "",
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nOur CPU seconds by step (1 core; CPU time of the thread doing each step), ms per frame:")
    print("| rate | path | decode | colour, remap, JPEG | write | rest (selection, CAN/pose, records) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        if r["path"].startswith("ours") and r["cores"] == 1:
            n = max(r["frames"], 1)
            steps = [r["steps"][s] for s in STEPS]
            print(f"| {r['rate']} Hz | {r['path']} | " + " | ".join(f"{1000 * v / n:.1f}" for v in steps)
                  + f" | {1000 * (r['cpu'] - sum(steps)) / n:.1f} |")
    different = [r for r in rows if r["path"].startswith("ours") and r["cores"] == 2
                 and (one := find(rows, r["rate"], r["path"], 1)) and one["sha256"] != r["sha256"]]
    if different:
        raise SystemExit(f"2-core output differs from 1-core output: {[(r['rate'], r['path']) for r in different]}")


def summarised(rounds: list[list[dict]]) -> list[dict]:
    """One row per run of the rounds: CPU and wall seconds and each step the median over the
    rounds, every wall time in "walls". Every round of one of our runs must write the same bytes."""
    rows = []
    for first in rounds[0]:
        key = (first["rate"], first["path"], first["cores"])
        same = [next(r for r in round_rows if (r["rate"], r["path"], r["cores"]) == key) for round_rows in rounds]
        if len({r.get("sha256") for r in same}) > 1:
            raise SystemExit(f"the same run wrote different bytes in different rounds: {first['rate']} {first['path']}")
        row = {**first, "cpu": float(np.median([r["cpu"] for r in same])),
               "wall": float(np.median([r["wall"] for r in same])), "walls": [round(r["wall"], 2) for r in same]}
        if "steps" in first:
            row["steps"] = {name: float(np.median([r["steps"][name] for r in same])) for name in first["steps"]}
        rows.append(row)
    return rows


def encode_profile(video: Path, frames: int = 30) -> None:
    """CPU ms per frame of each step of FrameEncoder (one core, this thread), on frames of video."""
    import cv2
    import simplejpeg

    from jadd_dagster.sampling import FrameEncoder, decode_frames
    from jadd_dagster.sampling.encode import _CHROMA_LINE, _LUMA_LINE

    with av.open(str(video)) as container:
        count = container.streams.video[0].frames
    decoded = [f for _, f in decode_frames(video, list(range(frames)), count, threads=1)]
    width, height = decoded[0].width, decoded[0].height
    calib = CameraCalibration(
        CHANNEL, width, height, pinhole_intrinsic(width, height, 100.0), distortion=(-0.28, 0.08, 0.0005, -0.0005, 0.0)
    )
    print(f"\nFrameEncoder by step, CPU ms per {width}x{height} frame (1 core, {frames} frames):")
    print("| variant | luma remap | chroma remaps | range conversion | JPEG | whole encode() |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        size = (width // 2, height // 2) if variant == "undistorted, half size" else None
        encoder = FrameEncoder(calib, size, variant != "native", 90)
        times = np.zeros(5)
        for frame in decoded:
            planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes[:3]]
            t = [time.thread_time()]
            if encoder.luma is not None:
                planes[0] = encoder.luma(planes[0])
            t.append(time.thread_time())
            if encoder.chroma is not None:
                planes[1:] = [encoder.chroma(planes[1]), encoder.chroma(planes[2])]
            t.append(time.thread_time())
            lines = (_LUMA_LINE, _CHROMA_LINE, _CHROMA_LINE)
            planes = [cv2.addWeighted(p, a, p, 0.0, b) for p, (a, b) in zip(planes, lines)]
            t.append(time.thread_time())
            simplejpeg.encode_jpeg_yuv_planes(*planes, quality=90)
            t.append(time.thread_time())
            encoder.encode(frame)
            t.append(time.thread_time())
            times += np.diff(t)
        cells = " | ".join(f"{1000 * v / frames:.1f}" for v in times)
        print(f"| {variant} | {cells} |")
    remap_limits(decoded, FrameEncoder(calib, None, True, 90))


def remap_limits(decoded: list, encoder) -> None:
    """What bounds the undistortion's cost: the remap of each plane (bilinear, fixed-point tables)
    against the cheapest remap there is (nearest neighbour: one gather a sample, no arithmetic) and
    a plain copy of the plane (memory only), in ns per output sample and ms per frame."""
    import cv2

    steps = {
        "bilinear remap (ours)": lambda plane, maps: cv2.remap(plane, maps[0], maps[1], cv2.INTER_LINEAR,
                                                                borderMode=cv2.BORDER_REPLICATE),
        "nearest-neighbour remap": lambda plane, maps: cv2.remap(plane, maps[0], None, cv2.INTER_NEAREST,
                                                                  borderMode=cv2.BORDER_REPLICATE),
        "copy": lambda plane, maps: plane.copy(),
    }
    warps = (encoder.luma, encoder.chroma, encoder.chroma)
    samples = sum(w.maps[0].shape[0] * w.maps[0].shape[1] for w in warps)
    print(f"\nThe undistortion's floor, 1 core, {len(decoded)} frames, {samples:,} output samples a frame (Y, Cb, Cr):")
    print("| step | ns a sample | ms a frame |")
    print("|---|---:|---:|")
    for name, step in steps.items():
        clock = time.thread_time()
        for frame in decoded:
            for plane, warp in zip(frame.planes[:3], warps):
                pixels = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
                step(pixels, warp.maps)
        seconds = (time.thread_time() - clock) / len(decoded)
        print(f"| {name} | {1e9 * seconds / samples:.1f} | {1000 * seconds:.1f} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", help="a 30 fps video to use instead of generating one")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--seconds", type=float, default=60, help="length of the generated footage")
    parser.add_argument("--preset", default="medium", help="x264 preset of the generated footage")
    parser.add_argument("--scene-seconds", type=float, default=20)
    parser.add_argument("--scenes", type=int, default=0, help="at most this many scenes (0: as many as fit)")
    parser.add_argument("--rates", type=int, nargs="+", default=[2, 10, 30])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the whole sequence: medians, and each ratio the median of the rounds' ratios")
    parser.add_argument("--smoke", action="store_true", help="tiny footage, one rate: checks the bench runs")
    parser.add_argument("--encode-profile", action="store_true",
                        help="only time FrameEncoder's steps on the first frames of --video, one core")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.encode_profile:
        if not args.video:
            raise SystemExit("--encode-profile needs --video")
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
        import cv2

        cv2.setNumThreads(1)
        encode_profile(Path(args.video))
        return []
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    args.repeat = max(1, args.repeat)
    if args.smoke:
        args.width, args.height, args.seconds, args.scene_seconds, args.preset = 320, 180, 2, 1, "ultrafast"
        args.rates, args.variants = [10], ["undistorted"]
    rounds = bench(args)
    print_table(rounds)
    return summarised(rounds)


if __name__ == "__main__":
    main()
