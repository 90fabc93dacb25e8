"""The ONNX Runtime detector on tiny models built here with onnx.helper.

Each model sees a letterboxed, 0..1-normalised image and outputs fixed boxes (model-input pixels)
and scores equal to the mean of the red channel times a fixed weight per box and class. So the
expected detections follow from how the images and models are built: a uniform red image of value
v filling a fraction f of the model input scores v / 255 * f * weight.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jadd_dagster.autolabel import onnx_runner
from jadd_dagster.autolabel.base import Detection2D
from jadd_dagster.autolabel.onnx_runner import (
    BoxesScoresPostprocessor,
    LetterboxPreprocessor,
    OnnxDetector,
    ProviderFallbackWarning,
    make_detector,
)
from jadd_dagster.storage import LocalStore

CLASSES = ["vehicle.car", "human.pedestrian.adult", None]  # class 2: not wanted
INPUT = 64  # model input is INPUT×INPUT


def red_mean_model(boxes: list[list[float]], weights: list[list[float]], batch: int | str = "N") -> bytes:
    """boxes (N, K, 4) = the given boxes; scores (N, K, C) = mean(red channel) * weights."""
    box_array = np.asarray(boxes, dtype=np.float32)[None]
    weight_array = np.asarray(weights, dtype=np.float32)[None]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["channel_means"], axes=[2, 3], keepdims=0),
        helper.make_node("Gather", ["channel_means", "red_index"], ["red"], axis=1),
        helper.make_node("Reshape", ["red", "column"], ["red_n11"]),
        helper.make_node("Mul", ["red_n11", "weights"], ["scores"]),
        helper.make_node("Mul", ["red_n11", "zeros"], ["no_offset"]),
        helper.make_node("Add", ["no_offset", "fixed_boxes"], ["boxes"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "red_index"),
        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "column"),
        numpy_helper.from_array(weight_array, "weights"),
        numpy_helper.from_array(np.zeros_like(box_array), "zeros"),
        numpy_helper.from_array(box_array, "fixed_boxes"),
    ]
    k, c = weight_array.shape[1:]
    graph = helper.make_graph(
        nodes,
        "red_mean_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, INPUT, INPUT])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, k, c]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def save(tmp_path, model: bytes, name: str = "det.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(model)
    return str(path)


def detector(uri: str, score_threshold=0.3, iou_threshold=0.5, **kwargs) -> OnnxDetector:
    return OnnxDetector(
        uri,
        name="red-mean",
        version="1",
        preprocess=LetterboxPreprocessor(input_size=(INPUT, INPUT), pad_value=0),
        postprocess=BoxesScoresPostprocessor(CLASSES, score_threshold, iou_threshold),
        **kwargs,
    )


def red_image(width: int, height: int, red: int) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = red
    return image


def assert_detections(actual: list[Detection2D], expected: list[Detection2D]) -> None:
    assert [d.category for d in actual] == [d.category for d in expected]
    for a, e in zip(actual, expected):
        assert a.score == pytest.approx(e.score, abs=1e-5)
        assert np.allclose(a.box, e.box, atol=1.0), (a.box, e.box)


# One box in model-input pixels; a 128×64 image letterboxes to scale 0.5 with 16 px bars above
# and below, so the box is (8 / 0.5, (20 - 16) / 0.5, 40 / 0.5, (36 - 16) / 0.5) in the image.
ONE_BOX = [[8.0, 20.0, 40.0, 36.0]]
ONE_BOX_IN_IMAGE = (16.0, 8.0, 80.0, 40.0)
PEDESTRIAN = [[0.0, 1.0, 0.0]]


def test_box_maps_back_through_the_letterbox_with_the_class_category(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN)))
    # The image fills half the model input (the bars are 0): red mean 0.5.
    [found] = det.detect([red_image(128, 64, 255)])
    assert_detections(found, [Detection2D(ONE_BOX_IN_IMAGE, 0.5, "human.pedestrian.adult")])


def test_tall_image_letterboxes_with_side_bars(tmp_path):
    # 32×128: scale 0.5, image 16 px wide with 24 px bars left and right.
    box = [[26.0, 8.0, 38.0, 40.0]]
    det = detector(save(tmp_path, red_mean_model(box, [[2.0, 0.0, 0.0]])))
    [found] = det.detect([red_image(32, 128, 255)])
    assert_detections(found, [Detection2D((4.0, 16.0, 28.0, 80.0), 2.0 * 16 / 64, "vehicle.car")])


def test_score_threshold_drops_weak_detections(tmp_path):
    uri = save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN))
    images = [red_image(128, 64, 0), red_image(128, 64, 102), red_image(128, 64, 255)]
    # Scores 0, 0.2 and 0.5.
    assert [len(d) for d in detector(uri, score_threshold=0.3).detect(images)] == [0, 0, 1]
    low = detector(uri, score_threshold=0.1).detect(images)
    assert [len(d) for d in low] == [0, 1, 1]
    assert low[1][0].score == pytest.approx(102 / 255 * 0.5, abs=1e-5)


def test_unwanted_classes_are_dropped(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, [[0.1, 0.0, 0.9]])))
    assert det.detect([red_image(128, 64, 255)]) == [[]]


OVERLAPPING = [[0.0, 0.0, 32.0, 32.0], [2.0, 2.0, 34.0, 34.0], [40.0, 40.0, 60.0, 60.0]]  # IoU(0, 1) = 900 / 1148


def test_nms_suppresses_the_weaker_of_overlapping_boxes(tmp_path):
    weights = [[1.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.8, 0.0, 0.0]]
    uri = save(tmp_path, red_mean_model(OVERLAPPING, weights))
    square = red_image(INPUT, INPUT, 255)  # no letterbox: boxes are already image pixels
    [found] = detector(uri, iou_threshold=0.5).detect([square])
    assert_detections(
        found,
        [Detection2D(tuple(OVERLAPPING[0]), 1.0, "vehicle.car"), Detection2D(tuple(OVERLAPPING[2]), 0.8, "vehicle.car")],
    )
    [loose] = detector(uri, iou_threshold=0.9).detect([square])
    assert [d.score for d in loose] == pytest.approx([1.0, 0.9, 0.8], abs=1e-5)


def test_nms_does_not_suppress_across_categories(tmp_path):
    weights = [[1.0, 0.0, 0.0], [0.0, 0.9, 0.0], [0.8, 0.0, 0.0]]
    uri = save(tmp_path, red_mean_model(OVERLAPPING, weights))
    [found] = detector(uri).detect([red_image(INPUT, INPUT, 255)])
    assert [(d.category, round(d.score, 4)) for d in found] == [
        ("vehicle.car", 1.0),
        ("human.pedestrian.adult", 0.9),
        ("vehicle.car", 0.8),
    ]


IMAGES = [red_image(128, 64, 255), red_image(64, 128, 51), red_image(128, 64, 153)]
# Every image fills half the model input: scores 0.5, 0.1, 0.3 (at or above threshold 0.05).
EXPECTED_SCORES = [0.5, 0.1, 0.3]


@pytest.mark.parametrize("batch", ["N", 1, 2])
def test_batches_give_the_same_results_as_one_by_one(tmp_path, batch):
    """A dynamic batch dimension with a partial last batch, and fixed batch dimensions: 1 (run
    one by one), and 2 (the last batch is filled up and the fill dropped)."""
    uri = save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN, batch=batch))
    batched = detector(uri, score_threshold=0.05, batch_size=2).detect(IMAGES)
    one_by_one = [detector(uri, score_threshold=0.05).detect([image])[0] for image in IMAGES]
    assert [[d.score for d in found] for found in batched] == [pytest.approx([s], abs=1e-5) for s in EXPECTED_SCORES]
    assert batched == one_by_one
    assert np.allclose(batched[0][0].box, ONE_BOX_IN_IMAGE, atol=1.0)


def test_runs_in_chunks_of_batch_size(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN)), score_threshold=0.05, batch_size=2)
    sizes = []

    class CountingSession:
        def __init__(self, session):
            self.session = session

        def get_inputs(self):
            return self.session.get_inputs()

        def run(self, names, feeds):
            sizes.append(len(next(iter(feeds.values()))))
            return self.session.run(names, feeds)

    det._session = CountingSession(det.session)
    assert [len(found) for found in det.detect(IMAGES)] == [1, 1, 1]
    assert sizes == [2, 1]


def test_cuda_request_falls_back_to_cpu_with_a_warning(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN)), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert det.needs_gpu
    if "CUDAExecutionProvider" in ort.get_available_providers():  # a GPU machine: CUDA is used
        with warnings.catch_warnings():
            warnings.simplefilter("error", ProviderFallbackWarning)
            assert det.providers[0] == "CUDAExecutionProvider"
    else:
        with pytest.warns(ProviderFallbackWarning, match="CUDAExecutionProvider"):
            assert det.providers == ["CPUExecutionProvider"]
    [found] = det.detect([red_image(128, 64, 255)])
    assert_detections(found, [Detection2D(ONE_BOX_IN_IMAGE, 0.5, "human.pedestrian.adult")])


def test_detector_pickles_for_another_process_and_reloads_there(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN)))
    expected = det.detect([red_image(128, 64, 255)])
    copy = pickle.loads(pickle.dumps(det))
    assert copy.detect([red_image(128, 64, 255)]) == expected


def test_cpu_only_by_default_without_warning(tmp_path):
    det = detector(save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN)))
    assert not det.needs_gpu
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProviderFallbackWarning)
        assert det.providers == ["CPUExecutionProvider"]


def test_loads_the_model_from_an_object_store_by_uri(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_bytes("models/det.onnx", red_mean_model(ONE_BOX, PEDESTRIAN))
    det = detector(f"{store.url}/models/det.onnx")
    [found] = det.detect([red_image(128, 64, 255)])
    assert_detections(found, [Detection2D(ONE_BOX_IN_IMAGE, 0.5, "human.pedestrian.adult")])


def test_s3_uri_is_split_into_store_url_and_key(monkeypatch):
    opened = []

    class Store:
        def __init__(self, url):
            opened.append(url)

        def get_bytes(self, key):
            opened.append(key)
            return b"model"

    monkeypatch.setattr("jadd_dagster.storage.open_store", Store)
    assert onnx_runner.read_model_bytes("s3://bucket/models/yolo.onnx") == b"model"
    assert opened == ["s3://bucket/models", "yolo.onnx"]


def test_missing_model_is_a_clear_error_on_first_use_not_at_construction(tmp_path):
    missing = tmp_path / "nowhere" / "det.onnx"
    det = detector(str(missing))  # no I/O yet
    with pytest.raises(FileNotFoundError, match="nowhere/det.onnx"):
        det.detect([red_image(64, 64, 255)])
    store = LocalStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="models/absent.onnx"):
        detector(f"{store.url}/models/absent.onnx").detect([red_image(64, 64, 255)])


def test_make_detector_from_plug_in_names(tmp_path):
    uri = save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN))
    det = make_detector(
        {
            "uri": uri,
            "name": "red-mean",
            "version": 3,
            "preprocess": "letterbox",
            "input_size": [INPUT, INPUT],
            "pad_value": 0,
            "postprocess": "boxes_scores",
            "class_names": CLASSES,
            "score_threshold": 0.4,
            "batch_size": 2,
        }
    )
    assert (det.name, det.version, det.batch_size) == ("red-mean", "3", 2)
    found = det.detect([red_image(128, 64, 255), red_image(128, 64, 153)])  # scores 0.5 and 0.3
    assert_detections(found[0], [Detection2D(ONE_BOX_IN_IMAGE, 0.5, "human.pedestrian.adult")])
    assert found[1] == []


def test_make_detector_rejects_unknown_plug_ins_and_options(tmp_path):
    base = {"uri": "m.onnx", "name": "d", "version": "1", "class_names": CLASSES}
    with pytest.raises(ValueError, match="unknown preprocess plug-in 'resize'"):
        make_detector({**base, "preprocess": "resize"})
    with pytest.raises(ValueError, match="score_treshold"):
        make_detector({**base, "score_treshold": 0.2})
    with pytest.raises(ValueError, match="version"):
        make_detector({"uri": "m.onnx", "name": "d"})


def test_letterbox_normalises_and_pads():
    pre = LetterboxPreprocessor(input_size=(8, 4), mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), pad_value=114)
    image = np.full((4, 4, 3), (50, 60, 80), dtype=np.uint8)  # 4×4 into 8×4: no resize, 2 px bars
    inputs, [meta] = pre([image])
    batch = inputs["images"]
    assert batch.shape == (1, 3, 4, 8) and batch.dtype == np.float32
    assert (meta.scale, meta.pad_x, meta.pad_y) == (1.0, 2.0, 0.0)
    assert np.allclose(batch[0, :, :, 2:6], np.array([20.0, 10.0, 10.0])[:, None, None])
    assert np.allclose(batch[0, :, :, :2], np.array([52.0, 23.5, 16.8])[:, None, None])


def test_label_cache_keys_change_with_the_model_version_and_the_labeller_version(monkeypatch):
    from jadd_dagster.autolabel import models

    pinned = "ab" * 32  # a pinned hash: the (absent) file is not read
    onnx_v3 = {"kind": "onnx", "uri": "nowhere/m.onnx", "version": "3", "sha256": pinned}
    assert models.model_key("yolo", onnx_v3) == f"yolo-v3-{pinned[:12]}-l{models.LABELLER_VERSION}"
    assert models.model_key("yolo", {**onnx_v3, "version": "4"}) != models.model_key("yolo", onnx_v3)
    before = models.model_key("baseline", {"kind": "baseline"})
    assert before == f"baseline-v{models.model_version({'kind': 'baseline'})}-l{models.LABELLER_VERSION}"
    monkeypatch.setattr(models, "LABELLER_VERSION", "99")
    assert models.model_key("baseline", {"kind": "baseline"}) != before


def test_replacing_the_model_file_under_the_same_version_changes_the_label_cache_key(tmp_path):
    import hashlib
    import os

    from jadd_dagster.autolabel import models

    first = red_mean_model(ONE_BOX, PEDESTRIAN)
    uri = save(tmp_path, first)
    config = {"kind": "onnx", "uri": uri, "version": "3"}
    key = models.model_key("yolo", config)
    assert key == f"yolo-v3-{hashlib.sha256(first).hexdigest()[:12]}-l{models.LABELLER_VERSION}"
    assert models.model_key("yolo", config) == key  # stable while the file is
    before = os.stat(uri)
    second = red_mean_model(ONE_BOX, [[0.0, 2.0, 0.0]])  # new weights, same version label and size
    assert len(second) == len(first)
    with open(uri, "r+b") as handle:  # rewritten in place, its timestamp then set back
        handle.write(second)
    os.utime(uri, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert models.model_key("yolo", config) == f"yolo-v3-{hashlib.sha256(second).hexdigest()[:12]}-l{models.LABELLER_VERSION}"
    store = LocalStore(tmp_path / "store")
    store.put_bytes("models/det.onnx", first)
    assert models.model_key("yolo", {**config, "uri": f"{store.url}/models/det.onnx"}) == key


def test_a_worker_refuses_a_model_file_that_is_not_the_one_its_labels_are_keyed_to(tmp_path):
    from jadd_dagster.autolabel import models

    uri = save(tmp_path, red_mean_model(ONE_BOX, PEDESTRIAN))
    config = {"kind": "onnx", "uri": uri, "version": "3", "input_size": [INPUT, INPUT], "pad_value": 0,
              "class_names": CLASSES}
    pinned = models.pinned_model(config)
    assert models.model_key("yolo", pinned) == models.model_key("yolo", config)
    [found] = models.make_detector("yolo", pinned).detect([red_image(128, 64, 255)])
    assert_detections(found, [Detection2D(ONE_BOX_IN_IMAGE, 0.5, "human.pedestrian.adult")])
    save(tmp_path, red_mean_model(ONE_BOX, [[0.0, 2.0, 0.0]]))  # replaced after the plan
    with pytest.raises(onnx_runner.ModelFileChanged, match="was replaced after the run was planned"):
        make_detector({**{k: v for k, v in pinned.items() if k != "kind"}, "name": "yolo"}).detect([red_image(64, 64, 1)])
    with pytest.raises(ValueError, match="64 lower-case hex"):
        models.model_key("yolo", {**config, "sha256": "not-a-hash"})


@pytest.mark.e2e
def test_an_onnx_model_from_the_profile_labels_a_dataset_end_to_end(tmp_path, monkeypatch):
    """A profile names an ONNX model; a build runs it in the workers, lifts and tracks its boxes."""
    import json

    import yaml
    from nuscenes.nuscenes import NuScenes

    from jadd_dagster.cli import main as jadd
    from jadd_dagster.sim import make_logs
    from profiles import use_profile

    # Whatever the image, one car low in the middle of it (320x180 letterboxes into 64x64 with 14 px
    # bars: model pixels (28, 30)-(36, 40) are image pixels (140, 80)-(180, 130)), scored 2 x red mean.
    uri = save(tmp_path, red_mean_model([[28.0, 30.0, 36.0, 40.0]], [[2.0, 0.0, 0.0]]))
    use_profile(tmp_path, monkeypatch, autolabel={"models": {"tiny": {
        "kind": "onnx", "uri": uri, "version": "7", "input_size": [INPUT, INPUT], "pad_value": 0,
        "class_names": CLASSES, "score_threshold": 0.1}}})
    make_logs(tmp_path / "logs", n_logs=1, minutes=0.4, seed=5, channels=("CAM_FRONT",), image_size=(320, 180))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "onnx", "channels": ["CAM_FRONT"], "sweep_hz": 2, "autolabel": True,
                                    "autolabel_model": "tiny"}))

    assert jadd(["build", "--spec", str(spec), "--logs", str(tmp_path / "logs"), "--workdir", str(tmp_path / "work")]) == 0
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["autolabel"]["model"] == "tiny" and summary["autolabel"]["computed"] == 1
    nusc = NuScenes(version=summary["versions"][0], dataroot=summary["dataroot"], verbose=False)
    # One car a few metres ahead at every keyframe, tracked into one instance that keeps up with the ego.
    assert len(nusc.sample_annotation) == len(nusc.sample) == 40 and len(nusc.instance) == 1
    assert nusc.get("category", nusc.instance[0]["category_token"])["name"] == "vehicle.car"
    for ann in nusc.sample_annotation:
        sample = nusc.get("sample", ann["sample_token"])
        pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["CAM_FRONT"])["ego_pose_token"])
        assert 4.0 < np.hypot(*(np.array(ann["translation"][:2]) - pose["translation"][:2])) < 12.0
