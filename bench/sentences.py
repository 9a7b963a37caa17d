"""Giving sentences their speakers: FunASR's `distribute_spk` against spkd's
`distribute_speakers` (daemon/engine/speaker_turns.py), in one run.

    python -m bench.sentences [--hours 0.0833 0.5 3 6] [--repeat 3]

For each length, a made-up timeline and sentence list sized as FunASR makes them (a
stretch of one speaker every ~5 s, a sentence every ~6 s, 4 speakers; seeded), the
same inputs to both functions, best of --repeat each. Prints both times, their ratio and
whether every sentence got the same speaker. FunASR's loop compares every sentence with
every stretch, so its time grows with the square of the length; spkd's visits only the
stretches that overlap each sentence. Needs no model and no GPU.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from typing import Any, Callable

from bench.common import loadavg, machine_line

STRETCH_SECONDS = 5.0
SENTENCE_SECONDS = 6.0
SPEAKERS = 4


def made_up(hours: float, seed: int = 29) -> tuple[list[dict[str, Any]], list[tuple[float, float, int]]]:
    """(sentences in ms, timeline in s) over `hours` of audio, as FunASR hands them to distribute_spk."""
    rng = random.Random(seed)
    total = hours * 3600
    timeline, clock = [], 0.0
    while clock < total:
        length = rng.uniform(0.5, 2 * STRETCH_SECONDS - 0.5)
        timeline.append((round(clock, 2), round(clock + length, 2), rng.randrange(SPEAKERS)))
        clock += length + rng.choice([0.0, 0.0, rng.uniform(0.1, 2.0)])
    sentences, clock = [], 0.0
    while clock < total:
        length = rng.uniform(1.0, 2 * SENTENCE_SECONDS - 1.0)
        sentences.append({"start": int(clock * 1000), "end": int((clock + length) * 1000), "text": "…"})
        clock += length + rng.uniform(0.0, 1.0)
    return sentences, timeline


def best_seconds(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - began)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sentences", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[300 / 3600, 0.5, 3.0, 6.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from funasr.models.campplus.utils import distribute_spk

    from daemon.engine.speaker_turns import distribute_speakers

    print(f"machine: {machine_line()}; load average {loadavg()}")
    print(f"{'audio':>8} {'sentences':>9} {'stretches':>9} {'FunASR s':>10} {'spkd s':>10} {'ratio':>8}  identical")
    for hours in args.hours:
        sentences, timeline = made_up(hours)
        bare_seconds, bare = best_seconds(lambda: distribute_spk(copy.deepcopy(sentences), timeline), args.repeat)
        spkd_seconds, ours = best_seconds(
            lambda: distribute_speakers(copy.deepcopy(sentences), timeline, fallback=distribute_spk), args.repeat)
        print(f"{hours * 3600:>7.0f}s {len(sentences):>9,} {len(timeline):>9,} {bare_seconds:>10.4f} "
              f"{spkd_seconds:>10.4f} {spkd_seconds / bare_seconds:>8.4f}  {'yes' if ours == bare else 'NO'}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
