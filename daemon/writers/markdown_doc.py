"""The `md` format: a CommonMark document to paste into notes, wikis and reports.

    # meeting.m4a

    Date: 2025-03-04 09:15 (UTC+08:00) · Duration: 12:34 · Speakers: Speaker1 (08:00), Speaker2 (04:34)

    **Speaker1** [00:00:03]

    The first turn's text, one paragraph.

    **Speaker2** [00:01:02]

    …

A title (the source name), the details line (see `common.details`), then per speaker
turn a line with the speaker in bold and the turn's start, and the turn's text as a
paragraph of its own (none where the turn has no text). Everything that comes from the
transcript (the title, names, text) goes through `escape()`, so a transcript never
turns into markup, whatever it says: its text renders back as exactly itself (with
whitespace runs collapsed, like the line formats). One thing escaping cannot stop:
renderers with GFM's autolinks make a bare `www.…` or `https://…` a link (its text
unchanged).
"""

from __future__ import annotations

import re

from ..transcript import Transcript
from .common import details, hms, ms, one_line, title

__all__ = ["escape", "render_markdown"]

# Characters that open or close inline markup anywhere in a line: backslash escapes,
# code spans, emphasis, links and images, raw HTML and autolinks, GFM tables and
# strikethrough, headings' closing sequence, and the `$` of the math extensions that
# wikis and GitHub turn on. CommonMark lets any ASCII punctuation be escaped this way.
_INLINE = re.compile(r"([\\`*_\[\]<|~$#])")
# `&` only where it would start a character reference (`&amp;`, `&#35;`, `&#x23;`).
_ENTITY = re.compile(r"&(?=#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
# What makes a block of a line's start: a block quote, a bullet list item or thematic
# break, an ordered list item (`1.`, `2)`). (`#`, `*`, `_`, `~`, `` ` ``, `<` and `|` are
# escaped everywhere; indentation cannot survive `one_line`; every block here follows a
# blank line, so no line can underline the one before it into a heading.)
_BLOCK_START = re.compile(r"^(?:([>+-])|(\d+)([.)]))")


def escape(text: str) -> str:
    """`text` as one line of Markdown that renders as exactly the text, with no markup."""
    text = _ENTITY.sub(r"\\&", _INLINE.sub(r"\\\1", one_line(text)))
    return _BLOCK_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", text, count=1)


def render_markdown(t: Transcript) -> str:
    blocks = [f"# {escape(title(t))}", escape(" · ".join(details(t)))]
    for turn in t.turns():
        blocks.append(f"**{escape(t.speaker_display(turn.speaker))}** [{hms(ms(turn.start))}]")
        if one_line(turn.text):
            blocks.append(escape(turn.text))
    return "\n\n".join(blocks) + "\n"
