"""DatasetSpec: the parameters a user chooses for one dataset, with validation and profile hashes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jadd_dagster.logs.format import CAMERA_CHANNELS, LIDAR_CHANNELS

RATES_HZ = (2, 5, 10, 30)
CHANNELS = (*CAMERA_CHANNELS, *LIDAR_CHANNELS)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_RULE = "1-63 lower-case letters, digits, '-' or '_', starting with a letter or digit"
# The value sets of the fields that take one of a few values: the launchpad shows them as
# Dagster enums (defs/config.py), the spec refuses anything else.
CHOICES: dict[str, tuple] = {"keyframe_hz": RATES_HZ, "sweep_hz": RATES_HZ, "channels": CHANNELS}
# Optional numbers whose 0 means "none" (no limit, the camera's size, no budget): Dagster's launchpad
# pre-fills only defaults that are not null, so it shows and accepts 0 for them, and so does a spec.
ZERO_MEANS_NONE = ("max_scenes", "image_width", "image_height", "budget_usd")


class SpecError(ValueError):
    """A dataset spec that cannot be built, with messages that name the offending fields."""


class DatasetSpec(BaseModel):
    """What a user asks for: which scenes, how to sample them, and how to package the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description=f"Dataset name: {NAME_RULE}. It is the `datasets` partition key and part of the "
        "nuScenes version folder (v1.0-<name>).",
    )
    description: str = Field(default="", description="Free text shown in the registry.")
    scene_filter: str = Field(
        default="",
        description="Boolean expression over scene_catalog columns, e.g. "
        "\"mean_speed_mps > 8 and location == 'tokyo-odaiba'\". Empty selects every scene. "
        "Operators: comparisons, and/or/not, in [...], arithmetic.",
    )
    include_scenes: list[str] = Field(
        default=[], description="Scene ids ('<log_id>/<index>') always included, filter or not."
    )
    exclude_scenes: list[str] = Field(default=[], description="Scene ids never included.")
    max_scenes: int | None = Field(
        default=None, ge=1, description="Keep at most this many scenes (earliest first); 0 (or none) = no limit."
    )
    channels: list[str] = Field(
        default=["CAM_FRONT"],
        description=f"Channels to sample: cameras ({', '.join(CAMERA_CHANNELS)}) and optionally "
        f"{', '.join(LIDAR_CHANNELS)} (the sweep nearest each keyframe, for logs that have one).",
    )
    keyframe_hz: int = Field(default=2, description="Keyframe (nuScenes sample) rate in Hz: 2, 5, 10 or 30; at most sweep_hz.")
    sweep_hz: int = Field(
        default=10, description="Rate of all sampled frames in Hz (keyframes plus sweeps): 2, 5, 10 or 30; "
        "a multiple of keyframe_hz."
    )
    undistort: bool = Field(default=True, description="Rectify images to a pinhole camera (zero distortion).")
    image_width: int | None = Field(
        default=None, ge=16, le=7680,
        description="Output width in pixels, 16-7680, with image_height; 0 (or none) keeps the camera's size."
    )
    image_height: int | None = Field(
        default=None, ge=16, le=4320,
        description="Output height in pixels, 16-4320, with image_width; 0 (or none) keeps the camera's size."
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG quality 1-100.")
    autolabel: bool = Field(
        default=False, description="Auto-label 3D boxes of vehicles and pedestrians (cached per scene and model version)."
    )
    autolabel_model: str = Field(
        default="baseline", description="Auto-label model, by its name in the deployment profile ('baseline' is built in)."
    )
    include_can_bus: bool = Field(default=True, description="Write can_bus/ files in the devkit's format.")
    val_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="Share of scenes in the 'jadd-val' split of splits.json, 0-1 (the rest: 'jadd-train').",
    )
    budget_usd: float | None = Field(
        default=None, gt=0,
        description="Refuse to build when the estimated compute cost exceeds this (USD, above 0); 0 (or none) = no budget."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not is_valid_name(name):
            raise ValueError(f"{name!r} is not a dataset name: use {NAME_RULE}")
        return name

    @field_validator(*ZERO_MEANS_NONE, mode="before")
    @classmethod
    def _zero_is_none(cls, value):
        return None if value == 0 and not isinstance(value, bool) else value

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, channels: list[str]) -> list[str]:
        unknown = [c for c in channels if c not in CHANNELS]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; choose from {list(CHANNELS)}")
        if not [c for c in channels if c in CAMERA_CHANNELS]:
            raise ValueError("choose at least one camera channel")
        if len(set(channels)) != len(channels):
            raise ValueError("a channel is listed twice")
        return channels

    @field_validator("scene_filter")
    @classmethod
    def _valid_filter(cls, expression: str) -> str:
        from jadd_dagster.curation import FilterError, check_filter

        try:
            check_filter(expression)
        except FilterError as error:
            raise ValueError(str(error).removeprefix("scene_filter: ")) from None
        return expression

    @field_validator("keyframe_hz", "sweep_hz")
    @classmethod
    def _supported_rate(cls, rate: int) -> int:
        if rate not in RATES_HZ:
            raise ValueError(f"{rate} Hz is not supported; choose one of {list(RATES_HZ)} Hz")
        return rate

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSpec":
        if self.sweep_hz < self.keyframe_hz or self.sweep_hz % self.keyframe_hz:
            raise ValueError(
                f"sweep_hz ({self.sweep_hz}) must be a multiple of keyframe_hz ({self.keyframe_hz})"
            )
        if (self.image_width is None) != (self.image_height is None):
            raise ValueError("set both image_width and image_height, or neither")
        overlap = set(self.include_scenes) & set(self.exclude_scenes)
        if overlap:
            raise ValueError(f"scenes both included and excluded: {sorted(overlap)}")
        return self

    @property
    def image_size(self) -> tuple[int, int] | None:
        if self.image_width is None or self.image_height is None:
            return None
        return (self.image_width, self.image_height)

    def spec_hash(self) -> str:
        """Stable 12-hex hash of everything that changes the dataset's content."""
        content = self.model_dump(exclude={"description", "budget_usd"})
        return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def check_model_name(spec: DatasetSpec, known_names: Iterable[str]) -> None:
    """Refuse a spec that auto-labels with a model the deployment profile does not offer.

    known_names are the profile's model names (`autolabel.models`); the model names are not part
    of the spec, so this runs where the profile is known, with the rest of the spec's checks.
    Raises SpecError naming the field, e.g. "autolabel_model: unknown model 'nope'; ...".
    """
    names = sorted(known_names)
    if spec.autolabel and spec.autolabel_model not in names:
        raise SpecError(
            f"autolabel_model: unknown model {spec.autolabel_model!r}; the deployment profile offers {names}"
        )


def spec_errors(error: ValidationError) -> str:
    """One line per problem, each naming its field, for people rather than for pydantic."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "spec"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{field}: {message}")
    return "\n".join(lines)


def parse_spec(data: dict) -> DatasetSpec:
    """Validate a spec mapping, raising SpecError with one line per bad field."""
    if not isinstance(data, dict):
        raise SpecError("spec: expected a mapping of parameter names to values")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(spec_errors(error)) from None


def load_spec(path: Path) -> DatasetSpec:
    """Read a YAML dataset spec file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    try:
        return parse_spec(data)
    except SpecError as error:
        raise SpecError(f"{path}:\n{error}") from None


def is_valid_name(name: str) -> bool:
    """Whether name can be a dataset name (NAME_RULE): the `datasets` partition keys are these."""
    return isinstance(name, str) and re.fullmatch(NAME_PATTERN, name) is not None
