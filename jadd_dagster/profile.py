"""Deployment profiles: resources/<name>.yaml says where data lives and how work runs.

Values may use {JADD_HOME} and any other environment variable in braces; JADD_HOME defaults to
./.jadd in the current folder. Secrets are never written in a profile: `registry.url_env` names the
environment variable that holds the database URL, and Dagster reads it at run time (dg.EnvVar), so
the value never shows in the UI or the logs. Reading a profile is local file I/O only.
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jadd_dagster.cost import CostTable, CostTableError

PROFILES_DIR = Path(__file__).resolve().parents[1] / "resources"
COMPUTE_KINDS = ("local", "batch")


@dataclass(frozen=True)
class DeploymentProfile:
    """Where data lives and how work runs. Units: seconds, USD."""

    name: str
    store_url: str
    registry_url: str | None
    registry_url_env: str | None
    compute: str
    compute_options: dict = field(default_factory=dict)
    scene_length_s: float = 20.0
    autolabel_models: dict = field(default_factory=dict)
    cost: CostTable = field(default_factory=CostTable)  # prices, fallback seconds, spend limits

    def resolved_registry_url(self) -> str:
        """The registry URL itself (for the CLI); it may contain a password: never print it."""
        if self.registry_url_env:
            if self.registry_url_env not in os.environ:
                raise KeyError(f"set {self.registry_url_env} to the registry's database URL")
            return os.environ[self.registry_url_env]
        return self.registry_url or ""


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
        if isinstance(value, str):
            return string.Formatter().vformat(value, (), env)
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        return value

    compute = expand(dict(raw.get("compute", {})))
    kind = compute.pop("kind", "local")
    if kind not in COMPUTE_KINDS:
        raise ValueError(f"{path}: compute.kind {kind!r} is not one of {COMPUTE_KINDS}")
    registry = raw.get("registry", {})
    try:
        cost = CostTable.from_mapping(raw.get("cost"))
    except CostTableError as error:
        raise ValueError(f"{path}: {error}") from None
    return DeploymentProfile(
        name=path.stem,
        store_url=expand(raw["storage"]["url"]),
        registry_url=expand(registry["url"]) if "url" in registry else None,
        registry_url_env=registry.get("url_env"),
        compute=kind,
        compute_options=compute,
        scene_length_s=float(raw.get("scenes", {}).get("length_s", 20)),
        autolabel_models=expand(dict(raw.get("autolabel", {}).get("models", {}))),
        cost=cost,
    )
