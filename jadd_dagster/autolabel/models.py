"""Auto-label models as configuration: a name maps to a detector kind and its settings.

    {"kind": "baseline"}                                   classical vision, no weights
    {"kind": "onnx", "uri": "...", "version": "3", ...}    see onnx_runner.make_detector

The cache key of a model's labels is its name, version, the content of its model file (sha256)
and the labeller's version (base.LABELLER_VERSION): a new version of any relabels lazily, and a
model file replaced under the same `version` label can never reuse the old file's labels. A profile
may pin the hash (`sha256: <64 hex>`): the key then costs no read of the file, and a file that does
not match is refused when a worker loads it. `pinned_model` fills the hash in, so that the workers
verify that the file they load is the one the labels are keyed to.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from jadd_dagster.autolabel.base import LABELLER_VERSION, Detector2D

LABELS_JSON = "labels.json"
DEFAULT_MODELS = {"baseline": {"kind": "baseline"}}
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
KEY_DIGEST_CHARS = 12  # of the sha256 in a label cache key: 48 bits, no accidental collision


def model_version(config: dict) -> str:
    if config.get("kind") == "baseline":
        from jadd_dagster.autolabel.baseline import BaselineDetector

        return BaselineDetector.version
    return str(config.get("version", "1"))


def model_digest(config: dict) -> str | None:
    """sha256 (hex) of the model's file, or None for a model without one (baseline).

    A hash pinned in the configuration (`sha256`) is used as it is; otherwise the file is read."""
    if config.get("kind") != "onnx":
        return None
    pinned = config.get("sha256")
    if pinned is not None:
        if not SHA256_PATTERN.fullmatch(str(pinned)):
            raise ValueError(f"auto-label model sha256 must be 64 lower-case hex digits, not {pinned!r}")
        return str(pinned)
    from jadd_dagster.autolabel.onnx_runner import model_file_sha256

    return model_file_sha256(str(config["uri"]))


def pinned_model(config: dict) -> dict:
    """The configuration with the model file's sha256 filled in (`sha256`): what a worker gets, so
    that it refuses a file replaced after the labels' cache key was made."""
    digest = model_digest(config)
    return {**config, "sha256": digest} if digest is not None else dict(config)


def model_key(name: str, config: dict) -> str:
    """Stable, path-safe id of a model's version and file content and the labeller's version,
    e.g. 'baseline-v1-l2' or 'yolo-v3-3f2a9c81d0b4-l2' (the file's sha256, abbreviated)."""
    digest = model_digest(config)
    content = f"-{digest[:KEY_DIGEST_CHARS]}" if digest is not None else ""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-v{model_version(config)}{content}-l{LABELLER_VERSION}")


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
