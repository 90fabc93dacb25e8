"""Deployment profiles for tests that run `jadd build`: the local one with some sections changed."""

from pathlib import Path

import yaml

LOCAL_PROFILE = Path(__file__).resolve().parents[1] / "resources" / "local.yaml"


def use_profile(folder: Path, env, **sections) -> Path:
    """Write resources/local.yaml with the given top-level sections replaced to folder/profile.yaml
    and point JADD_PROFILE at it through env (a pytest MonkeyPatch); JADD_HOME and DAGSTER_HOME are
    unset, so that `jadd build --workdir` chooses them."""
    profile = yaml.safe_load(LOCAL_PROFILE.read_text())
    profile.update(sections)
    path = Path(folder) / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    env.setenv("JADD_PROFILE", str(path))
    for name in ("JADD_HOME", "DAGSTER_HOME"):
        env.delenv(name, raising=False)
    return path
