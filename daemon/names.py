"""The one rule for names that people give and spkd shows: voices, renamed speakers,
sidecar `channels` names, and (for the characters) uploaded file names.

A name reaches terminals (`spkd speakers`, `spkd search`), every output format and,
for a voice, a folder under paths.voices. So a name:

- is normalised (`normal_name`): NFC, runs of blanks (tabs, newlines too) as one space,
  none at either end;
- holds no control character (C0 and C1, ESC, BEL, NUL…), no bidirectional override or
  isolate (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C), nothing else of
  Unicode's "other" categories (format, surrogate, private use, unassigned) save the
  zero-width joiner and non-joiner that scripts and emoji sequences need;
- has at most MAX_NAME characters and at most MAX_NAME_BYTES bytes of UTF-8 (a folder
  name is limited in bytes: 64 emoji are 256 bytes, more than a file name may have);
- is not `/`, `\\` or `.`-led (it is a folder's name), and not `SpeakerN` (how an
  unnamed speaker is shown).

`name_problem` says why a name breaks the rule (None: it does not); callers raise their
own error with it. `text_problem` is the character part alone, for an uploaded file's
name (daemon.web.upload), which has its own rules for the rest.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["MAX_NAME", "MAX_NAME_BYTES", "name_problem", "normal_name", "text_problem"]

MAX_NAME = 64
# 255 bytes is a folder name's limit; a removed voice's folder gets a 17-byte time stamp
# and perhaps " (n)" (daemon.voices.library.remove): 200 leaves room for both.
MAX_NAME_BYTES = 200
# Joiners that scripts (ZWNJ in Persian) and emoji sequences (ZWJ) need: format characters, but harmless.
_ALLOWED_FORMAT = frozenset("\u200c\u200d")


def normal_name(name: str) -> str:
    """A name as spkd keeps it: NFC, runs of blanks as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def text_problem(text: str, *, what: str = "a name") -> str | None:
    """Why `text` holds a character no name may hold (a control character, a
    bidirectional override or isolate, …), or None."""
    for ch in text:
        if ch in _ALLOWED_FORMAT:
            continue
        if unicodedata.category(ch)[0] == "C":
            kind = ("a bidirectional control" if unicodedata.bidirectional(ch) in ("LRE", "RLE", "LRO", "RLO", "PDF",
                                                                                  "LRI", "RLI", "FSI", "PDI")
                    or ch in "\u200e\u200f\u061c" else "a control character")
            return f"{what} may not contain {kind} (U+{ord(ch):04X})"
    return None


def name_problem(name: Any, *, what: str = "a voice's name", folder: bool = True,
                 reserved: bool = True) -> str | None:
    """Why `name` cannot be a name (of a voice, a speaker, a channel: `what` says which
    in the message), or None. `folder`: it may become a folder's name, so no `/`, `\\` or
    leading `.`; `reserved`: `SpeakerN` is refused."""
    if not isinstance(name, str):
        return f"{what} must be text, got {name!r}"
    cleaned = normal_name(name)  # blanks (a tab, a newline) become spaces first
    bad = text_problem(cleaned, what=what)
    if bad is not None:
        return f"{ascii(cleaned)}: {bad}"
    if not cleaned:
        return f"{what} must not be empty"
    if len(cleaned) > MAX_NAME:
        return f"{cleaned[:20]}…: {what} has at most {MAX_NAME} characters"
    if len(cleaned.encode("utf-8")) > MAX_NAME_BYTES:
        return f"{cleaned[:20]}…: {what} has at most {MAX_NAME_BYTES} bytes of UTF-8 (this one has " \
               f"{len(cleaned.encode('utf-8'))})"
    if folder and any(ch in "/\\" for ch in cleaned):
        return f"{cleaned!r}: {what} may not contain '/' or '\\'"
    if folder and cleaned.startswith("."):
        return f"{cleaned!r}: {what} may not start with '.'"
    if reserved and cleaned.lower().startswith("speaker") and cleaned[7:].isdigit():
        return f"{cleaned!r}: SpeakerN is how unnamed speakers are shown; choose a person's name"
    return None
