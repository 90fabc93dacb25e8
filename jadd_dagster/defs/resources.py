"""Resources: the object store, the registry and the compute backend, built from a profile."""

from __future__ import annotations

from typing import Any

import dagster as dg

from jadd_dagster.autolabel.models import DEFAULT_MODELS

from jadd_dagster.defs.compute_resources import BatchComputeBackend, LocalComputeBackend
from jadd_dagster.profile import DeploymentProfile
from jadd_dagster.registry import Registry
from jadd_dagster.storage import ObjectStore, open_store


class StoreResource(dg.ConfigurableResource):
    """The object store: a local folder path (the default) or s3://bucket/prefix."""

    url: str

    def store(self) -> ObjectStore:
        return open_store(self.url)


class RegistryResource(dg.ConfigurableResource):
    """The dataset registry and scene-output cache index (any SQLAlchemy URL)."""

    url: str

    def registry(self) -> Registry:
        if self.url not in _REGISTRIES:  # one engine (connection pool) per process and URL
            _REGISTRIES[self.url] = Registry(self.url)
        return _REGISTRIES[self.url]


_REGISTRIES: dict[str, Registry] = {}


class AutolabelModels(dg.ConfigurableResource):
    """The auto-label models a deployment offers, by name (see jadd_dagster/autolabel/models.py)."""

    models: dict[str, Any] = DEFAULT_MODELS

    def get(self, name: str) -> dict:
        if name not in self.models:
            raise dg.Failure(f"auto-label model {name!r} is not configured; available: {sorted(self.models)}")
        return dict(self.models[name])


class PipelineSettings(dg.ConfigurableResource):
    """Deployment-wide settings: scene length and the profile's whole price table `cost`
    (cost.CostTable.to_mapping: prices, fallback seconds, limits; empty: CostTable's defaults)."""

    scene_length_s: float = 20.0
    cost: dict[str, Any] = {}


def resources_for(profile: DeploymentProfile) -> dict[str, dg.ConfigurableResource]:
    """The resources a profile describes; secrets stay environment variables (dg.EnvVar)."""
    url = dg.EnvVar(profile.registry_url_env) if profile.registry_url_env else profile.registry_url
    backend = {"local": LocalComputeBackend, "batch": BatchComputeBackend}[profile.compute]
    return {
        "store": StoreResource(url=profile.store_url),
        "registry": RegistryResource(url=url),
        "compute": backend(**profile.compute_options),
        "models": AutolabelModels(models=profile.autolabel_models or DEFAULT_MODELS),
        "settings": PipelineSettings(
            scene_length_s=profile.scene_length_s,
            cost=profile.cost.to_mapping(),
        ),
    }
