"""Writers: every format parsed back with an independent parser and checked against the transcript."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import sys
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
import srt
import webvtt

from daemon.transcript import EngineInfo, ModelInfo, Segment, Source, Timing, Transcript
from daemon.writers import FORMATS, build_cues, extension, parse_json, publish, render, render_bytes
from daemon.writers.common import width
from daemon.writers.html_page import speaker_colour
from daemon.writers.subtitles import LINE_WIDTH, MAX_LINES

LONG_EN = (
    "So what we found was that the new model, which we trained last week on the larger data set, "
    "is about twice as fast as the old one and also more accurate on noisy recordings."
)
LONG_ZH = "你好，我是第二个说话人，今天我们讨论一下这个项目的进展情况以及下一步的计划安排，大家有什么意见吗？"

SEGMENTS = (
    Segment(0.0, 2.5, 1, "Hello, everyone."),
    Segment(2.5, 14.75, 1, LONG_EN),  # long: split into several cues
    Segment(15.0, 18.2, 2, "你好。"),
    Segment(18.0, 26.0, 2, LONG_ZH),  # overlaps the previous sentence by 200 ms
    Segment(26.0, 26.0, 1, "Zero."),  # zero-length
    Segment(27.0, 29.5, 1, 'Tags <b>&</b> --> "quoted"\tand\na newline.'),
    Segment(3725.125, 3727.9, 2, "过了一个小时。"),  # past one hour
)


RECORDED = datetime(2025, 3, 4, 9, 15, 7, tzinfo=timezone(timedelta(hours=8)))


def make(segments: tuple[Segment, ...] = SEGMENTS, audio_seconds: float = 3730.0) -> Transcript:
    return Transcript(
        segments=segments,
        audio_seconds=audio_seconds,
        source=Source(name="会议 <1>.m4a", sha256="ab" * 32, duration_seconds=audio_seconds, modified_at=RECORDED),
        engine=EngineInfo(
            funasr_version="1.3.1",
            device="cuda:0",
            models=(ModelInfo("asr", "paraformer-zh", "v2.0.4"), ModelInfo("spk", "cam++", None)),
        ),
        timing=Timing(load_seconds=12.5, transcribe_seconds=30.25),
    )


EMPTY = Transcript(segments=(), audio_seconds=0.0)


def ms(td) -> int:
    return round(td.total_seconds() * 1000)


def vtt_ms(stamp: str) -> int:
    h, m, s = stamp.split(":")
    return (int(h) * 3600 + int(m) * 60) * 1000 + round(float(s) * 1000)


def one_line(text: str) -> str:
    return " ".join(text.split())


def assert_cue_invariants(spans: list[tuple[int, int]]) -> None:
    for a, b in spans:
        assert b > a, spans
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans


# --- registry -----------------------------------------------------------------------------


def test_formats_and_extensions() -> None:
    assert FORMATS == ("json", "txt", "srt", "vtt", "sentences", "tsv", "html", "md", "docx")
    assert [extension(f) for f in FORMATS] == [".json", ".txt", ".srt", ".vtt", ".sentences.txt", ".tsv", ".html",
                                               ".md", ".docx"]


@pytest.mark.parametrize("call", [lambda: render("pdf", make()), lambda: extension("pdf"),
                                  lambda: render_bytes("pdf", make())])
def test_unknown_format_names_it_and_the_valid_ones(call) -> None:
    with pytest.raises(ValueError, match=r"'pdf'.*json, txt, srt, vtt, sentences, tsv, html, md, docx"):
        call()


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic(fmt: str) -> None:
    assert render_bytes(fmt, make()) == render_bytes(fmt, make())
    content = render(fmt, make())
    if fmt == "docx":
        assert isinstance(content, bytes) and content.startswith(b"PK\x03\x04")  # a zip package
    else:
        assert isinstance(content, str) and content.endswith("\n")
        assert render_bytes(fmt, make()) == content.encode("utf-8")


# --- srt / vtt ----------------------------------------------------------------------------


def test_srt_cues_ordered_without_overlap_and_speaker_on_each() -> None:
    subs = list(srt.parse(render("srt", make())))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert_cue_invariants([(ms(s.start), ms(s.end)) for s in subs])
    assert all(re.match(r"Speaker[12]: \S", s.content) for s in subs)
    assert ms(subs[-1].start) == 3725125  # past an hour: 01:02:05,125
    assert "01:02:05,125 --> 01:02:07,900" in render("srt", make())


def test_srt_unsplit_sentences_keep_their_times() -> None:
    subs = list(srt.parse(render("srt", make())))
    by_text = {s.content: (ms(s.start), ms(s.end)) for s in subs}
    assert by_text["Speaker1: Hello, everyone."] == (0, 2500)
    assert by_text["Speaker2: 过了一个小时。"] == (3725125, 3727900)
    assert by_text["Speaker2: 你好。"] == (15000, 18000)  # clamped to the overlapping next sentence
    assert by_text["Speaker1: Zero."][0] == 26000  # zero-length: given a minimal duration
    assert by_text["Speaker1: Zero."][1] > 26000


@pytest.mark.parametrize("index, joiner", [(1, " "), (3, "")])
def test_srt_long_sentence_split_into_readable_cues(index: int, joiner: str) -> None:
    seg = SEGMENTS[index]
    prefix = f"{seg.speaker_label}: "
    subs = [s for s in srt.parse(render("srt", make())) if s.content.startswith(prefix)]
    parts = [s for s in subs if ms(s.start) >= round(seg.start * 1000) and ms(s.end) <= round(seg.end * 1000)]
    assert len(parts) >= 2
    for s in parts:
        lines = s.content.split("\n")
        assert len(lines) <= MAX_LINES
        assert all(width(line) <= LINE_WIDTH for line in lines), lines
        assert not any(line[:1] in "，。、？" for line in lines)  # no line starts with punctuation
    text = joiner.join(line for s in parts for line in s.content.removeprefix(prefix).split("\n"))
    assert text == seg.text
    # The pieces tile the sentence's time, each share proportional to its length.
    spans = [(ms(s.start), ms(s.end)) for s in parts]
    assert spans[0][0] == round(seg.start * 1000)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    if index == 1:  # not clamped by the next sentence
        assert spans[-1][1] == round(seg.end * 1000)


def test_vtt_same_cues_as_srt_with_voice_tags_and_escaping() -> None:
    text = render("vtt", make())
    assert text.startswith("WEBVTT\n\n")
    captions = webvtt.from_string(text).captions
    subs = list(srt.parse(render("srt", make())))
    assert len(captions) == len(subs)
    for cap, sub in zip(captions, subs):
        assert (vtt_ms(cap.start), vtt_ms(cap.end)) == (ms(sub.start), ms(sub.end))
        assert cap.voice == sub.content.split(":")[0]
        unescaped = cap.text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        assert f"{cap.voice}: {unescaped}" == sub.content
        assert "-->" not in cap.raw_text
    assert "Tags &lt;b&gt;&amp;&lt;/b&gt; --&gt; &quot;" not in text  # quotes need no escaping
    assert '<v Speaker1>Tags &lt;b&gt;&amp;&lt;/b&gt; --&gt;\n"quoted" and a newline.\n' in text
    assert "01:02:05.125 --> 01:02:07.900" in text


def test_cues_hold_for_awkward_timings() -> None:
    segs = (
        Segment(-0.5, 0.0, 1, "negative"),
        Segment(0.0, 0.0, 2, "zero"),
        Segment(0.0, 0.0, 1, "zero again at the same instant"),
        Segment(0.0, 5.0, 1, LONG_EN),
        Segment(4.0, 4.0, 2, LONG_ZH),  # zero-length and long: several cues in no time
        Segment(4.0, 4.001, 1, "tiny"),
        Segment(360000.5, 360001.0, 2, "a hundred hours in"),
        Segment(360001.0, 360002.0, 2, "   "),  # no text: no cue
    )
    t = make(segs, audio_seconds=360002.0)
    subs = list(srt.parse(render("srt", t)))
    assert_cue_invariants([(ms(s.start), ms(s.end)) for s in subs])
    assert subs[-1].content == "Speaker2: a hundred hours in"
    assert "100:00:00,500 --> 100:00:01,000" in render("srt", t)
    assert "100:00:00.500 --> 100:00:01.000" in render("vtt", t)
    assert "[7] 100:00:00.500 -> 100:00:01.000 | Speaker2" in render("sentences", t)


def test_cue_invariants_on_random_transcripts() -> None:
    rng = random.Random(1234)
    words = ["alpha", "beta,", "gamma.", "你好", "世界。", "delta", "x" * 50, "&", "<tag>"]
    for _ in range(100):
        segs = []
        for _ in range(rng.randint(0, 12)):
            start = rng.choice([0.0, 1.0, rng.uniform(0, 60)])
            segs.append(
                Segment(
                    round(start, 3),
                    round(start + rng.choice([0.0, 0.001, rng.uniform(0, 10)]), 3),
                    rng.randint(1, 3),
                    " ".join(rng.choice(words) for _ in range(rng.randint(1, 40))),
                )
            )
        t = Transcript(segments=tuple(segs), audio_seconds=80.0)
        cues = build_cues(t.segments)
        assert_cue_invariants([(c.start_ms, c.end_ms) for c in cues])
        assert len(list(srt.parse(render("srt", t)))) == len(cues)
        assert len(webvtt.from_string(render("vtt", t)).captions) == len(cues)


# --- json ---------------------------------------------------------------------------------


def test_json_round_trips() -> None:
    t = make()
    assert parse_json(render("json", t)) == t
    assert parse_json(render("json", t)).source.modified_at.utcoffset() == timedelta(hours=8)  # the zone kept
    assert parse_json(render("json", EMPTY)) == EMPTY


def test_json_document() -> None:
    text = render("json", make())
    assert text.endswith("}\n") and '\n  "schema"' in text  # indent=2, trailing newline
    assert LONG_ZH in text  # ensure_ascii=False
    doc = json.loads(text)
    assert doc["schema"] == "spkd.transcript/1"
    assert doc["source"] == {"name": "会议 <1>.m4a", "sha256": "ab" * 32, "duration_seconds": 3730.0,
                             "modified_at": "2025-03-04T09:15:07+08:00"}
    assert doc["engine"]["models"][1] == {"role": "spk", "name": "cam++", "revision": None}
    assert doc["speakers"] == [
        {"id": 1, "label": "Speaker1", "name": None, "display": "Speaker1", "voice": None, "score": None,
         "renamed": False, "talk_seconds": 17.25, "segments": 4},
        {"id": 2, "label": "Speaker2", "name": None, "display": "Speaker2", "voice": None, "score": None,
         "renamed": False, "talk_seconds": 13.975, "segments": 3},
    ]
    assert doc["segments"][6] == {
        "start": 3725.125,
        "end": 3727.9,
        "speaker": 2,
        "speaker_label": "Speaker2",
        "speaker_name": "Speaker2",
        "text": "过了一个小时。",
    }
    assert doc["text"] == make().text
    assert doc["timing"] == {"load_seconds": 12.5, "transcribe_seconds": 30.25, "rtf": round(30.25 / 3730, 6)}
    assert doc["audio_seconds"] == 3730.0


def test_speaker_names_in_every_format() -> None:
    """A named speaker is shown by its name everywhere (escaped where the format needs
    it); the others keep their labels; names survive the json round trip."""
    t = make().replace(speaker_names={2: "客户 <B&C>"})
    assert parse_json(render("json", t)) == t
    doc = json.loads(render("json", t))
    assert [s["name"] for s in doc["speakers"]] == [None, "客户 <B&C>"]
    assert {s["speaker_name"] for s in doc["segments"]} == {"Speaker1", "客户 <B&C>"}
    assert "客户 <B&C> [" in render("txt", t) and "Speaker1 [" in render("txt", t)
    assert "\n客户 <B&C>: " in render("srt", t)
    vtt = render("vtt", t)
    assert "<v 客户 &lt;B&amp;C&gt;>" in vtt
    assert [c.voice for c in webvtt.from_string(vtt).captions if c.voice != "Speaker1"][0] == "客户 &lt;B&amp;C&gt;"
    assert "| 客户 <B&C>\n" in render("sentences", t) and "\t客户 <B&C>\t" in render("tsv", t)
    page = render("html", t)
    assert "客户 &lt;B&amp;C&gt;" in page and "客户 <B&C>" not in page
    # a long name leaves room on the first subtitle line
    cues = build_cues(t.segments, t.speaker_display)
    assert all(c.speaker_label in ("Speaker1", "客户 <B&C>") for c in cues)


def test_json_nulls_where_unknown_and_rounds_to_ms() -> None:
    t = Transcript(segments=(Segment(1.23456, 2.0004, 1, "x"),), audio_seconds=2.5)
    doc = json.loads(render("json", t))
    assert doc["source"] is None and doc["engine"] is None
    assert doc["timing"] == {"load_seconds": None, "transcribe_seconds": None, "rtf": None}
    assert (doc["segments"][0]["start"], doc["segments"][0]["end"]) == (1.235, 2.0)


def test_parse_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="spkd.transcript/1"):
        parse_json('{"schema": "spkd.transcript/2"}')
    with pytest.raises(ValueError):
        parse_json("[]")


# --- tsv, sentences, txt ------------------------------------------------------------------


def test_tsv_agrees_with_json() -> None:
    rows = list(csv.reader(io.StringIO(render("tsv", make())), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["start", "end", "speaker", "text"]
    segments = json.loads(render("json", make()))["segments"]
    assert len(rows) == len(segments) + 1
    for row, seg in zip(rows[1:], segments):
        assert re.fullmatch(r"\d+\.\d{3}", row[0]) and re.fullmatch(r"\d+\.\d{3}", row[1])
        assert (float(row[0]), float(row[1]), row[2], row[3]) == (
            seg["start"],
            seg["end"],
            seg["speaker_label"],
            one_line(seg["text"]),
        )


SENTENCE = re.compile(
    r"\[(\d+)\] ((?:\d+:)?\d{2}:\d{2}\.\d{3}) -> ((?:\d+:)?\d{2}:\d{2}\.\d{3}) \| (Speaker\d+)\n(.*)\n\n"
)


def sentence_seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.split(":")]
    return round(sum(p * 60**i for i, p in enumerate(reversed(parts))), 3)


def test_sentences_agree_with_json() -> None:
    text = render("sentences", make())
    blocks = SENTENCE.findall(text)
    assert "".join(m.group(0) for m in SENTENCE.finditer(text)) == text  # nothing unparsed
    segments = json.loads(render("json", make()))["segments"]
    assert len(blocks) == len(segments)
    for n, (block, seg) in enumerate(zip(blocks, segments), start=1):
        number, start, end, label, body = block
        assert int(number) == n
        assert (sentence_seconds(start), sentence_seconds(end)) == (seg["start"], seg["end"])
        assert (label, body) == (seg["speaker_label"], one_line(seg["text"]))
    assert text.startswith("[1] 00:00.000 -> 00:02.500 | Speaker1\nHello, everyone.\n\n")
    assert "[7] 1:02:05.125 -> 1:02:07.900 | Speaker2\n" in text


def test_txt_one_paragraph_per_turn() -> None:
    t = make()
    paragraphs = render("txt", t).rstrip("\n").split("\n\n")
    turns = t.turns()
    assert len(paragraphs) == len(turns) == 4
    for para, turn in zip(paragraphs, turns):
        m = re.fullmatch(r"(Speaker\d+) \[(\d{2}):(\d{2}):(\d{2})\]: (.+)", para)
        assert m, para
        h, mi, s = int(m[2]), int(m[3]), int(m[4])
        assert (m[1], h * 3600 + mi * 60 + s) == (turn.speaker_label, int(turn.start))
        assert m[5] == one_line(turn.text)
    assert paragraphs[0] == f"Speaker1 [00:00:00]: Hello, everyone. {LONG_EN}"
    assert paragraphs[-1] == "Speaker2 [01:02:05]: 过了一个小时。"


# --- html ---------------------------------------------------------------------------------


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False
        self.data: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title" and not self.title  # the page's; SVG blocks have titles too

    def handle_endtag(self, tag) -> None:
        self._in_title = False

    def handle_data(self, data) -> None:
        self.data.append(data)
        if self._in_title:
            self.title += data

    def with_class(self, name: str) -> list[dict[str, str | None]]:
        return [a for _, a in self.elements if name in (a.get("class") or "").split()]


def parse_html(text: str) -> Collector:
    c = Collector()
    c.feed(text)
    c.close()
    return c


def test_html_structure() -> None:
    t = make()
    text = render("html", t)
    page = parse_html(text)
    assert page.title == "会议 <1>.m4a"
    assert ("meta", {"charset": "utf-8"}) in page.elements
    assert any(a.get("id") == "timeline" for _, a in page.elements)
    rows = page.with_class("speaker-row")
    assert [r["data-speaker"] for r in rows] == ["1", "2"]
    segs = page.with_class("seg")
    assert len(segs) == len(t.segments)
    for seg in segs:
        # each block is an SVG rect inside the link to its time (no style attribute: the
        # dashboard shows the same view under a CSP without inline styles)
        link = page.elements[page.elements.index(("rect", seg)) - 1]
        assert link == ("a", {"href": f"#t={seg['data-start']}", "data-start": seg["data-start"],
                              "data-index": seg["data-index"]})
        left, width_ = re.fullmatch(r"([\d.]+)%", seg["x"]).group(1), re.fullmatch(r"([\d.]+)%", seg["width"]).group(1)
        assert 0 <= float(left) <= 100 and 0 <= float(width_) <= 100
    assert not any("style" in a for _, a in page.elements if _ != "html")
    # Percent positions follow the recording's duration.
    assert segs[-1]["x"] == f"{3725.125 / 3730 * 100:.3f}%"
    assert len(page.with_class("turn")) == len(t.turns())
    assert len(page.with_class("sent")) == len(t.segments)
    # Text is escaped: the markup-like sentence is text, not tags.
    assert not any(tag == "b" for tag, _ in page.elements)
    assert any('Tags <b>&</b> --> "quoted" and a newline.' in d for d in page.data)
    # No network: nothing fetched from elsewhere.
    assert not re.search(r"(src|href)=\"(https?:)?//", text)


def test_html_escapes_speaker_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import daemon.transcript

    monkeypatch.setattr(daemon.transcript, "speaker_label", lambda n: f"<b>Li & {n}</b>")
    page = parse_html(render("html", make()))
    assert not any(tag == "b" for tag, _ in page.elements)
    assert "<b>Li & 2</b>" in page.data


def test_html_colours_stable_per_speaker() -> None:
    assert speaker_colour(2) in render("html", make())
    only_two = make((Segment(1.0, 2.0, 2, "hi"),), audio_seconds=3.0)
    page = parse_html(render("html", only_two))
    assert [a["fill"] for a in page.with_class("seg")] == [speaker_colour(2)]
    assert len({speaker_colour(n) for n in range(1, 30)}) == 29


# --- empty --------------------------------------------------------------------------------


def test_empty_transcript_in_every_format() -> None:
    assert render("srt", EMPTY) == "" and list(srt.parse("")) == []
    assert render("vtt", EMPTY) == "WEBVTT\n" and webvtt.from_string(render("vtt", EMPTY)).captions == []
    assert render("txt", EMPTY) == "" and render("sentences", EMPTY) == ""
    assert render("tsv", EMPTY) == "start\tend\tspeaker\ttext\n"
    doc = json.loads(render("json", EMPTY))
    assert (doc["segments"], doc["speakers"], doc["text"]) == ([], [], "")
    page = parse_html(render("html", EMPTY))
    assert page.title == "Transcript"
    assert page.with_class("speaker-row") == [] and page.with_class("seg") == []


# --- publish ------------------------------------------------------------------------------


def test_publish_writes_every_format_atomically_and_identically(tmp_path: Path) -> None:
    out = tmp_path / "outbox"
    paths = publish(make(), directory=out, stem="meeting", formats=FORMATS)
    assert paths == [out / f"meeting{extension(f)}" for f in FORMATS]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left
    first = {p: p.read_bytes() for p in paths}
    assert first[out / "meeting.srt"].decode("utf-8") == render("srt", make())
    # A re-run replaces the files (new inodes) with the same bytes.
    inodes = {p: p.stat().st_ino for p in paths}
    assert publish(make(), directory=out, stem="meeting", formats=FORMATS) == paths
    assert {p: p.read_bytes() for p in paths} == first
    assert all(p.stat().st_ino != inodes[p] for p in paths)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_publish_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        (path,) = publish(make(), directory=tmp_path, stem="m", formats=["txt"])
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_publish_unknown_format_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'pdf'.*json"):
        publish(make(), directory=tmp_path, stem="m", formats=["json", "pdf"])
    assert list(tmp_path.iterdir()) == []


def test_publish_replaces_existing_and_dedupes_formats(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("old")
    paths = publish(make(), directory=tmp_path, stem="m", formats=["txt", "txt"])
    assert paths == [tmp_path / "m.txt"]
    assert paths[0].read_text(encoding="utf-8") == render("txt", make())


@pytest.mark.parametrize("stem", ["", "a/b", ".."])
def test_publish_rejects_a_stem_that_is_not_a_file_name(tmp_path: Path, stem: str) -> None:
    with pytest.raises(ValueError, match="stem"):
        publish(make(), directory=tmp_path, stem=stem, formats=["txt"])
