"""The cost model: what a build is expected to cost before it starts, and what it cost after.

Both sides price the same work (BuildWork) with the deployment profile's price table (CostTable):

    sampling    frames to sample × CPU seconds a frame              × usd_per_cpu_hour
    autolabel   images to label × seconds an image (CPU or GPU)     × usd_per_cpu_hour | usd_per_gpu_hour
    merge       parts to merge × seconds a part
                + scenes in them × seconds a scene                  × usd_per_cpu_hour
    storage     GB of new frames and tables × storage_months        × usd_per_gb_month
    requests    PUT and GET requests to the object store            × usd_per_1000_put | usd_per_1000_get

Seconds a frame follow the frame's size (CostTable.seconds_per_frame). The table's figures were
measured at a reference size (reference_megapixels, 1600x900) and are split into three shares:

    seconds a frame = overhead(rate)                                        no pixels: Python, packets, files
                    + (total(rate) - overhead(rate) - encode) × source MP / reference MP      decoding
                    + encode × output MP / reference MP              colour, remap (undistort), JPEG, write

where total(rate) is cpu_seconds_per_frame[_undistorted] (decoding is shared by the frames picked
from it, so a frame costs more at lower rates), source MP the camera's pixels from the log's
calibration and output MP the spec's image size (the camera's when it keeps it). At the reference
size the model gives the measured figure unchanged. A camera with a rate of its own (the catalog's
camera_rates_hz) has the frames sampling selects at that rate (one slower than sweep_hz gives each
of its frames once) at the rate of the table's 30 Hz footage that keeps the same share of frames;
a recorded JPEG kept as it is (codec mjpeg, the camera's size, no undistortion of a distorted lens)
is copied, not decoded and encoded: copy_seconds_per_frame (planning.frame_batches).

Before a build (`estimate_work`): scenes already cached for the sampling profile or the model are
left out. Sampling and merge seconds are the model's, times a calibration: measured / modelled
seconds over what earlier builds of the deployment measured (the registry keeps each scene
output's seconds and frames, and each build's merge seconds, scenes and parts), each compared with
the model at its own frame size. Seconds measured on small frames are thus applied per pixel to
large ones, never unchanged. Labelling seconds follow the images a scene labels (keyframes ×
cameras) and their pixels (CostTable.label_seconds), times the median of measured / modelled
seconds of recent scenes of the same model and profile. Without measurements the factor is 1: the
table's figures.
After a build (`actual work`, built by the Dagster layer from the stage records): the seconds the
workers measured per scene and per part, or on AWS Batch the job durations (startedAt to stoppedAt
of each child), and the frames, scenes and parts actually written. Storage and request charges use
the same counting model on both sides (request_counts). Plain Python: no Dagster here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields

# Requests per unit of work (request_counts): a sampled scene writes its scene.json, can.parquet,
# pose.parquet and result record and reads the log's manifest, calibration, CAN and pose besides one
# video per channel; a labelled scene reads scene.json and writes labels.json and a result record;
# a merged scene is read back (scene.json, can, pose, labels) and a part writes its 13 tables,
# splits.json, part.json and a manifest; with the CAN bus expansion each scene adds its files.
PUTS_PER_SAMPLED_SCENE = 4
GETS_PER_SAMPLED_SCENE = 4  # plus one video per channel
PUTS_PER_LABELLED_SCENE = 2
GETS_PER_LABELLED_SCENE = 1  # plus one image per keyframe and camera
GETS_PER_MERGED_SCENE = 4
PUTS_PER_PART = 16
CAN_BUS_FILES_PER_SCENE = 7
COMPONENTS = ("sampling", "autolabel", "merge", "storage", "requests")


class CostTableError(ValueError):
    """A price table or limit that cannot be used; the message names the profile field."""


@dataclass(frozen=True)
class CostTable:
    """The deployment profile's `cost:` section: prices, fallback seconds and limits.

    Units: USD; seconds of one CPU core (or one GPU); bytes. The *_seconds_* values are the
    fallbacks used until earlier builds have measured the same stage and profile."""

    usd_per_cpu_hour: float = 0.05
    usd_per_gpu_hour: float = 1.0
    usd_per_gb_month: float = 0.023
    usd_per_1000_put: float = 0.005
    usd_per_1000_get: float = 0.0004
    storage_months: float = 1.0
    # Sampling seconds per output frame at reference_megapixels, by sweep rate (Hz): decoding is
    # shared by the frames taken from it, so a frame costs more at lower rates. Measured on 1600x900
    # x264 footage that decodes like real driving video, one core (bench/RESULTS.md, "Sampling at 2,
    # 10 and 30 Hz"; 5 Hz interpolated). A single number applies at every rate.
    cpu_seconds_per_frame: float | Mapping[int, float] = field(
        default_factory=lambda: {2: 0.087, 5: 0.057, 10: 0.035, 30: 0.023})
    cpu_seconds_per_frame_undistorted: float | Mapping[int, float] | None = field(
        default_factory=lambda: {2: 0.092, 5: 0.067, 10: 0.050, 30: 0.037})  # None: cpu_seconds_per_frame
    reference_megapixels: float = 1.44  # the frame size the figures above were measured on (1600x900)
    # Shares of those figures (seconds_per_frame): what does not grow with pixels, by rate (measured
    # on 320x180 footage, bench/RESULTS.md "Cost estimate against actual cost"), and what grows with
    # the output's pixels at the reference size (colour, remap, JPEG and write; the step table of
    # "Sampling at 2, 10 and 30 Hz"). The rest is decoding and grows with the camera's pixels.
    frame_overhead_seconds: float | Mapping[int, float] = field(
        default_factory=lambda: {2: 0.0057, 5: 0.0030, 10: 0.0021, 30: 0.0020})
    encode_seconds_per_frame: float = 0.0078
    encode_seconds_per_frame_undistorted: float = 0.025
    # A recorded JPEG copied as it is (a JPEG camera whose frames the profile keeps as they are):
    # reading its packet and writing its file, with the scene's fixed work. bench/RESULTS.md
    # "Sampling a JPEG camera: recorded files copied": 1.0 CPU ms a 1600x900 frame against 13.9 decoded.
    copy_seconds_per_frame: float = 0.0010
    # Labelling seconds of one image (a keyframe of one camera) by model, until a build has measured
    # the model and profile: a share every image pays, and one per megapixel of the image. The
    # baseline's, fitted to its CPU seconds at 160x90 to 640x360 with 1 and 3 cameras (bench/RESULTS.md
    # "Auto-labelling: what its time follows"); a model in neither mapping takes the defaults.
    autolabel_seconds_per_image: Mapping[str, float] = field(default_factory=lambda: {"baseline": 0.005})
    autolabel_seconds_per_megapixel: Mapping[str, float] = field(default_factory=lambda: {"baseline": 0.41})
    default_autolabel_seconds_per_image: float = 0.005
    default_autolabel_seconds_per_megapixel: float = 0.41
    # Before labelling followed the images: a flat figure a scene, by model. A profile that still
    # gives one keeps it for those models (default_...: for every model without per-image figures).
    autolabel_seconds_per_scene: Mapping[str, float] = field(default_factory=dict)
    default_autolabel_seconds_per_scene: float | None = None
    merge_seconds_per_scene: float = 0.35
    # A part's merge besides its scenes (devkit load, checks, preview): bench/RESULTS.md "Cost estimate
    # against actual cost", merges of 3 and 6 scenes.
    merge_seconds_per_part: float = 3.0
    bytes_per_megapixel: float = 250_000.0  # JPEG at quality ~90
    native_megapixels: float = 1.44  # a camera's size when its log's calibration is not at hand (1600×900)
    table_bytes_per_frame: float = 1_000.0
    measured_entries: int = 200  # recent registry entries the calibrations and medians are taken over
    daily_limit_usd: float | None = None
    dataset_limit_usd: float | None = None

    @classmethod
    def from_mapping(cls, data: Mapping | None, where: str = "cost") -> "CostTable":
        """Parse a profile's `cost:` mapping (limits under `limits: {daily_usd, dataset_usd}`);
        CostTableError names the bad field, e.g. "resources/aws.yaml: cost.usd_per_gpu_hour: ..."."""
        data = dict(data or {})
        limits = data.pop("limits", None) or {}
        if not isinstance(limits, Mapping):
            raise CostTableError(f"{where}.limits: expected a mapping with daily_usd and/or dataset_usd")
        unknown_limits = set(limits) - {"daily_usd", "dataset_usd"}
        if unknown_limits:
            raise CostTableError(f"{where}.limits: unknown key(s) {sorted(unknown_limits)}; use daily_usd, dataset_usd")
        names = {f.name for f in fields(cls)} - {"daily_limit_usd", "dataset_limit_usd"}
        unknown = set(data) - names
        if unknown:
            raise CostTableError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
        values: dict = {}
        for name, value in data.items():
            if name in MODEL_TABLES:
                if not isinstance(value, Mapping):
                    raise CostTableError(f"{where}.{name}: expected a mapping of model name to seconds")
                values[name] = {str(k): _number(f"{where}.{name}.{k}", v) for k, v in value.items()}
            elif name in ("cpu_seconds_per_frame_undistorted", "default_autolabel_seconds_per_scene") and value is None:
                values[name] = None
            elif name in RATE_TABLES and isinstance(value, Mapping):
                values[name] = {_rate(f"{where}.{name}", k): _number(f"{where}.{name}.{k}", v) for k, v in value.items()}
                if not values[name]:
                    raise CostTableError(f"{where}.{name}: give seconds for at least one rate, or one number")
            elif name == "measured_entries":
                values[name] = int(_number(f"{where}.{name}", value, positive=True))
            elif name == "reference_megapixels":
                values[name] = _number(f"{where}.{name}", value, positive=True)
            else:
                values[name] = _number(f"{where}.{name}", value)
        if "cpu_seconds_per_frame" in values and "cpu_seconds_per_frame_undistorted" not in data:
            values["cpu_seconds_per_frame_undistorted"] = None  # a profile's own figure holds for undistorted frames too
        for name, key in (("daily_limit_usd", "daily_usd"), ("dataset_limit_usd", "dataset_usd")):
            if limits.get(key) is not None:
                values[name] = _number(f"{where}.limits.{key}", limits[key], positive=True)
        return cls(**values)

    def to_mapping(self) -> dict:
        """The table as a profile would write it (what the Dagster resource carries)."""
        data = asdict(self)
        for name in MODEL_TABLES:
            data[name] = dict(getattr(self, name))
        if data["default_autolabel_seconds_per_scene"] is None:
            del data["default_autolabel_seconds_per_scene"]
        for name in RATE_TABLES:
            if isinstance(data[name], Mapping):
                data[name] = dict(data[name])
        if data["cpu_seconds_per_frame_undistorted"] is None:  # Dagster's config holds no nulls: absent means None
            del data["cpu_seconds_per_frame_undistorted"]
        daily, dataset = data.pop("daily_limit_usd"), data.pop("dataset_limit_usd")
        data["limits"] = {k: v for k, v in (("daily_usd", daily), ("dataset_usd", dataset)) if v is not None}
        return data

    def seconds_per_frame(
        self, undistort: bool, sweep_hz: float = 10, source_megapixels: float | None = None,
        output_megapixels: float | None = None,
    ) -> float:
        """Fallback CPU seconds to sample one frame at sweep_hz (decode, select, undistort/resize,
        encode) from a camera of source_megapixels into frames of output_megapixels (None: the
        reference size; output None: the camera's). The model of the module's docstring; a rate
        the table lacks takes the nearest rate's figure."""
        total = self.reference_seconds_per_frame(undistort, sweep_hz)
        overhead = min(_at_rate(self.frame_overhead_seconds, sweep_hz), total)
        encode = min(self.encode_seconds_per_frame_undistorted if undistort else self.encode_seconds_per_frame,
                     total - overhead)
        source = self.reference_megapixels if source_megapixels is None else source_megapixels
        output = source if output_megapixels is None else output_megapixels
        # The measured figure, moved by the decoding and encoding shares' change in pixels (exactly
        # the figure at the reference size).
        return (total + (total - overhead - encode) * (source / self.reference_megapixels - 1)
                + encode * (output / self.reference_megapixels - 1))

    def reference_seconds_per_frame(self, undistort: bool, sweep_hz: float = 10) -> float:
        """The measured figure at the reference size (cpu_seconds_per_frame[_undistorted])."""
        value = self.cpu_seconds_per_frame
        if undistort and self.cpu_seconds_per_frame_undistorted is not None:
            value = self.cpu_seconds_per_frame_undistorted
        return _at_rate(value, sweep_hz)

    def merge_seconds(self, parts: int, scenes: int) -> float:
        """Fallback seconds to merge scenes in parts: a fixed share per part and one per scene."""
        return parts * self.merge_seconds_per_part + scenes * self.merge_seconds_per_scene

    def label_seconds(self, model: str, images: int, megapixels: float) -> float:
        """Fallback seconds to label one scene of `images` images (keyframes × cameras) of
        `megapixels` each: images × (seconds an image + seconds a megapixel × megapixels), or the
        profile's flat figure a scene where it gives one for the model (label_basis)."""
        flat = self._flat_label_seconds(model)
        if flat is not None:
            return flat
        per_image, per_megapixel = self._label_figures(model)
        return images * (per_image + per_megapixel * megapixels)

    def label_basis(self, model: str) -> str:
        """The fallback figure of label_seconds, for people."""
        flat = self._flat_label_seconds(model)
        if flat is not None:
            return f"{flat:g} s a scene"
        per_image, per_megapixel = self._label_figures(model)
        return f"{per_image:g} s an image + {per_megapixel:g} s a megapixel"

    def _flat_label_seconds(self, model: str) -> float | None:
        if model in self.autolabel_seconds_per_scene:
            return float(self.autolabel_seconds_per_scene[model])
        if model in self.autolabel_seconds_per_image or model in self.autolabel_seconds_per_megapixel:
            return None
        return self.default_autolabel_seconds_per_scene

    def _label_figures(self, model: str) -> tuple[float, float]:
        return (float(self.autolabel_seconds_per_image.get(model, self.default_autolabel_seconds_per_image)),
                float(self.autolabel_seconds_per_megapixel.get(model, self.default_autolabel_seconds_per_megapixel)))


RATE_TABLES = ("cpu_seconds_per_frame", "cpu_seconds_per_frame_undistorted", "frame_overhead_seconds")
MODEL_TABLES = ("autolabel_seconds_per_image", "autolabel_seconds_per_megapixel", "autolabel_seconds_per_scene")


def _at_rate(value: float | Mapping[int, float], sweep_hz: float) -> float:
    """One number, or a table by rate's figure at the nearest rate (the lower one on a tie)."""
    if isinstance(value, Mapping):
        return float(value[min(value, key=lambda rate: (abs(rate - sweep_hz), rate))])
    return float(value)


def _rate(where: str, value) -> int:
    try:
        rate = int(value)
    except (TypeError, ValueError):
        raise CostTableError(f"{where}: {value!r} is not a rate in Hz") from None
    if rate <= 0 or str(rate) != str(value).strip():
        raise CostTableError(f"{where}: {value!r} is not a rate in Hz")
    return rate


def _number(where: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CostTableError(f"{where}: expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise CostTableError(f"{where}: must be {'above' if positive else 'at least'} 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Rate:
    """Seconds per unit of work and where the figure comes from (measured median or constant)."""

    seconds: float
    basis: str


def median_rate(samples: Iterable[tuple[float, float]], fallback: float, unit: str) -> Rate:
    """Median of seconds/count over (count, seconds) samples with both above zero (an output
    recovered from a killed run has no seconds); the fallback constant when there are none."""
    ratios = [seconds / count for count, seconds in samples if count > 0 and seconds > 0]
    if not ratios:
        return Rate(fallback, f"constant ({fallback:g} s a {unit})")
    return Rate(statistics.median(ratios), f"measured (median of {len(ratios)} recent {unit}s)")


@dataclass(frozen=True)
class Calibration:
    """How this deployment's measured seconds compare with the model's: factor = measured /
    modelled seconds of recent work (1 without any), and where it comes from."""

    factor: float
    basis: str


def calibration(samples: Iterable[tuple[float, float]], unit: str) -> Calibration:
    """Measured over modelled seconds, summed over (measured, modelled) samples with both above
    zero; factor 1 (the table's figures) when there are none. Sums, not a median of ratios: the
    first scene of each chunk also pays the chunk's start (opening the log's files and videos),
    which a median leaves out and a total must not. unit names one sample ("scene", "build")."""
    pairs = [(measured, modelled) for measured, modelled in samples if measured > 0 and modelled > 0]
    if not pairs:
        return Calibration(1.0, "table")
    factor = sum(m for m, _ in pairs) / sum(p for _, p in pairs)
    return Calibration(factor, f"table × {factor:.3g}, measured/table over {len(pairs)} recent {unit}s")


def median_calibration(samples: Iterable[tuple[float, float]], unit: str) -> Calibration:
    """The median of measured / modelled seconds over (measured, modelled) samples with both above
    zero; factor 1 (the table's figures) when there are none. For labelling, whose scenes pay no
    chunk start worth summing, the median keeps one slow scene from moving the estimate."""
    ratios = [measured / modelled for measured, modelled in samples if measured > 0 and modelled > 0]
    if not ratios:
        return Calibration(1.0, "table")
    factor = statistics.median(ratios)
    return Calibration(factor, f"table × {factor:.3g}, median measured/table of {len(ratios)} recent {unit}s")


@dataclass(frozen=True)
class FrameBatch:
    """Frames of one camera (or lidar: 0 pixels) to sample: count, camera and output megapixels.

    rate_hz: the rate of the table's figures the frames are priced at (None: the build's sweep
    rate); a camera slower than the footage the figures were measured on (30 Hz) keeps a larger
    share of its frames, as a faster sweep rate would (planning.frame_batches). copied: recorded
    JPEGs written as they are, priced at copy_seconds_per_frame whatever their size."""

    frames: int
    source_megapixels: float
    output_megapixels: float
    rate_hz: float | None = None
    copied: bool = False


def sampling_seconds(batches: Iterable[FrameBatch], table: CostTable, undistort: bool, sweep_hz: int) -> tuple[int, float]:
    """(frames, the table's CPU seconds to sample them) by the frame-size model; copied frames at
    the table's copy figure."""
    frames, seconds = 0, 0.0
    for b in batches:
        frames += b.frames
        if b.copied:
            seconds += b.frames * table.copy_seconds_per_frame
            continue
        rate = sweep_hz if b.rate_hz is None else b.rate_hz
        seconds += b.frames * table.seconds_per_frame(undistort, rate, b.source_megapixels, b.output_megapixels)
    return frames, seconds


@dataclass(frozen=True)
class BuildWork:
    """The work of one build, expected (estimate) or done (actual). Seconds are of one CPU core,
    or of one GPU where label_gpu."""

    frames: int  # frames sampled and written
    sampled_scenes: int
    sampling_s: float
    sampled_scene_s: float = 0.0  # seconds of scene time sampled (estimate; 0 where not known)
    copied_frames: int = 0  # of frames: recorded JPEGs copied as they are (estimate; 0 where not known)
    labelled_scenes: int = 0
    label_images: int = 0  # keyframe images the labeller reads
    label_s: float = 0.0
    label_gpu: bool = False
    merged_scenes: int = 0
    merged_parts: int = 0
    merge_s: float = 0.0
    channels: int = 1
    can_bus: bool = False
    bytes_per_frame: float = 0.0
    bases: dict[str, str] = field(default_factory=dict)  # component -> where its seconds come from


@dataclass(frozen=True)
class CostLine:
    component: str
    quantity: str  # what is priced, for people
    usd: float
    basis: str = ""


@dataclass(frozen=True)
class CostBreakdown:
    """The priced components of a build; total in USD."""

    lines: list[CostLine]

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)

    def component(self, name: str) -> float:
        return sum(line.usd for line in self.lines if line.component == name)

    def to_json(self) -> dict:
        return {"usd": self.usd, "lines": [asdict(line) for line in self.lines]}

    @classmethod
    def from_json(cls, data: Mapping) -> "CostBreakdown":
        return cls([CostLine(**line) for line in data.get("lines", [])])

    def markdown(self) -> str:
        rows = [f"| {line.component} | {line.quantity} | {format_usd(line.usd)} | {line.basis} |" for line in self.lines]
        return ("| component | work | USD | seconds from |\n|---|---|---:|---|\n" + "\n".join(rows)
                + f"\n| **total** | | **{format_usd(self.usd)}** | |")


def request_counts(work: BuildWork) -> tuple[int, int]:
    """(PUT, GET) requests the work makes to the object store (the module's counting model)."""
    can_bus = CAN_BUS_FILES_PER_SCENE * work.merged_scenes if work.can_bus else 0
    puts = (work.frames + PUTS_PER_SAMPLED_SCENE * work.sampled_scenes + PUTS_PER_LABELLED_SCENE * work.labelled_scenes
            + PUTS_PER_PART * work.merged_parts + can_bus)
    gets = ((GETS_PER_SAMPLED_SCENE + work.channels) * work.sampled_scenes + GETS_PER_LABELLED_SCENE * work.labelled_scenes
            + work.label_images + GETS_PER_MERGED_SCENE * work.merged_scenes)
    return puts, gets


def stored_gb(work: BuildWork, table: CostTable) -> float:
    """GB (10^9 bytes) the work adds to the store: frames and their table rows."""
    return work.frames * (work.bytes_per_frame + table.table_bytes_per_frame) / 1e9


def price(work: BuildWork, table: CostTable) -> CostBreakdown:
    """The cost of the work at the table's prices, one line per component."""
    cpu, gpu = table.usd_per_cpu_hour / 3600, table.usd_per_gpu_hour / 3600
    puts, gets = request_counts(work)
    gb = stored_gb(work, table)
    label_unit = "GPU" if work.label_gpu else "CPU"
    copied = f" ({work.copied_frames:,d} copied as recorded)" if work.copied_frames else ""
    return CostBreakdown([
        CostLine("sampling", f"{work.frames:,d} frames{copied} of {work.sampled_scenes:,d} scenes, {work.sampling_s / 3600:.3g} CPU h",
                 work.sampling_s * cpu, work.bases.get("sampling", "")),
        CostLine("autolabel", f"{work.labelled_scenes:,d} scenes, {work.label_s / 3600:.3g} {label_unit} h",
                 work.label_s * (gpu if work.label_gpu else cpu), work.bases.get("autolabel", "")),
        CostLine("merge", f"{work.merged_scenes:,d} scenes in {work.merged_parts:,d} parts, {work.merge_s / 3600:.3g} CPU h",
                 work.merge_s * cpu, work.bases.get("merge", "")),
        CostLine("storage", f"{gb:.3g} GB for {table.storage_months:g} month(s)",
                 gb * table.storage_months * table.usd_per_gb_month, f"{work.bytes_per_frame / 1e3:.0f} kB a frame"),
        CostLine("requests", f"{puts:,d} PUT, {gets:,d} GET",
                 puts / 1000 * table.usd_per_1000_put + gets / 1000 * table.usd_per_1000_get, "counting model"),
    ])


def bytes_per_frame(image_size: tuple[int, int] | None, table: CostTable) -> float:
    """Expected JPEG bytes of one frame at the output size (the camera's when None)."""
    megapixels = image_size[0] * image_size[1] / 1e6 if image_size else table.native_megapixels
    return megapixels * table.bytes_per_megapixel


def estimate_work(
    *, batches: list[FrameBatch], sample_scenes: int, sample_scene_s: float = 0.0, channels: int, cameras: int, keyframe_hz: float,
    undistort: bool, sweep_hz: int, label_scene_s: float, label_scenes: int, label_gpu: bool, merge_scenes: int,
    merge_parts: int, can_bus: bool, sampling: Calibration, labelling: Calibration, merging: Calibration, table: CostTable,
    label_model_s: float = 0.0, label_basis: str = "",
) -> BuildWork:
    """The work a build is expected to do: the frame batches of the sample_scenes scenes not cached
    for the sampling profile; label_scenes scenes (label_scene_s seconds of scene time) without
    labels of the model; merge_scenes scenes in merge_parts parts to merge. Sampling and merge
    seconds: the table's model × the calibration; labelling: label_model_s (the table's seconds for
    those scenes' images, CostTable.label_seconds; label_basis says which figures) × its calibration."""
    frames, model_s = sampling_seconds(batches, table, undistort, sweep_hz)
    pixels = sum(b.frames * b.output_megapixels for b in batches if b.output_megapixels > 0)
    camera_frames = sum(b.frames for b in batches if b.output_megapixels > 0)
    megapixels = pixels / camera_frames if camera_frames else table.native_megapixels
    sampling_s = model_s * sampling.factor
    per_frame = f"{sampling_s / frames:.3g} s a frame at {megapixels:.3g} MP, " if frames else ""
    merge_s = table.merge_seconds(merge_parts, merge_scenes) * merging.factor
    return BuildWork(
        frames=frames, sampled_scenes=sample_scenes, sampling_s=sampling_s, sampled_scene_s=sample_scene_s,
        copied_frames=sum(b.frames for b in batches if b.copied),
        labelled_scenes=label_scenes, label_images=int(round(label_scene_s * keyframe_hz)) * cameras,
        label_s=label_model_s * labelling.factor, label_gpu=label_gpu,
        merged_scenes=merge_scenes, merged_parts=merge_parts, merge_s=merge_s,
        channels=channels, can_bus=can_bus, bytes_per_frame=megapixels * table.bytes_per_megapixel,
        bases={"sampling": per_frame + sampling.basis, "autolabel": f"{label_basis}, {labelling.basis}" if label_scenes else "",
               "merge": f"{table.merge_seconds_per_part:g} s a part + {table.merge_seconds_per_scene:g} s a scene, "
                        + merging.basis},
    )


def budget_message(estimate_usd: float, budget_usd: float) -> str:
    """Why a build over its budget stops, with both amounts shown to the precision that tells
    them apart (never "$0.00 exceeds the budget $0.00")."""
    est, budget = format_usd(estimate_usd), format_usd(budget_usd)
    for extra in range(1, 10):
        if est != budget:
            break
        est, budget = _precise_usd(estimate_usd, extra), _precise_usd(budget_usd, extra)
    return (f"estimated cost {est} exceeds the budget {budget}; narrow the filter, lower max_scenes or raise "
            "budget_usd")


def _precise_usd(amount: float, extra: int) -> str:
    if abs(amount) >= 1:
        return f"${amount:,.{2 + extra}f}"
    return _significant_usd(amount, 3 + extra)


def format_usd(amount: float) -> str:
    """An amount for people: cents from a dollar up ($12.34), three significant digits below
    ($0.00123, never in exponent notation); zero is $0."""
    return f"${amount:,.2f}" if abs(amount) >= 1 else _significant_usd(amount, 3)


def _significant_usd(amount: float, digits: int) -> str:
    """$ and `digits` significant digits of an amount below a dollar, trailing zeros dropped."""
    if amount == 0:
        return "$0"
    decimals = max(2, digits - 1 - math.floor(math.log10(abs(float(f"{amount:.{digits}g}")))))
    return "$" + f"{amount:.{decimals}f}".rstrip("0").rstrip(".")


class ChunkMeter:
    """A compute backend (anything with run_chunks) that adds up how long its chunk workers ran:
    ChunkOutcome.seconds, on AWS Batch each job's or child's stoppedAt - startedAt. job_s is that
    sum where jobs are what is billed (bills_jobs: AWS Batch), 0 elsewhere; local builds are priced
    by the seconds the workers measured per scene and part instead (their process start-up is
    this machine's, not a bill's)."""

    def __init__(self, backend, bills_jobs: bool):
        self._backend = backend
        self.bills_jobs = bills_jobs
        self.seconds = 0.0
        self.chunks = 0

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def run_chunks(self, *args, **kwargs):
        outcomes = self._backend.run_chunks(*args, **kwargs)
        self.seconds += sum(outcome.seconds for outcome in outcomes)
        self.chunks += len(outcomes)
        return outcomes

    @property
    def job_s(self) -> float:
        return self.seconds if self.bills_jobs else 0.0
