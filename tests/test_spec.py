import pytest
import yaml

from jadd_dagster.spec import DatasetSpec, SpecError, check_model_name, load_spec, parse_spec


def test_defaults_make_a_valid_spec():
    spec = parse_spec({"name": "city-night"})
    assert spec.channels == ["CAM_FRONT"]
    assert (spec.keyframe_hz, spec.sweep_hz) == (2, 10)
    assert spec.undistort is True and spec.image_size is None


@pytest.mark.parametrize(
    "change, field",
    [
        ({"name": "Bad Name"}, "name"),
        ({"keyframe_hz": 3}, "keyframe_hz"),
        ({"channels": ["CAM_TOP"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"scene_filter": "speed > 3"}, "scene_filter"),
        ({"scene_filter": "mean_speed_mps >"}, "scene_filter"),
        ({"scene_filter": "__import__('os').system('true')"}, "scene_filter"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_the_field(change, field):
    with pytest.raises(SpecError) as error:
        parse_spec({"name": "ok", **change})
    assert str(error.value).startswith(f"{field}:"), str(error.value)


def test_sweep_rate_must_be_a_multiple_of_the_keyframe_rate():
    with pytest.raises(SpecError, match="multiple of keyframe_hz"):
        parse_spec({"name": "ok", "keyframe_hz": 10, "sweep_hz": 5})
    with pytest.raises(SpecError, match="multiple of keyframe_hz"):
        parse_spec({"name": "ok", "keyframe_hz": 5, "sweep_hz": 2})


def test_image_size_needs_both_width_and_height():
    with pytest.raises(SpecError, match="image_width and image_height"):
        parse_spec({"name": "ok", "image_width": 640})


def test_autolabel_names_a_model():
    spec = parse_spec({"name": "ok", "autolabel": True})
    assert spec.autolabel and spec.autolabel_model == "baseline"


def test_an_unknown_channel_is_named():
    with pytest.raises(SpecError, match=r"^channels: unknown channel\(s\) \['CAM_NOWHERE'\]"):
        parse_spec({"name": "ok", "channels": ["CAM_NOWHERE"]})
    with pytest.raises(SpecError, match="^channels: choose at least one camera channel"):
        parse_spec({"name": "ok", "channels": ["LIDAR_TOP"]})


def test_a_model_the_profile_does_not_offer_is_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"^autolabel_model: unknown model 'nope'; the deployment profile offers \['baseline', 'yolo'\]"):
        check_model_name(parse_spec({"name": "ok", "autolabel": True, "autolabel_model": "nope"}), ["yolo", "baseline"])
    check_model_name(parse_spec({"name": "ok", "autolabel": True, "autolabel_model": "yolo"}), {"yolo": {}, "baseline": {}})
    check_model_name(parse_spec({"name": "ok", "autolabel_model": "nope"}), ["baseline"])  # not labelling: unused


def test_spec_hash_changes_with_content_but_not_with_description():
    a = parse_spec({"name": "ok"})
    assert a.spec_hash() == parse_spec({"name": "ok", "description": "other words"}).spec_hash()
    assert a.spec_hash() != parse_spec({"name": "ok", "sweep_hz": 30}).spec_hash()


def test_load_spec_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "ok", "sweep_hz": 7}))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(path) in str(error.value) and "sweep_hz" in str(error.value)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_every_parameter_has_a_description():
    assert all(f.description for f in DatasetSpec.model_fields.values())


def test_the_readme_documents_every_parameter():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [n for n in DatasetSpec.model_fields if f"`{n}`" not in readme]
    assert not missing


def test_zero_means_none_for_the_optional_numbers():
    spec = parse_spec({"name": "ok", "max_scenes": 0, "image_width": 0, "image_height": 0, "budget_usd": 0})
    assert (spec.max_scenes, spec.image_size, spec.budget_usd) == (None, None, None)
    assert spec.spec_hash() == parse_spec({"name": "ok"}).spec_hash()  # the same dataset as leaving them out
    with pytest.raises(SpecError, match="^max_scenes:"):
        parse_spec({"name": "ok", "max_scenes": -1})


def test_a_bad_name_is_refused_with_the_naming_rule():
    for name in ("../evil", "Demo", "-x", "a" * 64, "a b"):
        with pytest.raises(SpecError, match=r"^name: .* is not a dataset name: use 1-63 lower-case letters"):
            parse_spec({"name": name})
    assert parse_spec({"name": "a" * 63}).name == "a" * 63


def test_the_launchpads_text_rates_give_the_same_spec():
    assert parse_spec({"name": "ok", "keyframe_hz": "5", "sweep_hz": "10"}) == parse_spec(
        {"name": "ok", "keyframe_hz": 5, "sweep_hz": 10})
