"""Line-oriented formats: `txt` (turns), `sentences` (FunASR speaker-server style), `tsv`."""

from __future__ import annotations

from ..transcript import Transcript
from .common import decimal, hms, ms, one_line, short_clock


def render_txt(t: Transcript) -> str:
    """One paragraph per speaker turn: `Speaker1 [00:01:02]: text`, blank line between."""
    return "\n".join(
        f"{t.speaker_display(turn.speaker)} [{hms(ms(turn.start))}]: {one_line(turn.text)}\n" for turn in t.turns()
    )


def render_sentences(t: Transcript) -> str:
    """`[1] 00:03.480 -> 00:05.080 | Speaker1`, the text, a blank line; one block per sentence."""
    return "".join(
        f"[{i}] {short_clock(ms(s.start))} -> {short_clock(ms(s.end))} | {t.speaker_display(s.speaker)}\n{one_line(s.text)}\n\n"
        for i, s in enumerate(t.segments, start=1)
    )


TSV_HEADER = ("start", "end", "speaker", "text")


def render_tsv(t: Transcript) -> str:
    """Header row, then one row per sentence; no quoting: fields never hold tabs or newlines."""
    rows = ["\t".join(TSV_HEADER)]
    rows += [
        f"{decimal(ms(s.start))}\t{decimal(ms(s.end))}\t{one_line(t.speaker_display(s.speaker))}\t{one_line(s.text)}" for s in t.segments
    ]
    return "\n".join(rows) + "\n"
