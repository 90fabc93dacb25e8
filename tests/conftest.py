"""Shared test setup. Service fixtures (S3 server, PostgreSQL) live in tests/services/."""

import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest_plugins = ["services.s3", "services.postgres", "services.sentry"]
