"""Curation and Split of a dataset into parts: the plan that is made before any scene is sampled.

Part membership is stable as scenes are added: a scene keeps the part (and the place in it, so
its scene name) that the previous plan gave it; new scenes fill the last part up to its size and
then start new parts. A rebuild after new scenes therefore changes only the last part(s); parts
whose scenes did not change keep their content hash (part_merge.part_version) and are not merged
again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import pandas as pd

from jadd_dagster.cost import (
    Calibration, CostBreakdown, CostTable, FrameBatch, calibration, estimate_work, format_usd, price,
)
from jadd_dagster.curation import select_scenes
from jadd_dagster.logs.format import CAMERA_CHANNELS, CAMERA_HZ
from jadd_dagster.merge import assign_splits, split_score
from jadd_dagster.nuscenes.parts import default_scenes_per_part
from jadd_dagster.nuscenes.splits import split_name
from jadd_dagster.records import DatasetPlan, PartPlan
from jadd_dagster.part_merge import expected_frames_per_channel
from jadd_dagster.scenes import parse_camera_sizes, parse_channel_values
from jadd_dagster.sampling import SamplingProfile
from jadd_dagster.spec import DatasetSpec

# Auto-labels per keyframe that size a part when the spec auto-labels (busy urban scenes).
BOXES_PER_KEYFRAME = 40.0


def sampling_profile(spec: DatasetSpec) -> SamplingProfile:
    return SamplingProfile(
        keyframe_hz=spec.keyframe_hz,
        sweep_hz=spec.sweep_hz,
        undistort=spec.undistort,
        image_size=spec.image_size,
        jpeg_quality=spec.jpeg_quality,
        channels=tuple(spec.channels),
    )


def scenes_per_part(spec: DatasetSpec) -> int:
    """The part size for a spec: as many scenes as one devkit load allows (nuscenes/parts.py)."""
    cameras = sum(1 for c in spec.channels if c in CAMERA_CHANNELS)
    return default_scenes_per_part(
        cameras, len(spec.channels) - cameras, spec.keyframe_hz, spec.sweep_hz,
        BOXES_PER_KEYFRAME if spec.autolabel else 0.0,
    )


def assign_parts(scene_ids: list[str], size: int, previous: list[PartPlan] | None = None) -> list[PartPlan]:
    """Parts of at most size scenes. Scenes of previous parts stay where they were (in order);
    the other scenes, sorted, fill the last part and then new ones."""
    if size < 1:
        raise ValueError("a part holds at least one scene")
    selected = set(scene_ids)
    parts: list[PartPlan] = []
    placed: set[str] = set()
    for part in sorted(previous or [], key=lambda p: p.part):
        keep = [s for s in part.scene_ids if s in selected][:size]
        if keep:
            parts.append(PartPlan(part.part, keep))
            placed.update(keep)
    new = sorted(selected - placed)
    if parts and new and len(parts[-1].scene_ids) < size:
        room = size - len(parts[-1].scene_ids)
        parts[-1] = PartPlan(parts[-1].part, parts[-1].scene_ids + new[:room])
        new = new[room:]
    number = max((p.part for p in previous or []), default=0) + 1
    for start in range(0, len(new), size):
        parts.append(PartPlan(number, new[start : start + size]))
        number += 1
    return parts


def forced_splits(scene_ids: list[str], val_fraction: float) -> dict[str, str]:
    """The scenes whose split differs from the hash rule (part_merge.split_of): the one or two that
    merge.assign_splits moves so that neither split is empty."""
    assigned = assign_splits(scene_ids, val_fraction)
    return {s: split for s, split in assigned.items() if split != split_name(split_score(s, 0) < val_fraction)}


CameraSizes = dict[str, dict[str, tuple[int, int]]]  # log id -> camera channel -> (width, height) in pixels


@dataclass(frozen=True)
class CameraStream:
    """What the catalog says of one camera of a log besides its size: its frame rate (Hz), its
    video's codec ('' when not known) and whether its lens is distorted."""

    rate_hz: float
    codec: str = ""
    distorted: bool = False


CameraStreams = dict[str, dict[str, CameraStream]]  # log id -> camera channel -> CameraStream


@dataclass(frozen=True)
class CostInputs:
    """What the estimate needs besides the plan: the price table, which selected scenes are
    cached already (sampled for the profile; labelled by the model), the measured calibrations and
    rates, the cameras' sizes of the logs (from their calibration; a log missing here counts
    as the table's native_megapixels) and their rates and codecs (the catalog's; a log missing
    here has every camera at the sweep rate, decoded and encoded)."""

    table: CostTable
    sampled: set[str] = field(default_factory=set)
    labelled: set[str] = field(default_factory=set)
    sampling: Calibration | None = None  # measured / modelled sampling seconds; None: the table's
    labelling: Calibration | None = None  # measured / modelled labelling seconds; None: the table's
    merging: Calibration | None = None  # measured / modelled merge seconds; None: the table's
    label_gpu: bool = False
    camera_sizes: CameraSizes = field(default_factory=dict)
    camera_streams: CameraStreams = field(default_factory=dict)


def frame_batches(
    spec: DatasetSpec, scenes_by_log: Mapping[str, Mapping[float, int]], sizes: CameraSizes, table: CostTable,
    streams: CameraStreams | None = None,
) -> list[FrameBatch]:
    """The frames to sample, per log and channel, with the camera's and the output's megapixels.

    scenes_by_log: log id -> {scene seconds: scenes}. A camera whose rate the catalog gives has
    the frames sampling's selection keeps at that rate (part_merge.expected_frames_per_channel:
    a camera slower than sweep_hz gives each of its frames once), priced at the table's rate of
    the same share of frames kept (the figures were measured on 30 Hz footage), and its frames are
    copied when they are recorded JPEGs kept as they are (sampling/scene.py: codec mjpeg, the
    camera's own size, no undistortion of a distorted lens). Other cameras (a catalog from before
    the rates) have scene seconds × sweep_hz frames, decoded and encoded. LIDAR_TOP has one sweep a
    keyframe, of no pixels."""
    out = tuple(spec.image_size) if spec.image_size else None
    streams = streams or {}
    batches = []
    for log_id, durations in scenes_by_log.items():
        seconds = sum(float(d) * n for d, n in durations.items())
        frames = int(round(seconds * spec.sweep_hz))
        for channel in spec.channels:
            if channel not in CAMERA_CHANNELS:  # a lidar: one sweep a keyframe (sampling/lidar.py)
                batches.append(FrameBatch(int(round(seconds * spec.keyframe_hz)), 0.0, 0.0))
                continue
            size = sizes.get(log_id, {}).get(channel)
            source = size[0] * size[1] / 1e6 if size else table.native_megapixels
            output = out[0] * out[1] / 1e6 if out else source
            stream = streams.get(log_id, {}).get(channel)
            if stream is None:
                batches.append(FrameBatch(frames, source, output))
                continue
            count = sum(n * expected_frames_per_channel(float(d), spec.keyframe_hz, spec.sweep_hz, stream.rate_hz)
                        for d, n in durations.items())
            kept_size = size is not None and (out is None or out == tuple(size))
            copied = stream.codec == "mjpeg" and kept_size and not (spec.undistort and stream.distorted)
            rate = min(spec.sweep_hz, stream.rate_hz) * CAMERA_HZ / stream.rate_hz
            batches.append(FrameBatch(count, source, output, rate, copied))
    return batches


def label_seconds(spec: DatasetSpec, table: CostTable, sizes: CameraSizes, log_id: str, scene_s: float) -> float:
    """The table's seconds to label one scene of scene_s seconds of a log: its keyframes × the
    spec's cameras, each image at the output size (the spec's, else the camera's from sizes, else
    native_megapixels)."""
    cameras = [c for c in spec.channels if c in CAMERA_CHANNELS]
    if not cameras:
        return 0.0
    pixels = []
    for channel in cameras:
        size = tuple(spec.image_size) if spec.image_size else sizes.get(log_id, {}).get(channel)
        pixels.append(size[0] * size[1] / 1e6 if size else table.native_megapixels)
    images = int(round(scene_s * spec.keyframe_hz)) * len(cameras)
    return table.label_seconds(spec.autolabel_model, images, sum(pixels) / len(pixels))


def parts_to_merge(parts: list[PartPlan], kept: list[PartPlan] | None, fresh: set[str]) -> list[PartPlan]:
    """The parts a build is expected to merge: new parts, parts whose scenes changed since the
    kept plan, and parts with a scene whose frames or labels are computed anew (fresh)."""
    before = {p.part: p.scene_ids for p in kept or []}
    return [p for p in parts if before.get(p.part) != p.scene_ids or any(s in fresh for s in p.scene_ids)]


def estimate_plan(
    spec: DatasetSpec, scenes: pd.DataFrame, parts: list[PartPlan], kept: list[PartPlan] | None, inputs: CostInputs
) -> dict:
    """The plan's cost estimate (DatasetPlan.estimate): frames, CPU hours, USD, USD per component
    and the breakdown with the work and where its seconds come from (cost.py)."""
    table = inputs.table
    ids = scenes["scene_id"].tolist()
    seconds = dict(zip(ids, scenes["duration_s"].astype(float)))
    to_sample = [s for s in ids if s not in inputs.sampled]
    to_label = [s for s in ids if s not in inputs.labelled] if spec.autolabel else []
    merging = parts_to_merge(parts, kept, set(to_sample) | set(to_label))
    cameras = sum(1 for c in spec.channels if c in CAMERA_CHANNELS)
    labelling = inputs.labelling or calibration([], "scene")
    label_logs = scenes[scenes["scene_id"].isin(set(to_label))].groupby(["log_id", "duration_s"], sort=True).size()
    label_model_s = sum(count * label_seconds(spec, table, inputs.camera_sizes, log_id, float(duration))
                        for (log_id, duration), count in label_logs.items())
    sampled = scenes[~scenes["scene_id"].isin(inputs.sampled)] if inputs.sampled else scenes
    scenes_by_log: dict[str, dict[float, int]] = {}
    for (log_id, duration), count in sampled.groupby(["log_id", "duration_s"], sort=True).size().items():
        scenes_by_log.setdefault(log_id, {})[float(duration)] = int(count)
    work = estimate_work(
        batches=frame_batches(spec, scenes_by_log, inputs.camera_sizes, table, inputs.camera_streams),
        sample_scenes=len(to_sample), sample_scene_s=float(sampled["duration_s"].sum()),
        channels=len(spec.channels), cameras=cameras, keyframe_hz=spec.keyframe_hz, undistort=spec.undistort,
        sweep_hz=spec.sweep_hz, label_scene_s=sum(seconds[s] for s in to_label), label_scenes=len(to_label),
        label_gpu=inputs.label_gpu, merge_scenes=sum(len(p.scene_ids) for p in merging), merge_parts=len(merging),
        can_bus=spec.include_can_bus, sampling=inputs.sampling or calibration([], "scene"), labelling=labelling,
        label_model_s=label_model_s, label_basis=table.label_basis(spec.autolabel_model),
        merging=inputs.merging or calibration([], "build"), table=table,
    )
    breakdown = price(work, table)
    cpu_s = work.sampling_s + work.merge_s + (0.0 if work.label_gpu else work.label_s)
    return {
        "frames": work.frames, "cpu_hours": cpu_s / 3600, "gpu_hours": work.label_s / 3600 if work.label_gpu else 0.0,
        "usd": breakdown.usd, "components": {c: breakdown.component(c) for c in ("sampling", "autolabel", "merge",
                                                                              "storage", "requests")},
        "cached_scenes": len(ids) - len(to_sample), "labelled_scenes_cached": len(ids) - len(to_label) if spec.autolabel else 0,
        "breakdown": breakdown.to_json(), "work": asdict(work),
    }


def make_plan(
    spec: DatasetSpec, catalog: pd.DataFrame, settings, previous: DatasetPlan | None, run_id: str,
    costing: Callable[[list[str], CameraSizes, CameraStreams], CostInputs] | None = None,
) -> DatasetPlan:
    """Select the spec's scenes from the catalog, split them into parts and estimate the cost.

    settings carries the deployment profile's cost table (`cost`, a mapping; empty: the defaults).
    costing(selected scene ids, their logs' camera sizes and streams from the catalog) gives the cache hits,
    measured rates and the cameras' sizes (the Dagster layer reads them from the registry, and the
    sizes the catalog lacks from the logs); without it nothing counts as cached,
    the table's constants apply and every camera is native_megapixels. Raises curation.FilterError on a bad filter."""
    curation = select_scenes(catalog, spec)
    scenes = curation.scenes
    profile_key = sampling_profile(spec).key()
    size = scenes_per_part(spec)
    kept = previous.parts if previous is not None and previous.profile_key == profile_key else None
    ids = scenes["scene_id"].tolist()
    parts = assign_parts(ids, size, kept)
    streams = catalog_camera_streams(scenes)
    inputs = (costing(ids, catalog_camera_sizes(scenes), streams) if costing is not None
              else CostInputs(settings_table(settings), camera_streams=streams))
    gaps = sorted(scenes.loc[scenes["has_gap"].astype(bool), "scene_id"]) if "has_gap" in scenes else []
    return DatasetPlan(
        name=spec.name, spec=spec.model_dump(), spec_hash=spec.spec_hash(), profile_key=profile_key,
        parts=parts, scenes_per_part=size,
        hours=round(float(scenes["duration_s"].sum()) / 3600, 3),
        estimate=estimate_plan(spec, scenes, parts, kept, inputs),
        missing_includes=list(curation.missing_includes), dropped_by_limit=curation.dropped_by_limit,
        gap_scenes=gaps, run_id=run_id, forced_splits=forced_splits(ids, spec.val_fraction),
    )


def catalog_camera_sizes(scenes: pd.DataFrame) -> CameraSizes:
    """The cameras' sizes of the scenes' logs where the catalog has them (column camera_sizes;
    catalogs made before it, and logs without calibration, have none)."""
    if "camera_sizes" not in scenes:
        return {}
    pairs = scenes[["log_id", "camera_sizes"]].drop_duplicates("log_id")
    sizes = {log_id: parse_camera_sizes(text) for log_id, text in zip(pairs["log_id"], pairs["camera_sizes"])}
    return {log_id: size for log_id, size in sizes.items() if size}


def catalog_camera_streams(scenes: pd.DataFrame) -> CameraStreams:
    """The cameras' rates, codecs and lenses of the scenes' logs where the catalog has them
    (columns camera_rates_hz, camera_codecs, distorted_cameras; catalogs and logs indexed before
    them have none). One row a log is read, never a file."""
    if "camera_rates_hz" not in scenes:
        return {}
    columns = [c for c in ("camera_codecs", "distorted_cameras") if c in scenes]
    rows = scenes[["log_id", "camera_rates_hz", *columns]].drop_duplicates("log_id").fillna("")
    streams: CameraStreams = {}
    for row in rows.itertuples(index=False):
        rates = parse_channel_values(row.camera_rates_hz)
        codecs = parse_channel_values(getattr(row, "camera_codecs", ""))
        distorted = set(filter(None, str(getattr(row, "distorted_cameras", "")).split(",")))
        cameras = {c: CameraStream(float(hz), codecs.get(c, ""), c in distorted)
                   for c, hz in rates.items() if _positive_number(hz)}
        if cameras:
            streams[row.log_id] = cameras
    return streams


def _positive_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def settings_table(settings) -> CostTable:
    """The cost table of PipelineSettings (its `cost` mapping; empty: the defaults)."""
    return CostTable.from_mapping(getattr(settings, "cost", None) or {})


def estimate_lines(estimate: dict) -> str:
    """The estimate's components, one indented line each, for `jadd build`'s output before the
    work (empty for a plan made before the cost model had components)."""
    if "breakdown" not in estimate:
        return ""
    lines = CostBreakdown.from_json(estimate["breakdown"]).lines
    return "".join(f"\n  {line.component:<10} {format_usd(line.usd):>10}  {line.quantity}"
                   + (f" ({line.basis})" if line.basis else "") for line in lines)
