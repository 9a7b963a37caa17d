"""Helpers shared by the writers: millisecond times, clock strings, display widths,
and the title and details line that the documents for people (md, docx; html its
title) open with.

Times are turned into whole milliseconds once, with `ms()`, and every format is
printed from that integer, so that json, tsv, srt, vtt and the sentence file
agree to the millisecond (no float formatting drift between them).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

from ..transcript import Transcript


def ms(seconds: float) -> int:
    """Seconds -> whole milliseconds (round half to even, like `round`)."""
    return int(round(seconds * 1000))


def seconds(milliseconds: int) -> float:
    """The float that json carries for a millisecond time (3.48, not 3.4800000001)."""
    return milliseconds / 1000


def decimal(milliseconds: int) -> str:
    """`3.480`: seconds with three decimals, printed from the integer (tsv)."""
    sign = "-" if milliseconds < 0 else ""
    whole, frac = divmod(abs(milliseconds), 1000)
    return f"{sign}{whole}.{frac:03d}"


def clock(milliseconds: int, sep: str) -> str:
    """`HH:MM:SS<sep>mmm` (srt uses ",", vtt "."); hours grow past two digits."""
    h, m, s, frac = _split(milliseconds)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{frac:03d}"


def short_clock(milliseconds: int) -> str:
    """`MM:SS.mmm` below one hour, `H:MM:SS.mmm` from one hour on (sentence file)."""
    h, m, s, frac = _split(milliseconds)
    if h:
        return f"{h}:{m:02d}:{s:02d}.{frac:03d}"
    return f"{m:02d}:{s:02d}.{frac:03d}"


def hms(milliseconds: int) -> str:
    """`HH:MM:SS`, truncated to the second (txt paragraphs, html)."""
    h, m, s, _ = _split(milliseconds)
    return f"{h:02d}:{m:02d}:{s:02d}"


def brief_hms(milliseconds: int) -> str:
    """`MM:SS` below one hour, `HH:MM:SS` from one hour on, truncated (durations, talk time)."""
    return hms(milliseconds).removeprefix("00:")


def _split(milliseconds: int) -> tuple[int, int, int, int]:
    milliseconds = max(0, milliseconds)  # no format here has a sign
    total_s, frac = divmod(milliseconds, 1000)
    total_m, s = divmod(total_s, 60)
    h, m = divmod(total_m, 60)
    return h, m, s, frac


def one_line(text: str) -> str:
    """Collapse newlines, tabs and runs of spaces: every format here is line-oriented."""
    return " ".join(text.split())


def char_width(char: str) -> int:
    """Display columns: CJK and fullwidth characters take two, so `42` columns hold ~20 of them."""
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def width(text: str) -> int:
    if text.isascii():  # the common case, and much faster
        return len(text)
    return sum(char_width(c) for c in text)


def date_time(moment: datetime) -> str:
    """`2025-03-04 09:15 (UTC+08:00)`: to the minute, in the time zone it carries."""
    offset = moment.isoformat(timespec="seconds")[19:] or "+00:00"  # naive: taken as UTC
    return f"{moment:%Y-%m-%d %H:%M} (UTC{offset})"


def count_of(n: int, noun: str) -> str:
    """`1 speaker`, `2 speakers`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def title(t: Transcript) -> str:
    """What a document for people is called: the source's name."""
    return t.source.name if t.source else "Transcript"


def details(t: Transcript) -> tuple[str, ...]:
    """The facts under a document's title, as plain text: the date (the audio file's
    modification time, where the transcript has it), the duration, and every speaker
    with their talk time. Nothing here depends on when it is rendered."""
    items = []
    if t.source is not None and t.source.modified_at is not None:
        items.append(f"Date: {date_time(t.source.modified_at)}")
    items.append(f"Duration: {brief_hms(ms(t.audio_seconds))}")
    if t.speakers:
        items.append("Speakers: " + ", ".join(f"{sp.display} ({brief_hms(ms(sp.talk_seconds))})" for sp in t.speakers))
    return tuple(items)
