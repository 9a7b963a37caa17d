"""Helpers shared by the writers: millisecond times, clock strings, display widths.

Times are turned into whole milliseconds once, with `ms()`, and every format is
printed from that integer, so that json, tsv, srt, vtt and the sentence file
agree to the millisecond (no float formatting drift between them).
"""

from __future__ import annotations

import unicodedata


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
