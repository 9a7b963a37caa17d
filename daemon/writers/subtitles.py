"""Subtitle cues, shared by `srt` and `vtt`.

One cue per sentence; a sentence too long for `MAX_LINES` lines of `LINE_WIDTH`
columns (a CJK character counts as two columns, so ~20 per line) is split into
several cues at word boundaries (or between CJK characters), with the lines
balanced, and the sentence's time divided in proportion to each cue's text width.
The `Speaker1: ` prefix counts toward the first line of every cue.

FunASR's sentences may overlap, be zero-length or start at the same instant; the
cues never do: a cue ends at the latest when the next sentence starts, a
zero-length sentence lasts `ZERO_LENGTH_MS` (or up to the next start), every cue
lasts at least 1 ms, and a sentence that starts at the same instant as the one
before it (simultaneous speech) is shown when that one ends.
Sentences without text get no cue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from ..transcript import Segment, Transcript, speaker_label
from .common import char_width, clock, ms, one_line, width

LINE_WIDTH = 42  # columns per line (Netflix/BBC-style limit for Latin scripts)
MAX_LINES = 2
ZERO_LENGTH_MS = 500  # how long a zero-length sentence is shown, room permitting

# Punctuation that must not begin a line: it sticks to what precedes it.
_NO_LINE_START = frozenset("，。！？、；：）》」』】〕,.!?;:)]}%…")
# Clause ends: a line that must be cut is cut after one of these if it is past half full.
_BREAK_AFTER = frozenset("，。！？、；：,.!?;:…")


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    speaker: int
    lines: tuple[str, ...]  # the text, without the speaker prefix
    speaker_name: str = ""  # how the cue names its speaker; "" for its label
    # The sentence it shows: its index in Transcript.segments (a sentence cut into several
    # cues gives each of them); what `spkd edit --segment N` maps cue N to.
    segment: int = -1

    @property
    def speaker_label(self) -> str:
        return self.speaker_name or speaker_label(self.speaker)


def build_cues(segments: Sequence[Segment], display: Callable[[int], str] = speaker_label) -> list[Cue]:
    """`display` names a speaker (Transcript.speaker_display)."""
    numbered = sorted(((k, s) for k, s in enumerate(segments) if s.text.strip()),
                      key=lambda p: (p[1].start, p[1].end))
    sentences = [s for _k, s in numbered]
    cues: list[Cue] = []
    floor = 0  # where the previous cue ended: nothing may start before it
    for i, (index, seg) in enumerate(numbered):
        name = one_line(display(seg.speaker))
        parts = split_text(one_line(seg.text), prefix_width=width(name + ": "))
        start = max(ms(seg.start), floor)
        end = ms(seg.end)
        if end <= start:
            end = start + ZERO_LENGTH_MS
        if i + 1 < len(sentences) and ms(sentences[i + 1].start) > start:
            end = min(end, ms(sentences[i + 1].start))  # overlapping sentences: clamp
        end = max(end, start + len(parts))  # >= 1 ms per cue, even if the next starts now
        for (a, b), lines in zip(_spread(start, end, parts), parts):
            cues.append(Cue(a, b, seg.speaker, lines, name, index))
        floor = end
    return cues


def split_text(text: str, *, prefix_width: int = 0) -> list[tuple[str, ...]]:
    """Cut one sentence into cues (each a tuple of at most MAX_LINES lines)."""
    tokens = [p for tok in _tokens(text) for p in _fit(tok, LINE_WIDTH - prefix_width)]
    if not tokens:
        return []
    full = [width(t) for t in tokens]  # with the trailing space
    bare = [width(t.rstrip()) for t in tokens]  # as the last token of a line

    def wrap(line_width: int) -> list[tuple[str, ...]]:
        return _wrap(tokens, full, bare, prefix_width, line_width)

    target = _line_count(wrap(LINE_WIDTH))
    if target == 1:
        return wrap(LINE_WIDTH)
    # Balance the lines: binary search for the narrowest width needing no more lines.
    lo, hi = prefix_width + max(bare), LINE_WIDTH
    while lo < hi:
        mid = (lo + hi) // 2
        if _line_count(wrap(mid)) <= target:
            hi = mid
        else:
            lo = mid + 1
    return wrap(hi)


def _tokens(text: str) -> list[str]:
    """Breakable units: a Latin word with its trailing space, or one CJK character."""
    tokens: list[str] = []
    for word in re.findall(r"\S+\s*", text):
        begin = 0
        for i in range(1, len(word.rstrip())):
            c, prev = word[i], word[i - 1]
            if c not in _NO_LINE_START and (char_width(c) == 2 or char_width(prev) == 2):
                tokens.append(word[begin:i])
                begin = i
        tokens.append(word[begin:])
    return tokens


def _fit(token: str, limit: int) -> list[str]:
    """Hard-split a token wider than a line (a URL, a very long number)."""
    if width(token.rstrip()) <= limit:
        return [token]
    pieces, piece = [], ""
    for c in token:
        if piece and width((piece + c).rstrip()) > limit:
            pieces.append(piece)
            piece = ""
        piece += c
    return pieces + [piece] if piece else pieces


def _wrap(
    tokens: list[str], full: list[int], bare: list[int], prefix_width: int, line_width: int
) -> list[tuple[str, ...]]:
    """Greedy wrap; a full line is cut after its last punctuation if that is past half of it."""
    cues: list[tuple[str, ...]] = []
    lines: list[str] = []
    begin = i = used = 0  # the line is tokens[begin:i], `used` columns wide with trailing space
    while i < len(tokens):
        lead = 0 if lines else prefix_width  # the first line of a cue carries the speaker
        if i > begin and lead + used + bare[i] > line_width:
            cut = _punctuation_cut(tokens, full, bare, begin, i, (line_width - lead) // 2)
            lines.append("".join(tokens[begin:cut]).rstrip())
            if len(lines) == MAX_LINES:
                cues.append(tuple(lines))
                lines = []
            begin = i = cut  # the tokens after the cut go to the next line
            used = 0
            continue
        used += full[i]
        i += 1
    lines.append("".join(tokens[begin:]).rstrip())
    cues.append(tuple(lines))
    return cues


def _punctuation_cut(tokens: list[str], full: list[int], bare: list[int], begin: int, end: int, min_width: int) -> int:
    """Where to end the full line tokens[begin:end]: after its last clause end past `min_width`."""
    cut, used = end, 0
    for j in range(begin + 1, end):  # a cut before token j
        if tokens[j - 1].rstrip()[-1:] in _BREAK_AFTER and used + bare[j - 1] >= min_width:
            cut = j
        used += full[j - 1]
    return cut


def _line_count(cues: list[tuple[str, ...]]) -> int:
    return sum(len(c) for c in cues)


def _spread(start: int, end: int, parts: list[tuple[str, ...]]) -> list[tuple[int, int]]:
    """Divide [start, end] among the parts in proportion to their text width; each gets >= 1 ms."""
    weights = [max(1, sum(width(line) for line in lines)) for lines in parts]
    total, n = sum(weights), len(parts)
    bounds, acc = [start], 0
    for k, w in enumerate(weights[:-1], start=1):
        acc += w
        b = start + round((end - start) * acc / total)
        bounds.append(min(max(b, bounds[-1] + 1), end - (n - k)))
    bounds.append(end)
    return list(zip(bounds, bounds[1:]))


def render_srt(t: Transcript) -> str:
    return "\n".join(
        f"{i}\n{clock(c.start_ms, ',')} --> {clock(c.end_ms, ',')}\n{c.speaker_label}: " + "\n".join(c.lines) + "\n"
        for i, c in enumerate(build_cues(t.segments, t.speaker_display), start=1)
    )


def _vtt_escape(text: str) -> str:
    # Escaping ">" also guarantees that no "-->" survives in cue text.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_vtt(t: Transcript) -> str:
    blocks = [
        f"{clock(c.start_ms, '.')} --> {clock(c.end_ms, '.')}\n<v {_vtt_escape(c.speaker_label)}>"
        + "\n".join(_vtt_escape(line) for line in c.lines)
        + "\n"
        for c in build_cues(t.segments, t.speaker_display)
    ]
    return "\n".join(["WEBVTT\n", *blocks])
