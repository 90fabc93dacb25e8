"""The demo world: synthetic drive logs with known ground truth, for tests, benchmarks and `jadd demo`.

A simulated ego drive (drive.py), traffic around it (world.py), camera videos ray-cast through the
real lens (render.py) and a roof lidar (lidar.py), written in the raw log format by make_logs
(generator.py). Production code (everything else under jadd_dagster) never imports this package:
it reads any log through logs/reader.py, and the shared types and maths live in production
modules (categories.py, geometry.py, logs/tracks.py, logs/sweeps.py, visibility.py, and the
baseline detector's colour code in autolabel/baseline.py). Only the `jadd make-logs` and `jadd demo`
commands reach in here; tests/test_boundary.py holds that line.
"""

from jadd_dagster.sim.generator import make_logs

__all__ = ["make_logs"]
