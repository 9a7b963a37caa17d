"""The documents for people, md and docx, read back with independent libraries:
markdown-it-py (CommonMark, and GFM's tables and strikethrough) and python-docx."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from daemon.transcript import Segment, Source, Transcript
from daemon.writers import render, render_bytes
from daemon.writers.markdown_doc import escape
from daemon.writers.word_doc import EAST_ASIAN_FONT, LATIN_FONT, ZIP_ENTRY_TIME
from tests.support.documents import Document, assert_holds_transcript, one_line, read_docx, read_markdown

REPO = Path(__file__).resolve().parents[2]
RECORDED = datetime(2025, 3, 4, 9, 15, 7, tzinfo=timezone(timedelta(hours=8)))

SEGMENTS = (
    Segment(0.0, 2.5, 1, "Hello, everyone."),
    Segment(2.5, 9.75, 1, "Welcome to the review; we have a lot to cover."),
    Segment(10.0, 18.2, 2, "你好，我是王总。今天讨论项目进展。"),
    Segment(18.3, 26.0, 2, "大家有什么意见吗？"),
    Segment(26.5, 29.5, 1, "Let us start with the budget."),
    Segment(3725.125, 3727.9, 2, "过了一个小时。"),  # past one hour
)

# Texts that are markup in some Markdown dialect; every one must render as itself.
HOSTILE = (
    "*stars* and **strong** and ***both***",
    "_under_ and __dunder__ snake_case_name",
    "# a heading",
    "## another ##",
    "ends with a closing sequence #",
    "1. an ordered list",
    "2) another one",
    "1986. A great year",
    "- a bullet",
    "+ a plus bullet",
    "* a star bullet",
    "> a quote",
    ">> nested",
    "---",
    "***",
    "___",
    "- - -",
    "===",
    "<b>bold</b> <script>alert(1)</script>",
    "<!-- a comment -->",
    "<div>a block</div>",
    "<http://example.com> <me@example.com>",
    "[a link](http://example.com) and [ref][1]",
    "[1]: http://example.com",
    "![an image](x.png)",
    "`code` and ``double`` and ```fence```",
    "```",
    "~~~",
    "~~struck~~ and ~single~",
    "| a | b |",
    "a | b",
    "back\\slash and trailing \\",
    "\\*escaped already\\*",
    "&amp; &lt; &#35; &#x23; &copy; AT&T R&D &",
    "$x^2$ and $$y$$ cost $5",
    "tabs\tand\nnew lines\r\nand   runs",
    "    indented code",
    "line with two trailing spaces  ",
    "王总说：*重点* 是 #进度# 和 [风险]。",
    "a <b>tag</b> then 中文 <i>斜体</i>",
    "{curly} (round) \"quoted\" 'single' : colon ; semi ! bang ? query @ at % per ^ caret",
    "*",
    "_",
    "#",
    "-",
    "1.",
    "\\",
    "www.example.com and https://example.com/a_b_c",
)


def make(segments: tuple[Segment, ...] = SEGMENTS, *, name: str = "会议 记录.m4a",
         modified_at: datetime | None = RECORDED) -> Transcript:
    return Transcript(segments=segments, audio_seconds=3730.0,
                      source=Source(name=name, duration_seconds=3730.0, modified_at=modified_at))


def hostile(texts: tuple[str, ...] = HOSTILE) -> Transcript:
    """Each text its own turn (speakers alternate), so each is a paragraph of its own."""
    return make(tuple(Segment(float(i), i + 0.5, 1 + i % 2, text) for i, text in enumerate(texts)))


def docx_xml(data: bytes, member: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read(member).decode("utf-8")


# --- md -----------------------------------------------------------------------------------


def test_md_layout() -> None:
    text = render("md", make())
    assert text.startswith(
        "# 会议 记录.m4a\n\n"
        "Date: 2025-03-04 09:15 (UTC+08:00) · Duration: 01:02:10 · Speakers: Speaker1 (00:12), Speaker2 (00:18)\n\n"
        "**Speaker1** [00:00:00]\n\n"
        "Hello, everyone. Welcome to the review; we have a lot to cover.\n\n"
        "**Speaker2** [00:00:10]\n\n"
        "你好，我是王总。今天讨论项目进展。大家有什么意见吗？\n\n"
    )
    assert text.endswith("**Speaker2** [01:02:05]\n\n过了一个小时。\n")


@pytest.mark.parametrize("gfm", [False, True], ids=["commonmark", "gfm"])
def test_md_renders_back_to_the_transcript(gfm: bool) -> None:
    t = make()
    doc = read_markdown(render("md", t), gfm=gfm)
    assert doc.title == "会议 记录.m4a"
    assert doc.details.startswith("Date: 2025-03-04 09:15 (UTC+08:00) · Duration: 01:02:10 · ")
    assert_holds_transcript(doc, t)


@pytest.mark.parametrize("gfm", [False, True], ids=["commonmark", "gfm"])
def test_md_hostile_text_never_becomes_markup(gfm: bool) -> None:
    t = hostile()
    doc = read_markdown(render("md", t), gfm=gfm)  # every turn's text a plain-text paragraph
    assert_holds_transcript(doc, t)
    assert [turn.text for turn in doc.turns] == [one_line(text) for text in HOSTILE]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_renders_as_itself_anywhere_in_a_paragraph(text: str) -> None:
    for before, after in (("", ""), ("before ", " after"), ("中文", "中文")):
        [turn] = read_markdown(f"# t\n\nd\n\n**S** [00:00:00]\n\n{before}{escape(text)}{after}\n").turns
        assert turn.text == f"{before}{one_line(text)}{after}"


def test_md_hostile_names_and_title() -> None:
    """Names come through `Transcript.speaker_display`, whatever people are called."""
    names = {1: "*Dr.* [Bob] <b>", 2: "王总 #1", 3: "_x_ `y` | 1. \\"}
    t = make(tuple(Segment(float(i), i + 0.5, 1 + i % 3, f"turn {i}") for i in range(6)),
             name="# 1. <notes> *draft* [v2].m4a").replace(speaker_names=names)
    doc = read_markdown(render("md", t))
    assert doc.title == "# 1. <notes> *draft* [v2].m4a"
    assert [turn.speaker for turn in doc.turns] == [names[1], names[2], names[3]] * 2
    assert doc.details.endswith(f"Speakers: {names[1]} (00:01), {names[2]} (00:01), {names[3]} (00:01)")
    assert_holds_transcript(doc, t)


def test_md_empty_and_undated() -> None:
    doc = read_markdown(render("md", Transcript(segments=(), audio_seconds=0.0)))
    assert doc == Document(title="Transcript", details="Duration: 00:00", turns=())
    t = make(modified_at=None)
    assert read_markdown(render("md", t)).details.startswith("Duration: 01:02:10 · Speakers: ")


def test_md_turn_without_text_has_no_paragraph() -> None:
    t = make((Segment(0.0, 1.0, 1, ""), Segment(1.0, 2.0, 2, "hi")))
    assert "**Speaker1** [00:00:00]\n\n**Speaker2** [00:00:01]\n\nhi\n" in render("md", t)
    assert_holds_transcript(read_markdown(render("md", t)), t)


# --- docx ---------------------------------------------------------------------------------


def test_docx_reads_back_with_python_docx() -> None:
    import docx

    t = make()
    data = render("docx", t)
    doc = read_docx(data)  # Title, Details, then per turn: Speaker, Timestamp, the text
    assert doc.title == "会议 记录.m4a"
    assert doc.details == read_markdown(render("md", t)).details
    assert_holds_transcript(doc, t)
    props = docx.Document(io.BytesIO(data)).core_properties
    assert props.title == "会议 记录.m4a"
    assert props.created == props.modified == datetime(2025, 3, 4, 1, 15, 7, tzinfo=timezone.utc)


def test_docx_styles_name_an_east_asian_font() -> None:
    import docx

    data = render("docx", make())
    styles = docx_xml(data, "word/styles.xml")
    defaults = re.search(r"<w:rPrDefault>.*?</w:rPrDefault>", styles, re.S).group(0)
    normal = re.search(r'<w:style [^>]*w:styleId="Normal".*?</w:style>', styles, re.S).group(0)
    title = re.search(r'<w:style [^>]*w:styleId="Title".*?</w:style>', styles, re.S).group(0)
    for xml in (defaults, normal, title):
        fonts = re.search(r"<w:rFonts [^>]*/>", xml).group(0)
        assert f'w:eastAsia="{EAST_ASIAN_FONT}"' in fonts and f'w:ascii="{LATIN_FONT}"' in fonts, fonts
        assert "Theme=" not in fonts and "w:cstheme" not in fonts, fonts  # a theme font would win over both
    assert 'w:eastAsia="zh-CN"' in defaults
    speaker = docx.Document(io.BytesIO(data)).styles["Speaker"]
    timestamp = docx.Document(io.BytesIO(data)).styles["Timestamp"]
    assert speaker.font.bold and timestamp.font.color.rgb is not None and timestamp.font.size is not None


def test_docx_is_byte_stable_whatever_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_000_000_000.0)
    first = render_bytes("docx", make())
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    assert render_bytes("docx", make()) == first
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        infos = z.infolist()
    assert {i.date_time for i in infos} == {ZIP_ENTRY_TIME}
    assert infos[0].filename == "[Content_Types].xml"
    assert "docProps/thumbnail.jpeg" not in {i.filename for i in infos}  # the blank template's preview
    assert "thumbnail" not in docx_xml(first, "_rels/.rels")


def test_docx_same_bytes_in_another_process() -> None:
    """Nothing in the package depends on the process (hash seeds, set order, the clock)."""
    script = ("import hashlib, sys; from tests.unit.test_documents import make; "
              "from daemon.writers import render_bytes; "
              "sys.stdout.write(hashlib.sha256(render_bytes('docx', make())).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert digests == {hashlib.sha256(render_bytes("docx", make())).hexdigest()}


def test_docx_hostile_text_control_characters_and_long_title() -> None:
    import docx

    texts = (*HOSTILE, "nul\x00 bell\x07 escape\x1b", "lone surrogate \ud800 here")
    t = hostile(texts).replace(source=Source(name="名" * 300 + "\x01.m4a"))
    data = render("docx", t)
    doc = read_docx(data)
    xml_safe = [one_line(text).replace("\x00", "\ufffd").replace("\x07", "\ufffd").replace("\x1b", "\ufffd")
                .replace("\ud800", "\ufffd") for text in texts]
    assert [turn.text for turn in doc.turns] == xml_safe
    assert doc.title == "名" * 300 + "\ufffd.m4a"
    assert docx.Document(io.BytesIO(data)).core_properties.title == "名" * 255  # python-docx's limit


def test_docx_empty_and_undated() -> None:
    import docx

    empty = render("docx", Transcript(segments=(), audio_seconds=0.0))
    assert read_docx(empty) == Document(title="Transcript", details="Duration: 00:00", turns=())
    props = docx.Document(io.BytesIO(render("docx", make(modified_at=None)))).core_properties
    assert props.created is None and props.modified is None  # no date invented, none of the template's


def test_docx_turn_without_text() -> None:
    t = make((Segment(0.0, 1.0, 1, ""), Segment(1.0, 2.0, 2, "hi")))
    assert_holds_transcript(read_docx(render("docx", t)), t)


def test_docx_shows_speaker_names() -> None:
    t = make().replace(speaker_names={1: "王总", 2: "Li <Wei>"})
    doc = read_docx(render("docx", t))
    assert [turn.speaker for turn in doc.turns][:2] == ["王总", "Li <Wei>"]
    assert_holds_transcript(doc, t)
