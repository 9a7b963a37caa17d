"""Split FunASR's sentences where FunASR's own speaker timeline changes speaker.

FunASR 1.4.16 (`AutoModel.inference_with_vad`) builds sentences from the punctuation
model, over the text of all VAD segments joined together, and only then gives each
sentence one speaker: the one whose stretch of the diarization timeline
(`campplus.utils.postprocess`: clustered 1.5-s windows, merged and smoothed) overlaps
it most (`distribute_spk`). A sentence that runs across a change of speaker (a reply
the punctuation did not end, a short "嗯" between two clauses) goes wholly to one of
them, and so does the other speaker's share of it.

This module keeps FunASR's clustering, timeline and sentences and only refines that
last step: it records the timeline FunASR hands to `distribute_spk` (by wrapping that
name in `funasr.auto.auto_model`, as the engine's other hooks wrap instance
attributes; checked against the tested versions) and cuts a sentence between two
tokens where the timeline's speaker changes, each piece keeping its own tokens' text
and times. A sentence whose tokens all fall to one speaker is left exactly as FunASR
made it, speaker included.

Used only by the engine.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

from loguru import logger

TESTED_FUNASR_VERSIONS = ("1.4.16",)
# A run of fewer tokens than this joins its neighbour: token times are spread evenly
# over a VAD segment, so the one or two tokens nearest a change of speaker may fall on
# the wrong side of it.
MIN_RUN_TOKENS = 2

Timeline = list[tuple[float, float, int]]  # (start s, end s, speaker) in time order


class TimelineRecorder:
    """Installed once on funasr.auto.auto_model; records only inside `job()`."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._original = module.distribute_spk
        self._local = threading.local()
        module.distribute_spk = self._distribute_spk

    def _distribute_spk(self, sentence_list: Any, sd_time_list: Any) -> Any:
        timelines = getattr(self._local, "timelines", None)
        if timelines is not None:
            timelines.append([(float(s), float(e), int(k)) for s, e, k in sd_time_list])
        return self._original(sentence_list, sd_time_list)

    @contextlib.contextmanager
    def job(self) -> Iterator[list[Timeline]]:
        """The timelines of the `generate` calls inside this block, one per input."""
        self._local.timelines = []
        try:
            yield self._local.timelines
        finally:
            self._local.timelines = None

    def uninstall(self) -> None:
        self._module.distribute_spk = self._original


def install(version: str) -> TimelineRecorder | None:
    """A recorder on FunASR's auto_model module, or None (with a warning) where this
    FunASR is not a tested version."""
    if version not in TESTED_FUNASR_VERSIONS:
        logger.warning("FunASR {} is not a tested version ({}): sentences keep FunASR's one speaker each",
                       version, ", ".join(TESTED_FUNASR_VERSIONS))
        return None
    from funasr.auto import auto_model

    if not callable(getattr(auto_model, "distribute_spk", None)):
        logger.warning("funasr.auto.auto_model has no distribute_spk: sentences keep FunASR's one speaker each")
        return None
    existing = getattr(auto_model.distribute_spk, "__self__", None)
    if isinstance(existing, TimelineRecorder):  # a second engine in this process
        return existing
    return TimelineRecorder(auto_model)


def _speaker_at(timeline: Timeline, starts: list[float], t: float) -> int:
    """The timeline's speaker at time t; in a gap, the nearest stretch's."""
    i = bisect.bisect_right(starts, t) - 1
    candidates = [j for j in (i, i + 1) if 0 <= j < len(timeline)]
    best = min(candidates, key=lambda j: 0.0 if timeline[j][0] <= t <= timeline[j][1]
               else min(abs(t - timeline[j][0]), abs(t - timeline[j][1])))
    return timeline[best][2]


def _units(text: str) -> list[str]:
    """The text cut into one piece per ASR token: a CJK character, or a run of letters
    and digits (a Latin word); punctuation and spaces stay with the piece before them."""
    units: list[str] = []
    word = False
    for ch in text:
        if ch.isspace() or unicodedata.category(ch)[0] in "PS":
            if units:
                units[-1] += ch
            else:
                units.append(ch)
            word = False
        elif ch.isascii() and ch.isalnum() or ch in "'":
            if word:
                units[-1] += ch
            else:
                units.append(ch)
            word = True
        else:
            units.append(ch)
            word = False
    # leading punctuation (a unit with no letter) sticks to what follows
    if units and not any(c.isalnum() for c in units[0]) and len(units) > 1:
        units[1] = units[0] + units[1]
        units.pop(0)
    return units


def _runs(speakers: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first, last, speaker) runs of equal speakers, short runs joined to a neighbour."""
    runs: list[list[int]] = []
    for i, spk in enumerate(speakers):
        if runs and runs[-1][2] == spk:
            runs[-1][1] = i
        else:
            runs.append([i, i, spk])
    changed = True
    while changed and len(runs) > 1:
        changed = False
        for k, (first, last, _spk) in enumerate(runs):
            if last - first + 1 < MIN_RUN_TOKENS:
                # join the longer neighbour
                left = runs[k - 1] if k > 0 else None
                right = runs[k + 1] if k + 1 < len(runs) else None
                if right is None or (left is not None and left[1] - left[0] >= right[1] - right[0]):
                    left[1] = last  # type: ignore[index]
                else:
                    right[0] = first
                runs.pop(k)
                # neighbours of equal speaker become one run
                merged: list[list[int]] = []
                for run in runs:
                    if merged and merged[-1][2] == run[2]:
                        merged[-1][1] = run[1]
                    else:
                        merged.append(run)
                runs = merged
                changed = True
                break
    return [(a, b, s) for a, b, s in runs]


def split_sentence(text: str, start: float, end: float, tokens: Sequence[Sequence[float]],
                   timeline: Timeline) -> list[tuple[float, float, int, str]] | None:
    """(start s, end s, speaker, text) pieces of one sentence whose tokens (`[start ms,
    end ms]` each) fall to more than one speaker of `timeline`; None when the sentence
    stays whole (one speaker, no timeline, too few tokens).

    Each piece's text is its tokens' characters (or words) where text and tokens line up
    one to one; where they do not (FunASR's sentence text and token list can differ by a
    few), the text is cut at the same share of its characters as the tokens."""
    if not timeline or len(tokens) < 2 * MIN_RUN_TOKENS:
        return None
    units = _units(text)
    if not units:
        return None
    starts = [s for s, _, _ in timeline]
    speakers = [_speaker_at(timeline, starts, (float(a) + float(b)) / 2000.0) for a, b in tokens]
    runs = _runs(speakers)
    if len(runs) < 2:
        return None
    def unit_index(token_index: int) -> int:
        return token_index if len(units) == len(tokens) else round(token_index * len(units) / len(tokens))

    pieces = []
    for k, (first, last, spk) in enumerate(runs):
        piece_start = start if k == 0 else float(tokens[first][0]) / 1000.0
        piece_end = end if k == len(runs) - 1 else float(tokens[last][1]) / 1000.0
        piece_text = "".join(units[unit_index(first) : unit_index(last + 1)]).strip()
        if piece_text:
            pieces.append((piece_start, max(piece_start, piece_end), spk, piece_text))
    return pieces if len(pieces) > 1 else None


__all__ = ["MIN_RUN_TOKENS", "TESTED_FUNASR_VERSIONS", "Timeline", "TimelineRecorder", "install", "split_sentence"]
