"""Writers: pure functions from a `Transcript` to the content of one output file.

`render(fmt, transcript)` gives the content: text (`str`) for every format but
`docx`, whose content is bytes; `render_bytes()` gives any format's file as bytes,
and `publish()` writes a set of files atomically. Output is deterministic (no "now"
anywhere), so a re-run or a re-render of the same transcript rewrites byte-identical
files. Every text file is UTF-8 with "\\n" line ends. Every format shows a speaker
as `Transcript.speaker_display` says (its name where it has one, else `SpeakerN`). The formats, in `FORMATS`
order:

- `json` (`.json`): the full record, schema `spkd.transcript/1`, documented in
  `daemon/writers/json_format.py`; `parse_json()` reads it back.
- `txt` (`.txt`): one paragraph per speaker turn, `Speaker1 [HH:MM:SS]: text`
  (turn start, truncated to the second), a blank line between paragraphs.
- `srt` (`.srt`): cues numbered from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text
  `Speaker1: …`; at most 2 lines of 42 columns per cue (a CJK character is two
  columns, so ~20 per line), long sentences split into several cues with the time
  shared in proportion to text width; cues never overlap and always have
  end > start (see `subtitles.py`). Hours keep counting past 99.
- `vtt` (`.vtt`): `WEBVTT`, the same cues as srt, `HH:MM:SS.mmm`, text as
  `<v Speaker1>…` with `&`, `<`, `>` escaped.
- `sentences` (`.sentences.txt`): per sentence `[1] 00:03.480 -> 00:05.080 | Speaker1`,
  the text, a blank line. Each time is `MM:SS.mmm` below one hour and
  `H:MM:SS.mmm` from one hour on (decided per timestamp, so a file may mix both;
  parse with `(?:(\\d+):)?(\\d+):(\\d+)\\.(\\d{3})`). Raw sentence times, not clamped.
- `tsv` (`.tsv`): header `start end speaker text` (tab-separated), seconds with 3
  decimals, speaker as `Speaker1`; no quoting (read with `csv.QUOTE_NONE`): tabs
  and newlines in text become spaces.
- `html` (`.html`): a self-contained page with a speaker timeline, legend and the
  transcript by turns (see `html_page.py`).
- `md` (`.md`): CommonMark: `# title`, the details line (date, duration, speakers
  with talk time), then per turn `**Speaker1** [HH:MM:SS]` and the text as a
  paragraph; transcript text and names escaped so that they never become markup
  (see `markdown_doc.py`).
- `docx` (`.docx`): a Word document (python-docx) with the same structure: one
  paragraph per turn, speakers bold, times muted, named styles, an East Asian font
  for CJK text; fixed zip entry times (see `word_doc.py`).

Not a format of `output.formats`: a job's summary, once it has one, is rendered by
`summary_doc.render_summary_markdown` (`NAME.summary.md`), and `render`/`publish` given
its `summary` object add it at the end of the json (daemon/jobs/results.py does both).

An empty transcript gives a valid file in every format (srt: empty; vtt: just
the header; tsv: just the header; json: empty lists; md, docx: title and details).
In the line formats, md and docx, runs of whitespace and newlines inside a sentence
are collapsed to one space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from daemon import files

from ..transcript import Transcript
from .html_page import render_html
from .json_format import parse_json, render_json
from .markdown_doc import render_markdown
from .plain import render_sentences, render_tsv, render_txt
from .subtitles import Cue, build_cues, render_srt, render_vtt
from .word_doc import render_docx

__all__ = ["FORMATS", "Cue", "build_cues", "extension", "parse_json", "publish", "render", "render_bytes"]

_WRITERS: dict[str, tuple[str, Callable[[Transcript], str | bytes]]] = {
    "json": (".json", render_json),
    "txt": (".txt", render_txt),
    "srt": (".srt", render_srt),
    "vtt": (".vtt", render_vtt),
    "sentences": (".sentences.txt", render_sentences),
    "tsv": (".tsv", render_tsv),
    "html": (".html", render_html),
    "md": (".md", render_markdown),
    "docx": (".docx", render_docx),
}

FORMATS: tuple[str, ...] = tuple(_WRITERS)


def _writer(fmt: str) -> tuple[str, Callable[[Transcript], str | bytes]]:
    try:
        return _WRITERS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown output format {fmt!r}; valid formats: {', '.join(FORMATS)}") from None


def extension(fmt: str) -> str:
    """File name suffix for a format, with its dot (`sentences` -> `.sentences.txt`)."""
    return _writer(fmt)[0]


def render(fmt: str, transcript: Transcript, *, summary: Mapping[str, Any] | None = None) -> str | bytes:
    """The content of a format's file: `str` for the text formats, `bytes` for docx.
    `summary`: the job's summary object, which the json format carries at its end."""
    if fmt == "json" and summary is not None:
        return render_json(transcript, summary=summary)
    return _writer(fmt)[1](transcript)


def render_bytes(fmt: str, transcript: Transcript, *, summary: Mapping[str, Any] | None = None) -> bytes:
    """A format's file exactly as `publish` writes it (text formats in UTF-8)."""
    content = render(fmt, transcript, summary=summary)
    return content.encode("utf-8") if isinstance(content, str) else content


def publish(transcript: Transcript, *, directory: Path, stem: str, formats: Sequence[str],
            summary: Mapping[str, Any] | None = None) -> list[Path]:
    """Write `<directory>/<stem><extension>` for each format; return the paths, in order.

    Everything is rendered before anything is written (an unknown format or a
    writer bug leaves the directory untouched). Each file goes to a hidden temp
    name in the same directory, is fsynced and `os.replace`d over any previous
    version, so readers see the old file or the new one, never half of one; the
    directory is fsynced at the end so the renames survive a power cut.
    """
    if not stem or stem in (".", "..") or os.sep in stem or (os.altsep and os.altsep in stem):
        raise ValueError(f"stem must be a plain file name, not {stem!r}")
    directory = Path(directory)
    rendered = {fmt: render_bytes(fmt, transcript, summary=summary) for fmt in dict.fromkeys(formats)}
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, data in rendered.items():
        path = directory / (stem + extension(fmt))
        files.atomic_write(path, data, sync_dir=False)
        paths.append(path)
    files.fsync_dir(directory)
    return paths


