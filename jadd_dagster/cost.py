"""The pre-launch cost estimate: frames to produce × CPU time per frame × price."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostEstimate:
    frames: int
    cpu_hours: float
    usd: float


def estimate_sampling_cost(
    scene_seconds: float, channels: int, sweep_hz: float, cpu_seconds_per_frame: float, usd_per_cpu_hour: float
) -> CostEstimate:
    """Cost of sampling scene_seconds of video per channel at sweep_hz (all frames, keyframes included)."""
    frames = int(round(scene_seconds * sweep_hz)) * channels
    cpu_hours = frames * cpu_seconds_per_frame / 3600
    return CostEstimate(frames, cpu_hours, cpu_hours * usd_per_cpu_hour)


def format_usd(amount: float) -> str:
    """An amount for people: cents above a dollar, three significant digits below ($0.00123)."""
    return f"${amount:,.2f}" if abs(amount) >= 1 else f"${amount:.3g}"
