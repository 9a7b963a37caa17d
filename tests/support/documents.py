"""Read the md and docx writers' files back with independent libraries (markdown-it-py,
python-docx), into one shape that tests compare with the transcript."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Sequence

from markdown_it import MarkdownIt

from daemon.transcript import Transcript

__all__ = ["Document", "Turn", "assert_holds_transcript", "one_line", "read_docx", "read_markdown"]

TIME = re.compile(r"\[(\d{2,}):(\d{2}):(\d{2})\]")


@dataclass(frozen=True)
class Turn:
    speaker: str
    start_seconds: int
    text: str


@dataclass(frozen=True)
class Document:
    title: str
    details: str
    turns: tuple[Turn, ...]


def one_line(text: str) -> str:
    return " ".join(text.split())


def _seconds(stamp: str) -> int:
    m = TIME.fullmatch(stamp)
    assert m, f"not a [HH:MM:SS] time: {stamp!r}"
    h, mi, s = (int(g) for g in m.groups())
    return (h * 60 + mi) * 60 + s


def _plain(children: Sequence, where: str) -> str:
    """The text of an inline run that must hold no markup at all."""
    kinds = {c.type for c in children}
    assert kinds <= {"text"}, f"markup in {where}: {[(c.type, c.content) for c in children]}"
    return "".join(c.content for c in children)


def read_markdown(text: str, *, gfm: bool = False) -> Document:
    """Parse as CommonMark (with GFM's tables and strikethrough when `gfm`) and insist on
    the writer's structure: an h1, the details paragraph, then per turn a paragraph
    `**speaker** [HH:MM:SS]` and at most one paragraph of plain text."""
    md = MarkdownIt("commonmark")
    if gfm:
        md.enable(["table", "strikethrough"])
    blocks: list[tuple[str, list]] = []  # (the opening tag, inline children)
    opened = ""
    for token in md.parse(text):
        if token.type in ("heading_open", "paragraph_open"):
            opened = token.tag
        elif token.type == "inline":
            # markdown-it leaves empty text tokens around delimiters: they hold nothing
            blocks.append((opened, [c for c in token.children or [] if c.type != "text" or c.content]))
        else:
            assert token.type in ("heading_close", "paragraph_close"), f"unexpected block {token.type}: {token}"
    assert len(blocks) >= 2 and blocks[0][0] == "h1" and blocks[1][0] == "p", blocks[:2]
    title, details = _plain(blocks[0][1], "the title"), _plain(blocks[1][1], "the details")
    turns: list[Turn] = []
    for tag, children in blocks[2:]:
        assert tag == "p", f"unexpected <{tag}>"
        if [c.type for c in children[:3]] == ["strong_open", "text", "strong_close"] and len(children) == 4:
            assert children[3].type == "text" and children[3].content.startswith(" "), children
            turns.append(Turn(children[1].content, _seconds(children[3].content[1:]), ""))
        else:
            assert turns and not turns[-1].text, "a text paragraph that follows no speaker line"
            last = turns[-1]
            turns[-1] = Turn(last.speaker, last.start_seconds, _plain(children, f"{last.speaker}'s turn"))
    return Document(title, details, tuple(turns))


def read_docx(data: bytes) -> Document:
    """Open with python-docx and insist on the writer's structure: a Title paragraph, a
    Details paragraph, then one paragraph per turn: the speaker (style Speaker, bold),
    a space, the time (style Timestamp), a line break and the text."""
    import docx

    paragraphs = docx.Document(io.BytesIO(data)).paragraphs
    assert len(paragraphs) >= 2
    assert paragraphs[0].style.name == "Title" and paragraphs[1].style.name == "Details"
    turns = []
    for p in paragraphs[2:]:
        runs = p.runs
        assert len(runs) in (3, 4), [r.text for r in runs]
        speaker, space, stamp = runs[:3]
        assert speaker.style.name == "Speaker" and speaker.style.font.bold
        assert space.text == " " and stamp.style.name == "Timestamp"
        text = ""
        if len(runs) == 4:
            assert runs[3].text.startswith("\n"), runs[3].text  # python-docx shows <w:br/> as "\n"
            text = runs[3].text[1:]
        turns.append(Turn(speaker.text, _seconds(stamp.text), text))
    return Document(paragraphs[0].text, paragraphs[1].text, tuple(turns))


def assert_holds_transcript(doc: Document, transcript: Transcript) -> None:
    """One entry per speaker turn, with its speaker, start (to the second) and text, and
    so every segment's text, in order, under its own speaker."""
    expected = [Turn(transcript.speaker_display(t.speaker), round(t.start * 1000) // 1000, one_line(t.text))
                for t in transcript.turns()]
    assert list(doc.turns) == expected
    _assert_segments_in_order(doc.turns, transcript)


def _assert_segments_in_order(turns: Sequence[Turn], transcript: Transcript) -> None:
    k, at = 0, 0
    for seg in transcript.segments:
        text = one_line(seg.text)
        if not text:
            continue
        speaker = transcript.speaker_display(seg.speaker)
        while k < len(turns) and not (turns[k].speaker == speaker and text in turns[k].text[at:]):
            k, at = k + 1, 0
        assert k < len(turns), f"segment missing or out of order: {seg}"
        at = turns[k].text.index(text, at) + len(text)
