"""Where FunASR's speaker stack meets its sentences: spkd's refinements, installed on
FunASR's own module functions and active only inside `SpeakerHooks.job()`.

FunASR 1.4.16 (`AutoModel.inference_with_vad`) clusters the speaker windows
(`cb_model`), turns the labels into a timeline (`campplus.utils.postprocess`: windows
merged and smoothed), builds sentences from the punctuation model over the text of all
VAD segments joined together, and only then gives each sentence one speaker: the one
whose stretch of the timeline overlaps it most (`distribute_spk`). Three things follow:

* the speaker count is FunASR's clusterer's, often wrong (daemon.engine.speaker_refine);
* a sentence that runs across a change of speaker (a reply the punctuation did not end,
  a short "嗯" between two clauses) goes wholly to one of them;
* a sentence runs from token to token across pauses, so its time (and its subtitle
  cue) covers silence, or another channel's turn in a call split by channel.

`SpeakerHooks` wraps two names of `funasr.auto.auto_model` (as the engine's other hooks
wrap instance attributes; checked against the tested versions): `postprocess`, whose
labels it refines first when the job asks for it, and `distribute_spk`, whose timeline it
records and whose loop it runs as `distribute_speakers` (the same speakers, in time that
grows with the length rather than its square: 19 s against 0.09 s for a 3-hour meeting).
`cut_sentence` then cuts a sentence between two tokens where the timeline's
speaker changes, and where the tokens pause longer than `output.max_pause_seconds`; each
piece keeps its own tokens' text and times. A sentence with neither stays exactly as
FunASR made it, speaker included. `trim_to_speech` then moves each sentence's start and
end inwards to its first and last 10-ms frame of speech (the tokens at its edges may be
timed into the VAD's margin of silence). Outside `job()` (a bare AutoModel in the same
process, the identity checks) FunASR's functions run unchanged.

Used only by the engine.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from loguru import logger

from daemon.engine.speaker_refine import RefineSettings, refine_labels

TESTED_FUNASR_VERSIONS = ("1.4.16",)
# A run of fewer tokens than this joins its neighbour: token times are spread evenly
# over a VAD segment, so the one or two tokens nearest a change of speaker may fall on
# the wrong side of it.
MIN_RUN_TOKENS = 2

Timeline = list[tuple[float, float, int]]  # (start s, end s, speaker) in time order


class SpeakerHooks:
    """Installed once on funasr.auto.auto_model; acts only inside `job()`."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._distribute_spk = module.distribute_spk
        self._postprocess = module.postprocess
        self._local = threading.local()
        module.distribute_spk = self.distribute_spk
        module.postprocess = self.postprocess

    def distribute_spk(self, sentence_list: Any, sd_time_list: Any) -> Any:
        timelines = getattr(self._local, "timelines", None)
        if timelines is None:
            return self._distribute_spk(sentence_list, sd_time_list)
        timelines.append([(float(s), float(e), int(k)) for s, e, k in sd_time_list])
        return distribute_speakers(sentence_list, sd_time_list, fallback=self._distribute_spk)

    def postprocess(self, segments: Any, vad_segments: Any, labels: Any, embeddings: Any, *args: Any,
                    **kwargs: Any) -> Any:
        settings = getattr(self._local, "refine", None)
        if settings is not None and len(segments) == len(labels) and len(labels) > 1:
            times = [(float(s[0]), float(s[1])) for s in segments]
            before = len(set(int(k) for k in labels))
            labels = refine_labels(labels, embeddings, times, settings)
            logger.debug("speaker clusters refined: {} -> {} over {} windows", before, len(set(labels.tolist())),
                         len(labels))
        return self._postprocess(segments, vad_segments, labels, embeddings, *args, **kwargs)

    @contextlib.contextmanager
    def job(self, refine: RefineSettings | None = None) -> Iterator[list[Timeline]]:
        """The timelines of the `generate` calls inside this block, one per input;
        with `refine`, FunASR's cluster labels are refined first (speaker_refine)."""
        self._local.timelines = []
        self._local.refine = refine
        try:
            yield self._local.timelines
        finally:
            self._local.timelines = None
            self._local.refine = None

    def uninstall(self) -> None:
        self._module.distribute_spk = self._distribute_spk
        self._module.postprocess = self._postprocess


def distribute_speakers(sentence_list: Any, sd_time_list: Any, *, fallback: Any) -> Any:
    """FunASR 1.4.16's `distribute_spk`, with the same result, in time that grows with
    the sentences and the timeline rather than with their product (a 3-hour meeting has
    ~1,700 sentences and ~2,300 stretches of timeline: 4 M comparisons in FunASR's loop).

    FunASR gives each sentence the speaker of the stretch that overlaps it most, visiting
    every stretch in order; one whose overlap is not positive changes nothing (neither of
    its two comparisons can pass). `postprocess` hands the stretches in order of their
    starts, so the ones that can overlap a sentence [s, e] lie between the first whose
    running maximum of ends passes s and the last that starts before e: only those are
    visited, in the same order, with FunASR's own arithmetic. A timeline not in order of
    its starts goes to `fallback` (FunASR's function)."""
    stretches = [(spk_st * 1000, spk_ed * 1000, spk) for spk_st, spk_ed, spk in sd_time_list]
    starts = [st for st, _, _ in stretches]
    if any(a > b for a, b in zip(starts, starts[1:])):
        return fallback(sentence_list, sd_time_list)
    reach = list(itertools.accumulate((ed for _, ed, _ in stretches), max))  # the latest end among 0..i
    for d in sentence_list:
        sentence_start = d["start"]
        sentence_end = d["end"]
        sentence_spk = 0
        max_overlap = 0
        # stretches before `first` end by sentence_start; from `last` on they start at
        # or after sentence_end: their overlap is not positive
        first = bisect.bisect_right(reach, sentence_start)
        last = bisect.bisect_left(starts, sentence_end)
        for spk_st, spk_ed, spk in stretches[first:last]:
            overlap = max(min(sentence_end, spk_ed) - max(sentence_start, spk_st), 0)
            if overlap > max_overlap:
                max_overlap = overlap
                sentence_spk = spk
            if overlap > 0 and sentence_spk == spk:
                max_overlap += overlap
        d["spk"] = int(sentence_spk)
    return sentence_list


def install(version: str) -> SpeakerHooks | None:
    """The hooks on FunASR's auto_model module, or None (with a warning) where this
    FunASR is not a tested version."""
    if version not in TESTED_FUNASR_VERSIONS:
        logger.warning("FunASR {} is not a tested version ({}): FunASR's speaker clusters and sentences are kept "
                       "as they are", version, ", ".join(TESTED_FUNASR_VERSIONS))
        return None
    from funasr.auto import auto_model

    if not all(callable(getattr(auto_model, name, None)) for name in ("distribute_spk", "postprocess")):
        logger.warning("funasr.auto.auto_model has no distribute_spk/postprocess: FunASR's speaker clusters and "
                       "sentences are kept as they are")
        return None
    existing = getattr(auto_model.distribute_spk, "__self__", None)
    if isinstance(existing, SpeakerHooks):  # a second engine in this process
        return existing
    return SpeakerHooks(auto_model)


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


def cut_sentence(text: str, start: float, end: float, tokens: Sequence[Sequence[float]],
                 timeline: Timeline | None, max_pause_seconds: float | None
                 ) -> list[tuple[float, float, int | None, str]] | None:
    """(start s, end s, speaker, text) pieces of one sentence, cut between two tokens
    (`[start ms, end ms]` each) where `timeline`'s speaker changes or where the tokens
    pause longer than `max_pause_seconds`; None when the sentence stays whole. A piece's
    speaker is None where the timeline did not cut it (the sentence's own speaker holds).

    A piece's times are its first and last token's (the sentence's own at its outer
    edges); a piece that gets no text is dropped, so a sentence whose text all falls
    into one piece becomes that piece alone. Its text is its tokens' characters (or words) where text and tokens line up
    one to one; where they do not (FunASR's sentence text and token list can differ by a
    few), the text is cut at the same share of its characters as the tokens."""
    if len(tokens) < 2:
        return None
    units = _units(text)
    if not units:
        return None
    owner: list[int | None] = [None] * len(tokens)
    breaks: set[int] = set()
    if timeline and len(tokens) >= 2 * MIN_RUN_TOKENS:
        starts = [s for s, _, _ in timeline]
        speakers = [_speaker_at(timeline, starts, (float(a) + float(b)) / 2000.0) for a, b in tokens]
        runs = _runs(speakers)
        if len(runs) > 1:
            for first, last, spk in runs:
                breaks.add(first)
                owner[first : last + 1] = [spk] * (last - first + 1)
    if max_pause_seconds is not None:
        limit = max_pause_seconds * 1000.0
        breaks.update(i for i in range(1, len(tokens)) if float(tokens[i][0]) - float(tokens[i - 1][1]) > limit)
    breaks.discard(0)
    if not breaks:
        return None

    def unit_index(token_index: int) -> int:
        return token_index if len(units) == len(tokens) else round(token_index * len(units) / len(tokens))

    bounds = [0, *sorted(breaks), len(tokens)]
    pieces: list[tuple[float, float, int | None, str]] = []
    for k, (first, stop) in enumerate(zip(bounds, bounds[1:])):
        piece_start = start if k == 0 else float(tokens[first][0]) / 1000.0
        piece_end = end if stop == len(tokens) else float(tokens[stop - 1][1]) / 1000.0
        piece_text = "".join(units[unit_index(first) : unit_index(stop)]).strip()
        # a piece whose share of the text is empty (FunASR's text can hold fewer
        # characters than the sentence has tokens) is dropped: it has no words to show,
        # and keeping it would stretch a neighbour over the silence it spans
        if piece_text:
            pieces.append((piece_start, max(piece_start, piece_end), owner[first], piece_text))
    return pieces or None


# --------------------------------------------------------------------------- ends at speech

FRAME_SECONDS = 0.01  # the level of the audio is judged per 10-ms frame
# A frame is speech when it stands this far above the recording's quiet level (its
# QUIET_PERCENTILE-th frame) ...
NOISE_MARGIN_DB = 6.0
QUIET_PERCENTILE = 10.0
# ... and is no further than this below the sentence's own loud level (its
# LOUD_PERCENTILE-th frame): a soft onset of real speech stays, a hiss does not.
SPEECH_RANGE_DB = 40.0
LOUD_PERCENTILE = 90.0
SILENT_DB = -100.0  # digital silence, and the floor of every level


def frame_levels(samples: Any, sample_rate: int = 16000) -> np.ndarray:
    """The level (dB of the RMS, floored at SILENT_DB) of each 10-ms frame of mono `samples`."""
    audio = np.asarray(samples, dtype=np.float32).reshape(-1)
    frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
    n = audio.size // frame
    if n == 0:
        return np.zeros(0)
    power = np.square(audio[: n * frame].astype(np.float64)).reshape(n, frame).mean(axis=1)
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), SILENT_DB)


def trim_to_speech(rows: Sequence[tuple[float, float, Any, str]], levels: np.ndarray
                   ) -> list[tuple[float, float, Any, str]]:
    """Each (start s, end s, speaker, text) row with its start and end moved inwards to its
    first and last frame of speech (`levels`: `frame_levels` of the audio it came from).

    Why: FSMN-VAD keeps ~0.2 s before and ~0.1 s after each stretch of speech, and a
    sentence's outer tokens may be timed into that margin (the tiny test ASR spreads its
    tokens evenly over the segment), so its segment and subtitle cue would cover silence.
    Only the ends move, and only inwards; a row whose audio has no frame of speech by
    this rule (too quiet against the recording's quiet level) stays as it is."""
    if levels.size == 0:
        return list(rows)
    quiet = float(np.percentile(levels, QUIET_PERCENTILE))
    out: list[tuple[float, float, Any, str]] = []
    for start, end, speaker, text in rows:
        first = max(0, int(np.floor(start / FRAME_SECONDS)))
        stop = min(levels.size, int(np.ceil(end / FRAME_SECONDS)))
        span = levels[first:stop]
        if span.size == 0:
            out.append((start, end, speaker, text))
            continue
        loud = float(np.percentile(span, LOUD_PERCENTILE))
        threshold = max(quiet + NOISE_MARGIN_DB, loud - SPEECH_RANGE_DB)
        speech = np.flatnonzero(span >= threshold)
        if loud < quiet + NOISE_MARGIN_DB or speech.size == 0:
            out.append((start, end, speaker, text))
            continue
        new_start = max(start, (first + int(speech[0])) * FRAME_SECONDS)
        new_end = min(end, (first + int(speech[-1]) + 1) * FRAME_SECONDS)
        out.append((round(new_start, 3), round(max(new_start, new_end), 3), speaker, text))
    return out


__all__ = ["FRAME_SECONDS", "MIN_RUN_TOKENS", "TESTED_FUNASR_VERSIONS", "SpeakerHooks", "Timeline", "cut_sentence",
           "distribute_speakers", "frame_levels", "install", "trim_to_speech"]
