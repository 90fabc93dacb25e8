"""Run config of the assets, derived from DatasetSpec so the launchpad shows its fields, defaults
and descriptions, and always validated by DatasetSpec itself."""

import dagster as dg
import pydantic

from jadd_dagster.spec import DatasetSpec, SpecError, parse_spec

SAMPLING_FIELDS = ("channels", "keyframe_hz", "sweep_hz", "undistort", "image_width", "image_height", "jpeg_quality")


def config_from_spec(name: str, fields: tuple[str, ...]) -> type[dg.Config]:
    """A dg.Config class with these DatasetSpec fields."""
    spec_fields = DatasetSpec.model_fields
    return pydantic.create_model(name, __base__=dg.Config, **{n: (spec_fields[n].annotation, spec_fields[n]) for n in fields})


# Every DatasetSpec parameter except the name, which is the `datasets` partition key.
DatasetConfig = config_from_spec("DatasetConfig", tuple(n for n in DatasetSpec.model_fields if n != "name"))
SamplingConfig = config_from_spec("SamplingConfig", SAMPLING_FIELDS)
AutolabelConfig = config_from_spec("AutolabelConfig", (*SAMPLING_FIELDS, "autolabel_model"))


def spec_from_config(name: str, config: dg.Config, what: str | None = None, **overrides) -> DatasetSpec:
    """The DatasetSpec of a run config; a dg.Failure naming the bad fields if it is invalid."""
    try:
        return parse_spec({**config.model_dump(), **overrides, "name": name})
    except SpecError as error:
        raise dg.Failure(f"{what or f'dataset spec {name!r}'} is invalid:\n{error}") from None
