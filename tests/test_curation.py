import re
import time

import pandas as pd
import pytest

from jadd_dagster.curation import FilterError, select_scenes
from jadd_dagster.spec import SpecError, parse_spec


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


def test_a_type_mismatch_is_refused_with_the_spec():
    with pytest.raises(SpecError, match="^scene_filter: cannot order text against number"):
        parse_spec({"name": "t", "scene_filter": "location > 3"})


def test_text_compares_with_text_and_lists_take_negative_numbers():
    assert ids({"scene_filter": "scene_id >= 'log-a/0002' and max_decel_mps2 in [-1, 3.0, 4.5]"}) == [
        "log-a/0003", "log-a/0002"]


# Untrusted filters (issue 9, item 6): refused as field errors before any work, whatever the catalog.


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("'a' * 99999999999 == 'a'", "arithmetic takes numbers"),
        ("log_id * 300000000 == 'x'", "arithmetic takes numbers"),
        ("location + location == 'x'", "arithmetic takes numbers"),
        ("not " * 5000 + "hour > 1", "at most 4000"),
        ("not " * 100 + "hour > 1", "nested more than 40 levels"),
        ("(" * 300 + "hour" + ")" * 300 + " > 1", "not a valid expression|nested"),
        ("1/0 == 1", "division by zero"),
        ("hour in [" + ", ".join(str(i) for i in range(1_000_000)) + "]", "at most 4000"),
        ("hour in [" + ", ".join(str(i) for i in range(600)) + "]", "600 items, at most 500"),
        ("location == '" + "x" * 300 + "'", "300 characters, at most 256"),
        ("start_time_us > 10 ** 3", "not allowed"),
        ("start_time_us > 99999999999999999999", "does not fit 64 bits"),
        ("not location", "conditions, not text"),
        ("location", "must be a condition"),
        ("hour in [hour]", "constants"),
    ],
)
def test_a_hostile_filter_is_a_field_error_at_validation(expression, reason):
    started = time.monotonic()
    with pytest.raises(SpecError) as error:
        parse_spec({"name": "t", "scene_filter": expression})
    assert time.monotonic() - started < 2
    message = str(error.value)
    assert message.startswith("scene_filter: ") and re.search(reason, message), message
    assert len(message) < 500


def test_an_evaluation_error_on_the_real_catalog_names_the_filter():
    odd = catalog().assign(hour=["1", "2", "3", "4"])  # a text column where a number belongs
    spec = parse_spec({"name": "t", "scene_filter": "hour * 300000000 == 'x'"})
    with pytest.raises(FilterError, match="^scene_filter: arithmetic takes numbers"):
        select_scenes(odd, spec)
    with pytest.raises(FilterError, match="^scene_filter: types do not match"):
        select_scenes(odd, parse_spec({"name": "t", "scene_filter": "hour > 3"}))
