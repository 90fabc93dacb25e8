import pandas as pd
import pytest

from jadd_dagster.curation import FilterError, select_scenes
from jadd_dagster.spec import parse_spec


def catalog() -> pd.DataFrame:
    rows = []
    for i, (speed, location) in enumerate([(2.0, "tokyo"), (12.0, "tokyo"), (25.0, "boston"), (8.0, "boston")]):
        rows.append({
            "scene_id": f"log-a/{i:04d}", "log_id": "log-a", "scene_index": i, "location": location,
            "channels": "CAM_FRONT,CAM_FRONT_LEFT", "start_time_us": 1_000_000 * (4 - i),
            "end_time_us": 1_000_000 * (5 - i), "mean_speed_mps": speed, "max_decel_mps2": i * 1.5,
            "duration_s": 20.0,
        })
    return pd.DataFrame(rows)


def ids(spec_data) -> list[str]:
    return select_scenes(catalog(), parse_spec({"name": "t", **spec_data})).scenes["scene_id"].tolist()


def test_empty_filter_selects_everything_in_time_order():
    assert ids({}) == ["log-a/0003", "log-a/0002", "log-a/0001", "log-a/0000"]


def test_filter_combines_comparisons_and_membership():
    assert ids({"scene_filter": "mean_speed_mps > 5 and location in ['tokyo']"}) == ["log-a/0001"]
    assert ids({"scene_filter": "not (location == 'boston') or max_decel_mps2 >= 4"}) == [
        "log-a/0003", "log-a/0001", "log-a/0000"]
    assert ids({"scene_filter": "5 < mean_speed_mps < 20"}) == ["log-a/0003", "log-a/0001"]


def test_include_and_exclude_lists_override_the_filter():
    assert ids({"scene_filter": "mean_speed_mps > 20", "include_scenes": ["log-a/0000"]}) == ["log-a/0002", "log-a/0000"]
    assert ids({"exclude_scenes": ["log-a/0002"]}) == ["log-a/0003", "log-a/0001", "log-a/0000"]


def test_max_scenes_keeps_the_earliest():
    result = select_scenes(catalog(), parse_spec({"name": "t", "max_scenes": 2}))
    assert result.scenes["scene_id"].tolist() == ["log-a/0003", "log-a/0002"]
    assert result.dropped_by_limit == 2


def test_scenes_without_the_requested_channels_are_left_out():
    assert ids({"channels": ["CAM_FRONT", "CAM_BACK"]}) == []


def test_missing_includes_are_reported():
    result = select_scenes(catalog(), parse_spec({"name": "t", "include_scenes": ["log-z/0001"]}))
    assert result.missing_includes == ["log-z/0001"]


def test_a_type_mismatch_is_a_filter_error():
    with pytest.raises(FilterError):
        select_scenes(catalog(), parse_spec({"name": "t", "scene_filter": "location > 3"}))
