"""MCAP and rosbag2 ingest throughput (MB/s of recording) against plain reading of the same file, and its memory.

What it measures: for each flavour (ROS 2 CDR, Foxglove protobuf) and drive length, one MCAP file
is written with the official writers by tests/mcap_drives.py, scaled up: two cameras at 10 Hz of
WIDTHxHEIGHT (one JPEG, stored as recorded by the ingest; one H.264, remuxed), a lidar with
POINTS points a sweep at 10 Hz, pose at 50 Hz and CAN at 100 Hz (ROS 2: raw frames decoded with
the DBC). Then four fresh Python child processes each run one pass over the file:

  plain    the baseline: mcap's reader iterating every message (make_reader().iter_messages())
  decoded  every message decoded too (iter_decoded_messages with the ROS 2 / protobuf decoders)
  ingest   jadd_dagster.ingest.ingest_mcap into a log folder (validated), as `jadd ingest` does
  h264     the same with the topic map's jpeg_crf: 17: the JPEG camera encoded once to H.264, what
           the ingest did before JPEG cameras were stored as recorded

The `rosbag2` flavour is the ROS 2 drive written as a rosbag2 bag in SQLite storage (.db3) with
rosbags' Writer (tests/rosbag_drives.py); its plain and decoded passes use rosbags' Reader and
typestore (the library the ingest reads bags with), its ingest is ingest_drive(format="rosbag2").

and report their wall and CPU seconds, MB/s (file size / wall), peak RSS (the child's VmHWM,
imports included) and the size of the log written. A drive twice as long shows whether memory
stays flat. Wall time on this
shared 2-core machine also counts other people's work: CPU seconds are the steadier number.

Usage: python bench/bench_ingest.py [--seconds 30 120] [--width 640 --height 360] [--points 30000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
mode, path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if mode in ("ingest", "h264"):
    import yaml
    from jadd_dagster.ingest import ingest_drive, parse_topic_map
    import mcap_drives
elif sys.argv[4] == "rosbag2":
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
else:
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory as Protobuf
    from mcap_ros2.decoder import DecoderFactory as Ros2
wall, cpu = time.perf_counter(), time.process_time()
messages = log_bytes = 0
if mode in ("ingest", "h264"):
    flavour = sys.argv[4]
    topic_map = "foxglove" if flavour == "foxglove" else "ros2"
    data = yaml.safe_load((mcap_drives.EXAMPLES / "topic-maps" / f"{{topic_map}}.yaml").read_text())
    if mode == "h264":
        for camera in data["cameras"].values():
            camera["jpeg_crf"] = 17
    result = ingest_drive([path], out, parse_topic_map(data),
                          dbc=None if flavour == "foxglove" else mcap_drives.DRIVE_DBC, log_id="bench",
                          format="rosbag2" if flavour == "rosbag2" else "mcap")
    log_bytes = sum(f.stat().st_size for f in result.path.rglob("*") if f.is_file())
elif sys.argv[4] == "rosbag2":
    with Reader(path) as reader:
        types = get_typestore(Stores.EMPTY)
        for connection in reader.connections:
            types.register(get_types_from_msg(connection.msgdef.data, connection.msgtype))
        for connection, _, data in reader.messages():
            if mode == "decoded":
                types.deserialize_cdr(data, connection.msgtype)
            messages += 1
else:
    with open(path, "rb") as stream:
        reader = make_reader(stream, decoder_factories=[Ros2(), Protobuf()])
        items = reader.iter_messages() if mode == "plain" else reader.iter_decoded_messages()
        for _ in items:
            messages += 1
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": hwm / 1024, "messages": messages, "log_mb": log_bytes / 1e6}}))
"""


def write_bench_drive(folder: Path, flavour: str, seconds: float, size: tuple[int, int], points: int) -> Path:
    """The tests' drive scaled to size and points (the module's constants are set for this process)."""
    import numpy as np

    import mcap_drives as drives

    drives.WIDTH, drives.HEIGHT = size
    drives.INTRINSIC = ((size[0] * 0.8, 0.0, size[0] / 2), (0.0, size[0] * 0.8, size[1] / 2), (0.0, 0.0, 1.0))

    def cloud(index: int) -> np.ndarray:
        rng = np.random.default_rng(index)
        out = rng.uniform(-50, 50, (points, 5)).astype(np.float32)
        out[:, 4] = np.arange(points) % 32
        return out

    drives.cloud = cloud
    if flavour == "rosbag2":
        import rosbag_drives

        return rosbag_drives.write_drive(folder, [(0, seconds)]).files[0]
    return drives.write_drive(folder, flavour, [(0, seconds)]).files[0]


def run_child(mode: str, path: Path, out: Path, flavour: str) -> dict:
    script = CHILD.format(tests=str(ROOT / "tests"))
    done = subprocess.run([sys.executable, "-c", script, mode, str(path), str(out), flavour],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--points", type=int, default=30_000)
    parser.add_argument("--flavours", nargs="+", default=["ros2", "foxglove", "rosbag2"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for flavour in args.flavours:
            for seconds in args.seconds:
                folder = Path(tmp) / f"{flavour}-{seconds:g}"
                path = write_bench_drive(folder / "mcap", flavour, seconds, (args.width, args.height), args.points)
                mb = sum(p.stat().st_size for p in ([path] if path.is_file() else path.iterdir())) / 1e6
                results = {mode: run_child(mode, path, folder / f"logs-{mode}", flavour)
                           for mode in ("plain", "decoded", "ingest", "h264")}
                rows.append((flavour, seconds, mb, results))
                print(f"done {flavour} {seconds:g} s ({mb:.1f} MB)", file=sys.stderr, flush=True)
    print(f"\n{args.width}x{args.height} cameras (one JPEG, one H.264) at 10 Hz, lidar {args.points} points at 10 Hz, "
          "pose 50 Hz, CAN 100 Hz; one MCAP file (rosbag2: one bag, one .db3) per row")
    print("| flavour | drive s | file MB | messages | plain read s (MB/s) | decode all s (MB/s) | ingest s (MB/s) "
          "| ingest CPU s | ingest / plain (wall) | peak RSS plain / ingest MiB | log MB "
          "| JPEG to H.264 (jpeg_crf 17): ingest s, CPU s, log MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for flavour, seconds, mb, r in rows:
        p, d, i, h = r["plain"], r["decoded"], r["ingest"], r["h264"]
        print(f"| {flavour} | {seconds:g} | {mb:.1f} | {p['messages']} | {p['wall_s']:.2f} ({mb / p['wall_s']:.0f}) "
              f"| {d['wall_s']:.2f} ({mb / d['wall_s']:.0f}) | {i['wall_s']:.2f} ({mb / i['wall_s']:.1f}) "
              f"| {i['cpu_s']:.2f} | {i['wall_s'] / p['wall_s']:.1f}x | {p['peak_rss_mib']:.0f} / {i['peak_rss_mib']:.0f} "
              f"| {i['log_mb']:.1f} | {h['wall_s']:.2f}, {h['cpu_s']:.2f}, {h['log_mb']:.1f} |")


if __name__ == "__main__":
    main()
