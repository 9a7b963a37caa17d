"""How far a running job is: its stage, the fraction of the whole job done, the time left.

The engine reports a stage and, where it can count, the fraction of that stage done
(`ProgressCallback`); the worker reports `writing` itself. `overall_fraction` turns
that into a fraction of the whole job by a fixed share per stage, a rough picture
of where a job's time goes with FunASR (bench/stages.py measures it: recognition,
with the speaker embeddings interleaved, takes most of it). `eta_seconds` estimates the
time left from the audio's duration and the slot's recent real-time factor, or, on a
slot that has not finished a job yet, from the time spent so far.

Pure functions: no clock, no database; the worker calls them from its heartbeat thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["STAGES", "STAGE_SHARES", "Progress", "ProgressCallback", "duration_text", "eta_seconds",
           "overall_fraction"]

# In the order a job meets them.
STAGES = ("decoding", "vad", "asr", "punctuation", "speakers", "writing")

# Each stage's share of a job's time (they add up to 1).
STAGE_SHARES: dict[str, float] = {
    "decoding": 0.03,
    "vad": 0.07,
    "asr": 0.70,
    "punctuation": 0.05,
    "speakers": 0.10,
    "writing": 0.05,
}

# (stage, fraction of that stage done or None when it cannot be counted)
ProgressCallback = Callable[[str, "float | None"], None]

# Below this fraction an estimate from the time spent so far is mostly noise.
MIN_FRACTION_FOR_SPEED = 0.1


@dataclass(frozen=True)
class Progress:
    stage: str
    fraction: float  # of the whole job, 0..1
    eta_seconds: float | None


def overall_fraction(stage: str, stage_fraction: float | None) -> float:
    """The fraction of the whole job done when `stage` is `stage_fraction` done
    (None: just begun)."""
    if stage not in STAGE_SHARES:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    before = sum(STAGE_SHARES[s] for s in STAGES[:STAGES.index(stage)])
    within = min(1.0, max(0.0, stage_fraction or 0.0))
    return round(min(1.0, before + STAGE_SHARES[stage] * within), 4)


def eta_seconds(*, fraction: float, elapsed_seconds: float, audio_seconds: float | None,
                recent_rtf: float | None) -> float | None:
    """Seconds left: the job's expected length (audio seconds x the slot's recent
    real-time factor) times the fraction not done yet; without a recent RTF, the
    time spent so far extrapolated once MIN_FRACTION_FOR_SPEED is done; else None."""
    left = 1.0 - min(1.0, max(0.0, fraction))
    if audio_seconds and recent_rtf and audio_seconds > 0 and recent_rtf > 0:
        expected = audio_seconds * recent_rtf
        # A job slower than the slot's recent ones: never claim less than what the
        # pace so far implies.
        if fraction >= MIN_FRACTION_FOR_SPEED:
            expected = max(expected, elapsed_seconds / fraction)
        return round(expected * left, 1)
    if fraction >= MIN_FRACTION_FOR_SPEED and elapsed_seconds > 0:
        return round(elapsed_seconds / fraction * left, 1)
    return None


def duration_text(seconds: float) -> str:
    """A span of time as people read it: `4 s`, `4 min 50 s`, `2 h 5 min`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min" + (f" {whole % 60} s" if whole % 60 else "")
    return f"{whole // 3600} h" + (f" {whole % 3600 // 60} min" if whole % 3600 // 60 else "")
