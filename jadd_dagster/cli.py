"""`jadd`: make synthetic logs, ingest recorded ones, build datasets headless, list the registry, run a worker.

Only the two demo commands reach the simulator (jadd_dagster.sim), each in its own function
(cmd_make_logs, make_demo_logs_in) and only when run: tests/test_boundary.py allows those two and
no other import of it in the production package."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

DEMO_SPEC = Path(__file__).resolve().parents[1] / "assets" / "datasets" / "demo.yaml"


def cmd_make_logs(args) -> int:
    from jadd_dagster.sim import make_logs

    started = time.monotonic()
    paths = make_logs(
        Path(args.out), n_logs=args.logs, minutes=args.minutes, seed=args.seed,
        channels=tuple(args.channels.split(",")), image_size=(args.width, args.height),
        lidar=args.lidar, objects=not args.no_objects,
    )
    print(f"wrote {len(paths)} logs to {args.out} in {time.monotonic() - started:.1f} s")
    return 0


def _load_spec(path: Path):
    from jadd_dagster.spec import SpecError, load_spec

    try:
        return load_spec(path), yaml.safe_load(path.read_text())
    except SpecError as error:
        print(f"error: the dataset spec is invalid:\n{error}", file=sys.stderr)
        return None, None


def _model_is_offered(spec) -> bool:
    """Whether the spec's auto-label model is one the deployment profile offers (said on stderr
    when not), checked with the rest of the spec before any work."""
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile
    from jadd_dagster.spec import SpecError, check_model_name

    try:
        check_model_name(spec, resources_for(load_profile())["models"].models)
        return True
    except SpecError as error:
        print(f"error: the dataset spec is invalid:\n{error}", file=sys.stderr)
        return False


def _autolabel_line(autolabel: dict) -> str:
    """One line on the build's auto-labels: how many were computed, and their score if any."""
    line = f"labels:   {autolabel['model']}, {autolabel['computed']} scenes labelled, {autolabel['cached']} cached"
    if autolabel.get("seconds_per_scene"):
        line += f" ({autolabel['seconds_per_scene']:.1f} s a scene)"
    quality = autolabel.get("quality")
    if quality:
        line += (f"\nscore:    mAP {quality['mAP_present']:.3f} on the classes present, NDS {quality['NDS']:.3f} "
                 f"(nuScenes DetectionEval against ground truth on {quality['scenes']} val scene(s))")
    return line


def _cost_line(summary: dict) -> str:
    """The build's cost: estimated before it, actual after it (USD, cost.py)."""
    from jadd_dagster import headless
    from jadd_dagster.build import actual_work
    from jadd_dagster.cost import CostBreakdown, format_usd, price
    from jadd_dagster.profile import load_profile

    table = load_profile().cost
    actual = price(actual_work(headless.current_store(), summary["name"], table), table)
    estimate = CostBreakdown.from_json(summary["estimate"]["breakdown"]) if "breakdown" in summary["estimate"] else None
    parts = ", ".join(f"{line.component} {format_usd(line.usd)}" for line in actual.lines)
    return (f"cost:     {format_usd(actual.usd)} actual ({parts}); estimated "
            f"{format_usd(estimate.usd) if estimate else 'n/a'}")


def _run_build(spec_path: Path, workdir: Path, logs_dir: Path | None, make_demo_logs: dict | None) -> int:
    from jadd_dagster import headless

    spec, spec_data = _load_spec(spec_path)  # refuse a bad spec before any work
    if spec is None:
        return 2
    if logs_dir is not None and not Path(logs_dir).is_dir():
        print(f"error: --logs {logs_dir} is not a folder", file=sys.stderr)
        return 2
    if not _model_is_offered(spec):
        return 2
    headless.use_workdir(workdir)
    store = headless.current_store()
    if make_demo_logs is not None:
        logs_dir = make_demo_logs_in(workdir, make_demo_logs)
    headless.add_logs(Path(logs_dir), store)
    try:
        result = headless.build_dataset(spec, spec_data, workdir)
    except headless.BuildFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    path = headless.write_summary(result, workdir.resolve())
    s = result.summary
    print(
        f"\ndataset {s['name']}: {s['scenes']} scenes, {s['samples']} samples, {s['images']} images "
        f"({s['cached_scenes']} scenes cached, {s['computed_scenes']} computed) in {s['wall_s']:.1f} s\n"
        f"dataroot: {s['dataroot']}\nversions: {', '.join(s['versions'])}\nsummary:  {path}"
    )
    if s.get("autolabel"):
        print(_autolabel_line(s["autolabel"]))
    print(_cost_line(s))
    for scene in s.get("missing_includes", []):
        print(f"MISSING include_scenes entry {scene}: no such scene in the catalog", file=sys.stderr)
    if s.get("scenes_with_gaps"):
        print(f"WARNING {len(s['scenes_with_gaps'])} scenes have CAN or pose gaps (scene_filter 'not has_gap' "
              f"excludes them): {', '.join(s['scenes_with_gaps'][:20])}", file=sys.stderr)
    for scene, reason in sorted(s["failed_scenes"].items()):
        print(f"FAILED scene {scene}: {reason}", file=sys.stderr)
    for log_id, reason in sorted(result.failed_logs.items()):
        print(f"FAILED log {log_id}: {reason}", file=sys.stderr)
    for check, problems in sorted(s.get("check_problems", {}).items()):
        for problem in problems:
            print(f"CHECK {check} failed: {problem}", file=sys.stderr)
    return 0 if result.ok else 1


def make_demo_logs_in(workdir: Path, settings: dict) -> Path:
    """Generate the demo's synthetic logs (jadd_dagster.sim.make_logs with settings) into a fresh
    workdir/demo-logs; returns that folder."""
    from jadd_dagster.sim import make_logs

    logs_dir = workdir.resolve() / "demo-logs"
    shutil.rmtree(logs_dir, ignore_errors=True)
    print(f"generating {settings['n_logs']} synthetic logs")
    make_logs(logs_dir, **settings)
    return logs_dir


def cmd_demo(args) -> int:
    logs = {"n_logs": args.logs, "minutes": args.minutes, "seed": args.seed,
            "channels": ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"), "image_size": (320, 180)}
    return _run_build(DEMO_SPEC, Path(args.workdir), None, logs)


def cmd_build(args) -> int:
    return _run_build(Path(args.spec), Path(args.workdir), Path(args.logs), None)


def _default_topic_map(first: Path) -> Path:
    """topic-map.yaml inside a bag directory if it has one, else beside the first file or bag."""
    inside = first / "topic-map.yaml"
    return inside if first.is_dir() and inside.is_file() else first.parent / "topic-map.yaml"


def cmd_ingest(args) -> int:
    from jadd_dagster.ingest import IngestError, TopicMapError, detect_format, ingest_drive, load_topic_map
    from jadd_dagster.logs.reader import LogFormatError

    files = [Path(f) for f in args.files]
    topic_map = Path(args.topic_map) if args.topic_map else _default_topic_map(files[0])
    try:
        source_format = detect_format(files) if args.format == "auto" else args.format
        result = ingest_drive(files, Path(args.out), load_topic_map(topic_map),
                              dbc=Path(args.dbc) if args.dbc else None, log_id=args.log_id, format=source_format)
    except (IngestError, TopicMapError, LogFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    m, report = result.manifest, result.report
    print(f"log {m.log_id}: {m.duration_us / 1e6:.1f} s, cameras {', '.join(f'{c} {m.rate_hz(c)} Hz' for c in m.channels)}"
          f"{', lidars ' + ', '.join(m.lidar_channels) if m.lidar_channels else ''}\nwritten to {result.path}")
    for gap in report["gaps"]:
        print(f"GAP {gap['stream']}: {gap['seconds']:.3f} s from {gap['start_us']} µs", file=sys.stderr)
    return 0


def cmd_datasets_list(args) -> int:
    from jadd_dagster import headless
    from jadd_dagster.profile import load_profile
    from jadd_dagster.registry import Registry

    if args.workdir:
        headless.use_workdir(Path(args.workdir))
    entries = Registry(load_profile().resolved_registry_url()).list_datasets(args.name)
    if args.json:
        print(json.dumps([{**e.__dict__, "created_at": e.created_at.isoformat()} for e in entries], indent=2))
        return 0
    from jadd_dagster.cost import format_usd

    def usd(amount: float | None) -> str:
        return format_usd(amount) if amount is not None else "-"

    print(f"{'name':<20} {'status':<9} {'scenes':>7} {'samples':>8} {'images':>8} {'failed':>6} {'estimate':>10} "
          f"{'actual':>10}  {'created':<19}  {'launched by':<16} dataroot")
    for e in entries:
        print(f"{e.name:<20} {e.status:<9} {e.scenes:>7} {e.samples:>8} {e.images:>8} {e.failed_scenes:>6} "
              f"{usd(e.estimate_usd):>10} {usd(e.actual_usd):>10}  {e.created_at:%Y-%m-%d %H:%M:%S}  "
              f"{e.launched_by or '-':<16} {e.dataroot}")
    if not entries:
        print("(no datasets registered)")
    return 0


def cmd_datasets_show(args) -> int:
    from jadd_dagster import headless
    from jadd_dagster.layout import index_key, scene_table_key
    from jadd_dagster.records import DatasetIndex, read_record
    from jadd_dagster.storage import read_parquet

    if args.workdir:
        headless.use_workdir(Path(args.workdir))
    store = headless.current_store()
    if not store.exists(index_key(args.name)):
        print(f"error: dataset {args.name!r} has no index in {store.describe(index_key(args.name))}: it was never built",
              file=sys.stderr)
        return 1
    index = read_record(store, index_key(args.name), DatasetIndex)
    scenes = read_parquet(store, scene_table_key(args.name)) if args.scenes else None
    if args.json:
        from jadd_dagster.records import to_json

        data = to_json(index)
        if scenes is not None:
            data["scene_map"] = scenes.to_dict(orient="records")
        print(json.dumps(data, indent=2))
        return 0
    print(f"dataset  {index.name}  (spec {index.spec_hash}, built {index.built_at}, run {index.run_id})")
    print(f"dataroot {index.dataroot}")
    print(f"scenes   {index.scenes}  samples {index.samples}  images {index.images}  splits {index.splits}")
    print(f"\n{'part':>5}  {'scenes':>6}  {'samples':>7}  version")
    for part in index.parts:
        print(f"{part.part:>5}  {part.scenes:>6}  {part.samples:>7}  {part.version}   {part.splits}")
    if scenes is not None:
        print(f"\n{'scene id':<32} {'part':>5}  {'scene':<10} split")
        for row in scenes.itertuples(index=False):
            print(f"{row.scene_id:<32} {row.part:>5}  {row.scene_name:<10} {row.split}")
    return 0


def cmd_store_clean(args) -> int:
    from jadd_dagster import headless
    from jadd_dagster.leftovers import find_leftovers, remove_leftovers

    if args.workdir:
        headless.use_workdir(Path(args.workdir))
    store = headless.current_store()
    logs = store.local_path("logs")
    root = logs.parent if logs is not None else None
    if root is None:
        print("nothing to clean: an S3 store stages nothing in the bucket (expire incomplete multipart uploads "
              "with an AbortIncompleteMultipartUpload lifecycle rule)")
        return 0
    age = args.older_than_hours * 3600
    items = find_leftovers(root, age) if args.dry_run else remove_leftovers(root, age)
    for item in items:
        print(f"{'would remove' if args.dry_run else 'removed'} {item.path} ({item.bytes} bytes)")
    print(f"{len(items)} leftovers, {sum(i.bytes for i in items)} bytes {'reclaimable' if args.dry_run else 'reclaimed'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jadd", description="JADD Creator: drive logs to nuScenes datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("make-logs", help="write synthetic drive logs")
    m.add_argument("--out", required=True)
    m.add_argument("--logs", type=int, default=3)
    m.add_argument("--minutes", type=float, default=1.0)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--channels", default="CAM_FRONT,CAM_FRONT_LEFT,CAM_FRONT_RIGHT")
    m.add_argument("--width", type=int, default=320)
    m.add_argument("--height", type=int, default=180)
    m.add_argument("--lidar", action="store_true", help="also simulate a 20 Hz LIDAR_TOP (≈12 MB per second of log)")
    m.add_argument("--no-objects", action="store_true", help="an empty road: no ground-truth objects")
    m.set_defaults(func=cmd_make_logs)

    d = sub.add_parser("demo", help="generate logs and build the demo dataset end to end")
    d.add_argument("--workdir", default="demo-work")
    d.add_argument("--logs", type=int, default=3)
    d.add_argument("--minutes", type=float, default=1.0)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("build", help="build one dataset spec over a folder of logs")
    b.add_argument("--spec", required=True, help="dataset spec YAML")
    b.add_argument("--logs", required=True, help="folder of drive-log folders")
    b.add_argument("--workdir", required=True, help="store, registry and Dagster instance go here")
    b.set_defaults(func=cmd_build)

    ing = sub.add_parser("ingest", help="convert the recording of one drive (MCAP files or rosbag2 bags) into a drive log")
    ing.add_argument("--format", default="auto", choices=["auto", "mcap", "rosbag2"],
                     help="the recording's format (auto: .mcap files are MCAP; bag directories with metadata.yaml "
                     "and .db3 files are rosbag2)")
    ing.add_argument("files", nargs="+", help="the drive's MCAP files or rosbag2 bag directories / .db3 files "
                     "(split, overlapping or with gaps: merged in time)")
    ing.add_argument("--out", required=True, help="the folder of logs, e.g. STORE/logs; the log goes to OUT/<log id>")
    ing.add_argument("--topic-map", help="topic map YAML (default: topic-map.yaml in the first bag directory, or "
                     "beside the first file or bag)")
    ing.add_argument("--dbc", help="DBC file for raw CAN frames")
    ing.add_argument("--log-id", help="the log's id (default: the first bag directory's name, or the first file's "
                     "name without _<n>.mcap / _<n>.db3)")
    ing.set_defaults(func=cmd_ingest)

    ds = sub.add_parser("datasets", help="the dataset registry")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    dl = ds_sub.add_parser("list", help="list registered datasets")
    dl.add_argument("--workdir", help="the work folder of a demo or build (default: the profile's)")
    dl.add_argument("--name")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=cmd_datasets_list)
    dsh = ds_sub.add_parser("show", help="show a built dataset's index: its parts, versions, dataroot and splits")
    dsh.add_argument("name")
    dsh.add_argument("--workdir", help="the work folder of a demo or build (default: the profile's)")
    dsh.add_argument("--scenes", action="store_true", help="also list each scene id's part, scene name and split")
    dsh.add_argument("--json", action="store_true")
    dsh.set_defaults(func=cmd_datasets_show)

    st = sub.add_parser("store", help="the object store")
    st_sub = st.add_subparsers(dest="store_command", required=True)
    sc = st_sub.add_parser("clean", help="remove what killed builds left staged in a local store")
    sc.add_argument("--workdir", help="the work folder of a demo or build (default: the profile's)")
    sc.add_argument("--older-than-hours", type=float, default=1.0,
                    help="only what nothing wrote to for this long (a live build keeps writing into what it stages)")
    sc.add_argument("--dry-run", action="store_true")
    sc.set_defaults(func=cmd_store_clean)

    # `jadd worker ...` is handed to the worker's own parser whole (see main).
    sub.add_parser("worker", help="process one chunk (the compute backends run this); see `jadd worker -h`")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        from jadd_dagster.compute.worker import main as worker_main

        return worker_main(argv[1:])
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
