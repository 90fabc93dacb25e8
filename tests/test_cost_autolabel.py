"""Auto-labelling's estimate follows the images a scene labels (keyframes × cameras) and their size,
both the table's fallback and the calibration from what earlier builds measured; a profile that
still gives a flat figure a scene keeps it."""

import pandas as pd
import pytest

from jadd_dagster.cost import CostTable, CostTableError
from jadd_dagster.defs.autolabel_assets import label_cache
from jadd_dagster.defs.cost_report import plan_costing
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource
from jadd_dagster.layout import STAGE_AUTOLABELED
from jadd_dagster.planning import CostInputs, make_plan
from jadd_dagster.registry import SceneOutput
from jadd_dagster.spec import parse_spec

CAMERAS = ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"]
TABLE = CostTable(usd_per_cpu_hour=3.6, autolabel_seconds_per_image={"baseline": 0.01},
                  autolabel_seconds_per_megapixel={"baseline": 0.5})


def catalog(log_id: str, scenes: int, size: tuple[int, int], seconds: float = 20.0) -> pd.DataFrame:
    sizes = ",".join(f"{c}={size[0]}x{size[1]}" for c in CAMERAS)
    return pd.DataFrame([{
        "scene_id": f"{log_id}/{i:04d}", "log_id": log_id, "scene_index": i, "location": "here", "vehicle": "v",
        "channels": ",".join(CAMERAS), "camera_sizes": sizes, "start_time_us": int(i * seconds * 1e6),
        "end_time_us": int((i + 1) * seconds * 1e6), "duration_s": seconds, "has_gap": False} for i in range(scenes)])


def spec(channels=CAMERAS, **changes):
    return parse_spec({"name": "labelled", "channels": list(channels), "keyframe_hz": 2, "sweep_hz": 2,
                       "undistort": True, "autolabel": True, **changes})


def label_work(s, scenes: pd.DataFrame, table: CostTable = TABLE, costing=None) -> dict:
    costing = costing or (lambda ids, sizes, streams: CostInputs(table, camera_sizes=sizes))
    return make_plan(s, scenes, PipelineSettings(cost=table.to_mapping()), None, "run", costing).estimate


def test_the_fallback_follows_the_keyframes_the_cameras_and_their_pixels():
    scenes = catalog("log", 2, (320, 180))
    # By hand: 2 scenes × 40 keyframes × 3 cameras, each 0.01 s plus 0.5 s a megapixel of 320x180.
    three = label_work(spec(), scenes)
    assert three["work"]["label_s"] == pytest.approx(2 * 40 * 3 * (0.01 + 0.5 * 0.0576))
    assert three["components"]["autolabel"] == pytest.approx(three["work"]["label_s"] * 3.6 / 3600)
    one = label_work(spec(channels=CAMERAS[:1]), scenes)
    assert one["work"]["label_s"] == pytest.approx(three["work"]["label_s"] / 3)
    larger = label_work(spec(image_width=640, image_height=360), scenes)
    assert larger["work"]["label_s"] == pytest.approx(2 * 40 * 3 * (0.01 + 0.5 * 0.2304))
    shorter = label_work(spec(), catalog("log", 2, (320, 180), seconds=10.0))
    assert shorter["work"]["label_s"] == pytest.approx(2 * 20 * 3 * (0.01 + 0.5 * 0.0576))
    lines = {line["component"]: line for line in three["breakdown"]["lines"]}
    assert lines["autolabel"]["basis"] == "0.01 s an image + 0.5 s a megapixel, table"


def test_a_profile_with_a_flat_figure_a_scene_keeps_it():
    old = CostTable.from_mapping({"autolabel_seconds_per_scene": {"baseline": 23.0}, "usd_per_cpu_hour": 3.6})
    work = label_work(spec(), catalog("log", 2, (320, 180)), old)
    assert work["work"]["label_s"] == pytest.approx(2 * 23.0)
    assert {line["component"]: line["basis"] for line in work["breakdown"]["lines"]}["autolabel"] == "23 s a scene, table"
    # A model it does not name: per image, unless the profile's default is flat too.
    assert old.label_seconds("yolo", 120, 0.0) == pytest.approx(120 * CostTable().default_autolabel_seconds_per_image)
    flat = CostTable.from_mapping({"default_autolabel_seconds_per_scene": 7.0})
    assert flat.label_seconds("yolo", 120, 1.0) == 7.0 and flat.label_seconds("baseline", 120, 0.0) == pytest.approx(120 * 0.005)
    assert CostTable.from_mapping(flat.to_mapping()) == flat and "default_autolabel_seconds_per_scene" not in CostTable().to_mapping()


@pytest.mark.parametrize("key, value, message", [
    ("autolabel_seconds_per_image", 0.005, r"cost.autolabel_seconds_per_image: expected a mapping of model name to seconds"),
    ("autolabel_seconds_per_megapixel", {"baseline": "fast"}, r"cost.autolabel_seconds_per_megapixel.baseline: expected a number"),
    ("autolabel_seconds_per_frame", {"baseline": 1.0}, r"cost: unknown key\(s\) \['autolabel_seconds_per_frame'\]"),
])
def test_a_bad_labelling_figure_is_refused_naming_the_key(key, value, message):
    with pytest.raises(CostTableError, match=message):
        CostTable.from_mapping({key: value})


def test_measured_labelling_calibrates_per_image_and_pixel_not_per_scene(tmp_path):
    """Scenes labelled at 1.5-2.5 times the table's seconds for their small images: a build of larger
    images is estimated at the median factor times the table at its own size, not at the seconds
    the small scenes took."""
    s = spec()
    models = AutolabelModels()
    registry = RegistryResource(url=f"sqlite:///{tmp_path}/r.db")
    _, _, label_key = label_cache(s, models)
    small = 40 * 3 * (0.01 + 0.5 * 0.0144)  # a 20 s scene of 160x90 images
    registry.registry().record_scene_outputs([
        SceneOutput(f"small/{i:04d}", STAGE_AUTOLABELED, label_key, f"l{i}", 9, factor * small)
        for i, factor in enumerate([1.5, 2.0, 2.5])])
    settings = PipelineSettings(cost=TABLE.to_mapping())
    costing = plan_costing(s, registry, models, settings)
    small_sizes = {"small": {c: (160, 90) for c in CAMERAS}}

    def with_small_logs(ids, sizes, streams):
        return costing(ids, {**sizes, **small_sizes}, streams)

    estimate = label_work(s, catalog("big", 2, (640, 360)), costing=with_small_logs)
    assert estimate["work"]["label_s"] == pytest.approx(2.0 * 2 * 40 * 3 * (0.01 + 0.5 * 0.2304))
    basis = {line["component"]: line["basis"] for line in estimate["breakdown"]["lines"]}["autolabel"]
    assert basis == "0.01 s an image + 0.5 s a megapixel, table × 2, median measured/table of 3 recent scenes"
