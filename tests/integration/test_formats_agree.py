"""Every output format of one real transcript says the same thing.

The real pipeline (tiny models, the two-voice recording, no speaker hint) writes every
format; each is read back with an independent parser (`srt`, `webvtt-py`, `csv`,
regular expressions, `html.parser`, `markdown-it-py`, `python-docx`) and compared with
the json: same sentences, same speakers, times to the millisecond (to the second in the
documents for people). Subtitle cues are checked for order, overlap and length, and
every file re-renders byte for byte from the json. The engine runs once for the module.
"""

from __future__ import annotations

import csv
import html
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from daemon import writers
from daemon.engine.transcriber import Engine
from daemon.engine.models import ModelDirs
from daemon.transcript import Segment, Transcript
from tests.support.documents import assert_holds_transcript, read_docx, read_markdown

pytestmark = pytest.mark.integration

FORMATS = writers.FORMATS
BINARY = ("docx",)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_models: ModelDirs, two_voice_wav: Path) -> dict[str, bytes]:
    engine = Engine.load(tiny_models, device="cpu", batch_size_s=300)
    transcript = engine.transcribe(two_voice_wav, source_name="meeting/two voices.wav")
    out = tmp_path_factory.mktemp("formats")
    paths = writers.publish(transcript, directory=out, stem="two voices", formats=FORMATS)
    return {fmt: path.read_bytes() for fmt, path in zip(FORMATS, paths)}


@pytest.fixture(scope="module")
def written(files: dict[str, bytes]) -> dict[str, str]:
    """The text formats' files as text."""
    return {fmt: data.decode("utf-8") for fmt, data in files.items() if fmt not in BINARY}


@pytest.fixture(scope="module")
def truth(written: dict[str, str]) -> Transcript:
    t = writers.parse_json(written["json"])
    assert len(t.speakers) == 2, f"two held-out voices must give two speakers, got {t.speakers}"
    assert len(t.segments) >= 4
    return t


def ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def squash(text: str) -> str:
    """Text without any whitespace: cue line breaks fall between words or CJK characters."""
    return "".join(text.split())


def clock_ms(text: str) -> int:
    """`HH:MM:SS,mmm`, `HH:MM:SS.mmm`, `MM:SS.mmm` or `H:MM:SS.mmm` -> milliseconds."""
    m = re.fullmatch(r"(?:(\d+):)?(\d+):(\d+)[.,](\d{3})", text.strip())
    assert m, f"not a timestamp: {text!r}"
    h, mi, s, frac = (int(g or 0) for g in m.groups())
    return ((h * 60 + mi) * 60 + s) * 1000 + frac


# --------------------------------------------------------------------------- parsed cues


def srt_cues(text: str) -> list[tuple[int, int, str, str]]:
    import srt

    cues = list(srt.parse(text))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    out = []
    for c in cues:
        m = re.match(r"(Speaker\d+): (.*)", c.content, flags=re.S)
        assert m, c.content
        out.append((ms(c.start.total_seconds()), ms(c.end.total_seconds()), m.group(1), m.group(2)))
    return out


def vtt_cues(text: str) -> list[tuple[int, int, str, str]]:
    import webvtt

    captions = webvtt.from_string(text).captions
    return [(clock_ms(c.start), clock_ms(c.end), c.voice, html.unescape(c.text)) for c in captions]


def check_cues(cues: list[tuple[int, int, str, str]]) -> None:
    for i, (start, end, _, _) in enumerate(cues):
        assert end > start, f"cue {i + 1} has end <= start: {cues[i]}"
        if i:
            prev_start, prev_end = cues[i - 1][:2]
            assert start >= prev_start, f"cue {i + 1} out of order"
            assert start >= prev_end, f"cue {i + 1} overlaps cue {i}: {cues[i - 1]} / {cues[i]}"


def cues_per_segment(cues: list[tuple[int, int, str, str]], segments: tuple[Segment, ...]):
    """Assign each cue to the sentence whose span contains it (sentences don't overlap,
    so that one is unique), walking both in order."""
    groups: list[list[tuple[int, int, str, str]]] = [[] for _ in segments]
    k = 0
    for cue in cues:
        while k < len(segments) and not (ms(segments[k].start) <= cue[0] and cue[1] <= ms(segments[k].end)):
            k += 1
        assert k < len(segments), f"cue {cue} lies inside no sentence"
        groups[k].append(cue)
    return groups


def test_segments_do_not_overlap(truth: Transcript) -> None:
    """The premise of the exact comparisons below: FunASR's sentences of this recording
    neither overlap nor touch zero length, so no cue needed clamping."""
    for a, b in zip(truth.segments, truth.segments[1:]):
        assert ms(a.end) <= ms(b.start), (a, b)
    assert all(ms(s.end) > ms(s.start) for s in truth.segments)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_agree_with_json(written: dict[str, str], truth: Transcript, fmt: str) -> None:
    cues = srt_cues(written["srt"]) if fmt == "srt" else vtt_cues(written["vtt"])
    check_cues(cues)
    groups = cues_per_segment(cues, truth.segments)
    for seg, group in zip(truth.segments, groups):
        assert group, f"sentence without a cue: {seg}"
        assert {c[2] for c in group} == {seg.speaker_label}
        assert squash("".join(c[3] for c in group)) == squash(seg.text)
        # the cues of one sentence cover it exactly; a single cue has the sentence's own times
        assert group[0][0] == ms(seg.start) and group[-1][1] == ms(seg.end), (seg, group)
        for a, b in zip(group, group[1:]):
            assert a[1] == b[0], "split cues of one sentence must be contiguous"
        for _, _, _, text in group:
            lines = text.split("\n")
            assert 1 <= len(lines) <= 2


def test_srt_and_vtt_have_the_same_cues(written: dict[str, str]) -> None:
    a, b = srt_cues(written["srt"]), vtt_cues(written["vtt"])
    assert [(s, e, v, squash(t)) for s, e, v, t in a] == [(s, e, v, squash(t)) for s, e, v, t in b]


def test_tsv_agrees_with_json(written: dict[str, str], truth: Transcript) -> None:
    rows = list(csv.reader(io.StringIO(written["tsv"]), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["start", "end", "speaker", "text"]
    body = rows[1:]
    assert len(body) == len(truth.segments)
    for row, seg in zip(body, truth.segments):
        assert len(row) == 4, row
        start, end, speaker, text = row
        assert re.fullmatch(r"\d+\.\d{3}", start) and re.fullmatch(r"\d+\.\d{3}", end)
        assert (ms(float(start)), ms(float(end)), speaker, text) == (
            ms(seg.start), ms(seg.end), seg.speaker_label, " ".join(seg.text.split()))


SENTENCE = re.compile(r"\[(\d+)\] (\S+) -> (\S+) \| (Speaker\d+)\n(.*)\n\n")


def test_sentences_agree_with_json(written: dict[str, str], truth: Transcript) -> None:
    text = written["sentences"]
    blocks = SENTENCE.findall(text)
    assert "".join(f"[{i}] {a} -> {b} | {s}\n{t}\n\n" for i, a, b, s, t in blocks) == text, "unparsed lines"
    assert len(blocks) == len(truth.segments)
    for i, ((num, start, end, speaker, sentence), seg) in enumerate(zip(blocks, truth.segments), start=1):
        assert int(num) == i
        assert (clock_ms(start), clock_ms(end), speaker, sentence) == (
            ms(seg.start), ms(seg.end), seg.speaker_label, " ".join(seg.text.split()))


def test_txt_agrees_with_json(written: dict[str, str], truth: Transcript) -> None:
    paragraphs = [p for p in written["txt"].split("\n\n") if p.strip()]
    turns = truth.turns()
    assert len(paragraphs) == len(turns)
    for para, turn in zip(paragraphs, turns):
        m = re.fullmatch(r"(Speaker\d+) \[(\d\d):(\d\d):(\d\d)\]: (.*)\n?", para, flags=re.S)
        assert m, para
        h, mi, s = int(m.group(2)), int(m.group(3)), int(m.group(4))
        assert m.group(1) == turn.speaker_label
        assert (h * 60 + mi) * 60 + s == ms(turn.start) // 1000  # truncated to the second
        assert squash(m.group(5)) == squash(turn.text)
    labels = [p.split(" ", 1)[0] for p in paragraphs]
    assert all(a != b for a, b in zip(labels, labels[1:])), "consecutive paragraphs of one speaker"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.segs: list[tuple[str, str]] = []  # (row speaker, data-start)
        self.sents: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "speaker-row" in classes:
            self.rows.append(a["data-speaker"] or "")
        if "seg" in classes:
            self.segs.append((self.rows[-1], a["data-start"] or ""))
        if "sent" in classes:
            self.sents.append((a["data-start"] or "", a["data-end"] or ""))


def test_html_agrees_with_json(written: dict[str, str], truth: Transcript) -> None:
    page = _Page()
    page.feed(written["html"])
    assert page.rows == [str(s.speaker) for s in truth.speakers]
    expected = sorted((str(s.speaker), f"{ms(s.start) / 1000:.3f}") for s in truth.segments)
    assert sorted(page.segs) == expected
    assert page.sents == [(f"{ms(s.start) / 1000:.3f}", f"{ms(s.end) / 1000:.3f}") for s in truth.segments]


def test_json_round_trips(written: dict[str, str], truth: Transcript, two_voice_wav: Path) -> None:
    assert writers.render("json", truth) == written["json"]
    assert truth.source is not None and truth.source.name == "meeting/two voices.wav"
    assert truth.source.modified_at is not None
    assert truth.source.modified_at.timestamp() == int(two_voice_wav.stat().st_mtime)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_re_renders_identically_from_the_json(files: dict[str, bytes], truth: Transcript,
                                                           fmt: str) -> None:
    """What a later re-render (a rename, a duplicate) starts from is the stored json."""
    assert writers.render_bytes(fmt, truth) == files[fmt]


def test_md_agrees_with_json(written: dict[str, str], truth: Transcript) -> None:
    doc = read_markdown(written["md"])
    assert doc.title == "meeting/two voices.wav"
    assert "Speakers: Speaker1 (" in doc.details and ", Speaker2 (" in doc.details
    assert_holds_transcript(doc, truth)


def test_docx_agrees_with_json(files: dict[str, bytes], truth: Transcript) -> None:
    doc = read_docx(files["docx"])
    assert doc.title == "meeting/two voices.wav"
    assert doc.details == read_markdown(files["md"].decode("utf-8")).details
    assert_holds_transcript(doc, truth)
