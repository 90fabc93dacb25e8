"""Auto-label models as configuration: a name maps to a detector kind and its settings.

    {"kind": "baseline"}                                   classical vision, no weights
    {"kind": "onnx", "uri": "...", "version": "3", ...}    see onnx_runner.make_detector

The cache key of a model's labels is its name and version, and the labeller's version
(base.LABELLER_VERSION): a new version of either relabels lazily.
"""

from __future__ import annotations

import re
from functools import lru_cache
import json

from jadd_dagster.autolabel.base import LABELLER_VERSION, Detector2D

LABELS_JSON = "labels.json"
DEFAULT_MODELS = {"baseline": {"kind": "baseline"}}


def model_version(config: dict) -> str:
    if config.get("kind") == "baseline":
        from jadd_dagster.autolabel.baseline import BaselineDetector

        return BaselineDetector.version
    return str(config.get("version", "1"))


def model_key(name: str, config: dict) -> str:
    """Stable, path-safe id of a model version and the labeller's, e.g. 'baseline-v1-l2'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-v{model_version(config)}-l{LABELLER_VERSION}")


def needs_gpu(config: dict) -> bool:
    return config.get("kind") == "onnx" and "CUDAExecutionProvider" in (config.get("providers") or [])


def make_detector(name: str, config: dict) -> Detector2D:
    """The detector a model configuration describes (built once per process)."""
    return _cached_detector(name, json.dumps(config, sort_keys=True))


@lru_cache(maxsize=4)
def _cached_detector(name: str, config_json: str) -> Detector2D:
    config = json.loads(config_json)
    kind = config.get("kind")
    if kind == "baseline":
        from jadd_dagster.autolabel.baseline import BaselineDetector

        return BaselineDetector()
    if kind == "onnx":
        from jadd_dagster.autolabel import onnx_runner

        return onnx_runner.make_detector({**{k: v for k, v in config.items() if k != "kind"}, "name": name})
    raise ValueError(f"auto-label model {name!r}: unknown kind {kind!r}; use 'baseline' or 'onnx'")
