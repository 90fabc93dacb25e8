"""Shared test setup. Service fixtures (S3 server, PostgreSQL) live in tests/services/."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["services.s3", "services.postgres", "services.sentry"]


@pytest.fixture(scope="session")
def two_short_logs(tmp_path_factory) -> Path:
    """A folder of two synthetic logs of one 20 s scene each (CAM_FRONT at 96x54), written once a
    session for the builds that only read them (on S3, on PostgreSQL). In one process: for logs
    this small a pool of renderers costs more than it saves."""
    from jadd_dagster.sim import make_logs

    folder = tmp_path_factory.mktemp("two-short-logs") / "logs"
    make_logs(folder, n_logs=2, minutes=0.4, seed=11, channels=("CAM_FRONT",), image_size=(96, 54), workers=1)
    return folder


@pytest.fixture(scope="session")
def lidar_log(tmp_path_factory) -> Path:
    """One synthetic log of two 20 s scenes, CAM_FRONT at 320x180 (big enough for the baseline
    detector) and lidar, written once a session for the auto-labelling tests, which only read it."""
    from jadd_dagster.sim import make_logs

    (path,) = make_logs(tmp_path_factory.mktemp("lidar-log") / "logs", n_logs=1, minutes=0.75, seed=3,
                        channels=("CAM_FRONT",), image_size=(320, 180), lidar=True)
    return path
