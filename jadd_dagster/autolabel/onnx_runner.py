"""A 2D detector that runs a real detection model with ONNX Runtime.

The model is a file given by path or URI: a local path, `file:///...`, or an object-store URL such
as `s3://bucket/models/yolo.onnx` (read with `open_store(<parent>).get_bytes(<name>)`). What differs
between model families (input size and normalisation, output layout, class list) lives in two
plug-ins, looked up by name so that a model is configured with plain strings:

    make_detector({"uri": "s3://bucket/models/det.onnx", "name": "det", "version": "2024-05",
                   "preprocess": "letterbox", "input_size": [640, 640],
                   "postprocess": "boxes_scores", "class_names": ["vehicle.car", None, ...],
                   "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})

Units: pixels throughout; boxes are x0, y0, x1, y1. The model sees images letterboxed to its input
size; the postprocessor maps boxes back to the pixels of the image as given.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from jadd_dagster.autolabel.base import Detection2D, Detector2D

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
GPU_PROVIDERS = {CUDA, "TensorrtExecutionProvider"}


class ProviderFallbackWarning(RuntimeWarning):
    """A requested execution provider (e.g. CUDA) is not available; the model runs without it."""


@dataclass(frozen=True)
class ImageMeta:
    """How one image was fitted into the model input: input = original * scale + pad (pixels)."""

    width: int
    height: int
    scale: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) in model-input pixels to pixels of the original image, clipped to it."""
        out = np.array(boxes, dtype=np.float64, copy=True)
        out[..., [0, 2]] = ((out[..., [0, 2]] - self.pad_x) / self.scale).clip(0, self.width)
        out[..., [1, 3]] = ((out[..., [1, 3]] - self.pad_y) / self.scale).clip(0, self.height)
        return out


class Preprocessor(Protocol):
    """Images (H×W×3 uint8 RGB) to the model's named inputs, with what is needed to map back.

    A single returned input is fed to a model with a single input whatever its name."""

    def __call__(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], list[ImageMeta]]: ...


class Postprocessor(Protocol):
    """The model's outputs (in its output order) for a batch to detections per image."""

    def __call__(self, outputs: list[np.ndarray], meta: list[ImageMeta]) -> list[list[Detection2D]]: ...


class LetterboxPreprocessor:
    """Resize keeping the aspect ratio, pad to input_size (W, H) centred, then NCHW float32.

    Pixel values become (value - mean) / std per RGB channel; the defaults map 0..255 to 0..1.
    """

    def __init__(
        self,
        input_size: Sequence[int] = (640, 640),
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (255.0, 255.0, 255.0),
        pad_value: int = 114,
        input_name: str = "images",
    ):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
        self.pad_value = pad_value
        self.input_name = input_name

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, ImageMeta]:
        import cv2

        in_w, in_h = self.input_size
        height, width = image.shape[:2]
        scale = min(in_w / width, in_h / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        canvas = np.full((in_h, in_w, 3), self.pad_value, dtype=np.uint8)
        if (new_w, new_h) == (width, height):
            resized = image
        else:
            resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        # The scale actually applied per axis differs from `scale` by rounding; x's is kept.
        return canvas, ImageMeta(width, height, new_w / width, float(pad_x), float(pad_y))

    def __call__(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], list[ImageMeta]]:
        canvases, meta = zip(*(self.letterbox(np.asarray(image)) for image in images))
        batch = np.stack(canvases).transpose(0, 3, 1, 2).astype(np.float32)
        return {self.input_name: (batch - self.mean) / self.std}, list(meta)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x0 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y0 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x1 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y1 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_threshold]
    return keep


class BoxesScoresPostprocessor:
    """For models with outputs boxes (N, K, 4) in model-input pixels x0,y0,x1,y1 and scores (N, K, C).

    Each candidate takes its best class; class_names[class id] is its nuScenes category, and a
    class named None (or '') is not wanted and dropped. Candidates under score_threshold are
    dropped, then NMS runs per category (classes mapped to one category suppress each other).
    """

    def __init__(
        self,
        class_names: Sequence[str | None],
        score_threshold: float = 0.3,
        iou_threshold: float = 0.5,
        boxes_output: int = 0,
        scores_output: int = 1,
    ):
        self.class_names = list(class_names)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.boxes_output = boxes_output
        self.scores_output = scores_output

    def __call__(self, outputs: list[np.ndarray], meta: list[ImageMeta]) -> list[list[Detection2D]]:
        boxes, scores = outputs[self.boxes_output], outputs[self.scores_output]
        if scores.shape[-1] != len(self.class_names):
            raise ValueError(f"the model scores {scores.shape[-1]} classes but {len(self.class_names)} class_names are given")
        return [self.image_detections(boxes[i], scores[i], meta[i]) for i in range(len(meta))]

    def image_detections(self, boxes: np.ndarray, scores: np.ndarray, meta: ImageMeta) -> list[Detection2D]:
        class_ids = scores.argmax(axis=-1)
        best = scores[np.arange(len(class_ids)), class_ids]
        wanted = np.array([bool(self.class_names[c]) for c in class_ids], dtype=bool)
        chosen = np.flatnonzero(wanted & (best >= self.score_threshold))
        original = meta.to_original(boxes[chosen])
        categories = [self.class_names[class_ids[i]] for i in chosen]
        detections = []
        for category in sorted(set(categories)):
            members = np.array([j for j, c in enumerate(categories) if c == category])
            for j in members[nms(original[members], best[chosen[members]], self.iou_threshold)]:
                box = tuple(float(v) for v in original[j])
                detections.append(Detection2D(box, float(best[chosen[j]]), category))
        return sorted(detections, key=lambda d: -d.score)


PREPROCESSORS: dict[str, Callable[..., Preprocessor]] = {"letterbox": LetterboxPreprocessor}
POSTPROCESSORS: dict[str, Callable[..., Postprocessor]] = {"boxes_scores": BoxesScoresPostprocessor}


def read_model_bytes(model_uri: str) -> bytes:
    """The model file's bytes from a local path, a `file://` URL, or a store URL (`s3://bucket/key`)."""
    from jadd_dagster.storage import open_store

    path = local_model_path(model_uri)
    if path is None:
        parent, _, name = model_uri.rpartition("/")
        if not name or parent.endswith(":/"):
            raise ValueError(f"model URI must name a file inside a store: {model_uri!r}")
        try:
            return open_store(parent).get_bytes(name)
        except FileNotFoundError:
            raise FileNotFoundError(f"ONNX model not found: {model_uri}") from None
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    return path.read_bytes()


def local_model_path(model_uri: str) -> Path | None:
    """The path of a model given as a local path or `file://` URL; None for a store URL."""
    if "://" in model_uri and not model_uri.startswith("file://"):
        return None
    return Path(model_uri.removeprefix("file://")).expanduser()


def model_file_sha256(model_uri: str) -> str:
    """sha256 (hex) of the model file's bytes, read each time (no cache could tell a file rewritten
    in place within one timestamp tick; hashing a 200 MB model takes about a second at most)."""
    path = local_model_path(model_uri)
    if path is None:
        return hashlib.sha256(read_model_bytes(model_uri)).hexdigest()
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"ONNX model not found: {path}") from None
    return digest.hexdigest()


class ModelFileChanged(ValueError):
    """The model file's content is not the one its labels' cache key was made for."""


def resolve_providers(requested: Sequence[str] | None) -> list[str]:
    """Requested providers that this onnxruntime build has, in the order asked, CPU always last
    as the fallback; a warning for each requested one that is missing."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    requested = list(requested or [CPU])
    missing = [p for p in requested if p not in available]
    if missing:
        message = (
            f"execution providers {missing} were requested but this onnxruntime build "
            f"({ort.__version__}) only has {sorted(available)}; running without them"
        )
        if CUDA in missing:
            message += " (for CUDA install onnxruntime-gpu matching the machine's CUDA and cuDNN)"
        logger.warning(message)
        warnings.warn(message, ProviderFallbackWarning, stacklevel=3)
    chosen = [p for p in requested if p in available and p != CPU]
    return chosen + [CPU]


class OnnxDetector(Detector2D):
    """A Detector2D backed by an ONNX model; the session is made on first use (no I/O before)."""

    def __init__(
        self,
        model_uri: str,
        name: str,
        version: str,
        preprocess: Preprocessor,
        postprocess: Postprocessor,
        providers: Sequence[str] | None = None,
        batch_size: int = 8,
        sha256: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.model_uri = model_uri
        self.name = name
        self.version = version
        self.sha256 = sha256  # when set, the file loaded must have this content (models.pinned_model)
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.requested_providers = list(providers) if providers else [CPU]
        self.needs_gpu = bool(GPU_PROVIDERS & set(self.requested_providers))
        self.batch_size = batch_size
        self._session = None

    def __getstate__(self):
        # An InferenceSession does not pickle; a detector sent to another process loads its own.
        return {**self.__dict__, "_session": None}

    @property
    def session(self):
        """The onnxruntime InferenceSession, loaded on first use."""
        if self._session is None:
            import onnxruntime as ort

            providers = resolve_providers(self.requested_providers)
            if CUDA in providers and hasattr(ort, "preload_dlls"):
                # onnxruntime-gpu[cuda,cudnn] (the GPU worker image) ships CUDA and cuDNN as pip
                # packages; this loads them from there before the session needs them.
                ort.preload_dlls()
            model = read_model_bytes(self.model_uri)
            if self.sha256 is not None and hashlib.sha256(model).hexdigest() != self.sha256:
                raise ModelFileChanged(
                    f"{self.model_uri}: the model file has sha256 {hashlib.sha256(model).hexdigest()}, but its "
                    f"labels are keyed to {self.sha256}: the file was replaced after the run was planned; "
                    "run again to label with the new file"
                )
            self._session = ort.InferenceSession(model, providers=providers)
            # onnxruntime-gpu falls back to CPU by itself when CUDA libraries fail to load.
            lost = [p for p in providers if p not in self._session.get_providers()]
            if lost:
                message = f"{self.model_uri}: providers {lost} failed to initialise; running on {self._session.get_providers()}"
                logger.warning(message)
                warnings.warn(message, ProviderFallbackWarning, stacklevel=2)
            logger.info("loaded %s on %s", self.model_uri, self._session.get_providers())
        return self._session

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses (loads the model if needed)."""
        return list(self.session.get_providers())

    def fixed_batch_size(self) -> int | None:
        """The model's batch dimension if it is fixed (e.g. 1 for many exported detectors)."""
        size = self.session.get_inputs()[0].shape[0]
        return size if isinstance(size, int) and size > 0 else None

    def feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model_inputs = [i.name for i in self.session.get_inputs()]
        if len(model_inputs) == 1 and len(inputs) == 1:
            return {model_inputs[0]: next(iter(inputs.values()))}
        return inputs

    def detect(self, images: list[np.ndarray]) -> list[list[Detection2D]]:
        if not images:
            return []
        fixed = self.fixed_batch_size()
        batch = fixed or self.batch_size
        results: list[list[Detection2D]] = []
        for start in range(0, len(images), batch):
            chunk = list(images[start : start + batch])
            count = len(chunk)
            if fixed and count < fixed:  # a fixed batch dimension: fill with copies, drop them after
                chunk += [chunk[-1]] * (fixed - count)
            inputs, meta = self.preprocess(chunk)
            outputs = self.session.run(None, self.feeds(inputs))
            results.extend(self.postprocess(outputs, meta)[:count])
        return results


DETECTOR_KEYS = {"uri", "name", "version", "preprocess", "postprocess", "providers", "batch_size", "sha256"}


def make_detector(config: Mapping) -> OnnxDetector:
    """An OnnxDetector from plain configuration.

    Keys: uri, name, version (required); preprocess and postprocess (plug-in names, default
    'letterbox' and 'boxes_scores'); providers; batch_size; sha256 (the content the model file
    must have, checked when it is loaded). Any other key is an option of the
    plug-in whose constructor takes it (e.g. input_size, mean, std, class_names, score_threshold).
    """
    missing = [key for key in ("uri", "name", "version") if key not in config]
    if missing:
        raise ValueError(f"ONNX detector config lacks {missing}")
    plugins = []
    for kind, registry, default in (
        ("preprocess", PREPROCESSORS, "letterbox"),
        ("postprocess", POSTPROCESSORS, "boxes_scores"),
    ):
        plugin_name = config.get(kind, default)
        if plugin_name not in registry:
            raise ValueError(f"unknown {kind} plug-in {plugin_name!r}; known: {sorted(registry)}")
        plugins.append(registry[plugin_name])
    options = {k: v for k, v in config.items() if k not in DETECTOR_KEYS}
    accepted = [set(inspect.signature(factory).parameters) for factory in plugins]
    unknown = sorted(set(options) - set().union(*accepted))
    if unknown:
        raise ValueError(f"ONNX detector config has options no plug-in takes: {unknown}")
    pre, post = (factory(**{k: v for k, v in options.items() if k in keys}) for factory, keys in zip(plugins, accepted))
    return OnnxDetector(
        config["uri"],
        name=config["name"],
        version=str(config["version"]),
        preprocess=pre,
        postprocess=post,
        providers=config.get("providers"),
        batch_size=int(config.get("batch_size", 8)),
        sha256=config.get("sha256"),
    )
