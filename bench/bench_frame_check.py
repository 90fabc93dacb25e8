"""Benchmark: the frame-count check's expectation for one camera of one scene (part_merge).

Baseline, in the same run: select_frames over the camera's grid at the scene's own phase (what
every camera cost before cameras at the sweep rate or faster were counted once per rate).

    python bench/bench_frame_check.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jadd_dagster.part_merge import _selected_count, expected_frames_per_channel  # noqa: E402


def per_call(fn, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn((i * 7919) % 33333)  # a different phase (µs) every scene, as real logs have
    return (time.perf_counter() - start) / calls


def main() -> None:
    baseline = per_call(lambda phase: _selected_count(20_000_000, 2, 10, 30.0, phase), 300)
    ours = per_call(lambda phase: expected_frames_per_channel(20.0, 2, 10, 30.0, phase), 6000)
    print("| 30 Hz camera, 2/10 Hz dataset, 20 s scene | µs a camera and scene |\n|---|---:|")
    print(f"| baseline: select_frames at the scene's phase | {baseline * 1e6:.0f} |")
    print(f"| ours: one cached count a rate | {ours * 1e6:.1f} |")


if __name__ == "__main__":
    main()
