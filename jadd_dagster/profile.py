"""Deployment profiles: resources/<name>.yaml says where data lives and how work runs.

Values may use {JADD_HOME} and any other environment variable in braces; JADD_HOME defaults to
./.jadd in the current folder. Reading the profile is local file I/O only (no cloud calls).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path

import yaml

PROFILES_DIR = Path(__file__).resolve().parents[1] / "resources"


@dataclass(frozen=True)
class DeploymentProfile:
    """Where data lives and how work runs. Units: seconds, USD."""

    name: str
    store_url: str
    registry_url: str
    compute: str
    max_workers: int
    target_chunk_s: float
    scene_length_s: float
    cpu_seconds_per_frame: float
    usd_per_cpu_hour: float


class _Env(dict):
    def __missing__(self, key: str) -> str:
        raise KeyError(f"environment variable {key} is used by the deployment profile but not set")


def load_profile(name_or_path: str | None = None) -> DeploymentProfile:
    """Load a profile by name (resources/<name>.yaml) or path; default $JADD_PROFILE or 'local'."""
    choice = name_or_path or os.environ.get("JADD_PROFILE", "local")
    path = Path(choice) if choice.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{choice}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"deployment profile {choice!r} not found at {path}")
    env = _Env(os.environ)
    env.setdefault("JADD_HOME", str(Path(".jadd").resolve()))
    raw = yaml.safe_load(path.read_text())

    def expand(value):
        return string.Formatter().vformat(value, (), env) if isinstance(value, str) else value

    compute = raw.get("compute", {})
    cost = raw.get("cost", {})
    return DeploymentProfile(
        name=path.stem,
        store_url=expand(raw["storage"]["url"]),
        registry_url=expand(raw["registry"]["url"]),
        compute=compute.get("kind", "local"),
        max_workers=int(compute.get("max_workers", 0)),
        target_chunk_s=float(compute.get("target_chunk_s", 120)),
        scene_length_s=float(raw.get("scenes", {}).get("length_s", 20)),
        cpu_seconds_per_frame=float(cost.get("cpu_seconds_per_frame", 0.02)),
        usd_per_cpu_hour=float(cost.get("usd_per_cpu_hour", 0.05)),
    )
