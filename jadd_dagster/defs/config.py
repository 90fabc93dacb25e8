"""Run config of the assets, derived from DatasetSpec so the launchpad shows its fields, defaults,
value sets and descriptions, and always validated by DatasetSpec itself.

What Dagster's config schema can say, it says, so the launchpad refuses it before launch: the rates
and channels are enums of the spec's value sets (spec.CHOICES), every field has a default that
the launchpad pre-fills (0 for "none", spec.ZERO_MEANS_NONE) and a description. Dagster config has
no numeric bounds and no rules across fields (sweep_hz a multiple of keyframe_hz, both image sizes
or neither, a camera among the channels, the filter's syntax): those fields are plain types here,
and the first step of a run (spec_from_config) refuses them with the field named, before any work.
"""

import enum

import dagster as dg
import pydantic

from jadd_dagster.spec import CHOICES, ZERO_MEANS_NONE, DatasetSpec, SpecError, parse_spec

SAMPLING_FIELDS = ("channels", "keyframe_hz", "sweep_hz", "undistort", "image_width", "image_height", "jpeg_quality")


def _choice_enum(name: str, values: tuple) -> type[enum.Enum]:
    """A Python enum whose member names are the values as text: Dagster config enums are strings,
    so the launchpad takes keyframe_hz: '10' (quoted) and offers the four rates."""
    return enum.Enum(name, {str(v): v for v in values}, type=type(values[0]))


RATE_ENUM = _choice_enum("RateHz", CHOICES["keyframe_hz"])
CHANNEL_ENUM = _choice_enum("Channel", CHOICES["channels"])
ENUMS = {"keyframe_hz": RATE_ENUM, "sweep_hz": RATE_ENUM, "channels": CHANNEL_ENUM}


def _launchpad_field(name: str) -> tuple:
    """(annotation, FieldInfo) of one DatasetSpec field in the launchpad: no bounds (pydantic's
    would fail the run with a pydantic trace; DatasetSpec checks them with the field named)."""
    spec_field = DatasetSpec.model_fields[name]
    annotation, default = spec_field.annotation, spec_field.default
    if name in ENUMS:
        choice = ENUMS[name]
        if isinstance(default, list):
            annotation, default = list[choice], [str(v) for v in default]
        else:
            annotation, default = choice, choice[str(default)]
    elif name in ZERO_MEANS_NONE:
        annotation, default = (float if "usd" in name else int), 0
    description = spec_field.description
    if name in ENUMS:
        description += " (quoted in the launchpad: e.g. '10')" if annotation is RATE_ENUM else ""
    return annotation, pydantic.Field(default=default, description=description, validate_default=True)


def config_from_spec(name: str, fields: tuple[str, ...]) -> type[dg.Config]:
    """A dg.Config class with these DatasetSpec fields, in the launchpad's form."""
    return pydantic.create_model(name, __base__=dg.Config, **{n: _launchpad_field(n) for n in fields})


# Every DatasetSpec parameter except the name, which is the `datasets` partition key.
DatasetConfig = config_from_spec("DatasetConfig", tuple(n for n in DatasetSpec.model_fields if n != "name"))
SamplingConfig = config_from_spec("SamplingConfig", SAMPLING_FIELDS)
AutolabelConfig = config_from_spec("AutolabelConfig", (*SAMPLING_FIELDS, "autolabel_model"))


def config_values(spec: DatasetSpec, fields=None) -> dict:
    """The run config of a spec (its fields but the name) in the launchpad's form: enum values as
    text, 0 for none. What a schedule or `jadd build` passes to dataset_plan."""
    values = spec.model_dump(mode="json", exclude={"name"})
    for name in ENUMS:
        value = values[name]
        values[name] = [str(v) for v in value] if isinstance(value, list) else str(value)
    for name in ZERO_MEANS_NONE:
        if values[name] is None:
            values[name] = 0
    return values if fields is None else {n: values[n] for n in fields}


def spec_from_config(name: str, config: dg.Config, what: str | None = None, **overrides) -> DatasetSpec:
    """The DatasetSpec of a run config; a dg.Failure naming the bad fields if it is invalid."""
    try:
        return parse_spec({**config.model_dump(mode="json"), **overrides, "name": name})
    except SpecError as error:
        raise dg.Failure(f"{what or f'dataset spec {name!r}'} is invalid:\n{error}") from None
