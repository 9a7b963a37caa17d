"""The documents for people from outside: md and docx written by a real daemon job, read
back by an independent Markdown renderer (markdown-it-py) and by python-docx; and the
docx converted to PDF by headless LibreOffice, its text read back with pdftotext.

The LibreOffice test needs `soffice`, `pdftotext` and a CJK font (Debian packages
`libreoffice-writer-nogui`, `poppler-utils`, `fonts-wqy-zenhei`; `make test` installs
them through `scripts/system-deps.sh`); without them it skips and says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from daemon import writers
from daemon.transcript import Segment, Source, Transcript
from tests.support.daemon import Daemon, write_wav
from tests.support.documents import assert_holds_transcript, one_line, read_docx, read_markdown

pytestmark = pytest.mark.e2e

# The fake engine writes the hotwords into every sentence: Markdown that must stay text.
HOTWORDS = ["*加粗*", "<b>标签</b>", "[链接](http://x)", "`代码`", "&amp;", "#标题", "a|b", "~~删~~"]


def test_a_job_writes_md_and_docx_that_hold_every_segment(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        d.start()
        sidecar = {"speakers": 2, "hotwords": HOTWORDS, "formats": ["json", "md", "docx"]}
        # 0.6 s: a size that makes the fake engine say three sentences, alternating speakers
        staged = write_wav(tmp_path / "staging" / "1. *Q3* review_[draft] #2.wav", seconds=0.6)
        (d.inbox / f"{staged.name}.spkd.json").write_text(json.dumps(sidecar, ensure_ascii=False))
        mtime = int(staged.stat().st_mtime)
        os.rename(staged, d.inbox / staged.name)  # a rename keeps the file's mtime
        [job] = d.wait_finished(1)
        assert job["state"] == "done", job
        stem = "1. *Q3* review_[draft] #2"
        assert sorted(json.loads(job["outputs"])) == sorted(f"{stem}{ext}" for ext in (".json", ".md", ".docx"))
        t = writers.parse_json((d.outbox / f"{stem}.json").read_text(encoding="utf-8"))
        assert len(t.segments) == 3 and [s.speaker_label for s in t.segments] == ["Speaker1", "Speaker2",
                                                                                   "Speaker1"]
        assert t.source is not None and t.source.modified_at is not None
        assert t.source.modified_at.timestamp() == mtime  # the date the documents show

        md_text = (d.outbox / f"{stem}.md").read_text(encoding="utf-8")
        docx_data = (d.outbox / f"{stem}.docx").read_bytes()
        for doc in (read_markdown(md_text), read_markdown(md_text, gfm=True), read_docx(docx_data)):
            assert doc.title == staged.name
            assert doc.details.startswith(f"Date: {t.source.modified_at:%Y-%m-%d %H:%M} (UTC")
            assert_holds_transcript(doc, t)  # every segment's text and speaker, in order
            assert all("hotwords=" + ",".join(HOTWORDS) in turn.text for turn in doc.turns)

        # A re-render (a rename, a duplicate) starts from the stored transcript: same bytes.
        stored = writers.parse_json((tmp_path / "state" / "transcripts" / f"{job['id']}.json").read_text())
        assert writers.render_bytes("md", stored) == md_text.encode("utf-8")
        assert writers.render_bytes("docx", stored) == docx_data

        # The same audio again, under another name: rendered from the stored transcript.
        (d.inbox / "again.wav.spkd.json").write_text(json.dumps(sidecar, ensure_ascii=False))
        archived = tmp_path / "archive" / staged.name
        d.wait(archived.exists, what="archived source")
        shutil.copyfile(archived, d.inbox / "again.wav")
        jobs = d.wait_finished(2)
        again = jobs[1]
        assert again["state"] == "done" and again["reused_from"] == job["id"], again
        reused = writers.parse_json((d.outbox / "again.json").read_text(encoding="utf-8"))
        assert reused.segments == t.segments
        for doc in (read_markdown((d.outbox / "again.md").read_text(encoding="utf-8")),
                    read_docx((d.outbox / "again.docx").read_bytes())):
            assert doc.title == "again.wav"
            assert_holds_transcript(doc, t)
        assert d.stop() == 0


# --- LibreOffice ---------------------------------------------------------------------------

SEGMENTS = (
    Segment(1.0, 4.2, 1, "Good morning everyone, thank you for joining."),
    Segment(4.6, 8.9, 2, "你好，我是王总。今天我们讨论一下项目的进展情况。"),
    Segment(9.3, 14.0, 1, "It went smoothly; the *index* took longer <than> expected & nobody noticed."),
    Segment(14.2, 16.0, 1, "一共花了三个小时。"),
    Segment(16.5, 22.75, 2, "好的。那我们谈谈预算吧，下周五之前给我一个方案。"),
    Segment(3725.0, 3728.5, 1, "One hour later: 1. done, 2. tested."),
)
TRANSCRIPT = Transcript(segments=SEGMENTS, audio_seconds=3730.0,
                        source=Source(name="周会 meeting.m4a", modified_at=datetime(
                            2025, 3, 4, 9, 15, tzinfo=timezone(timedelta(hours=8)))))


def program(name: str, *, package: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"needs `{name}` (Debian package `{package}`): run `make test-system-deps`, "
                    f"or `scripts/system-deps.sh soffice pdftotext`, or apt-get install {package}")
    return path


def squash(text: str) -> str:
    return "".join(text.split())


def test_docx_text_survives_libreoffice_pdf_export(tmp_path: Path) -> None:
    soffice = program("soffice", package="libreoffice-writer-nogui")
    pdftotext = program("pdftotext", package="poppler-utils")
    if shutil.which("fc-list"):  # fontconfig: Linux; macOS has Chinese fonts built in
        fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
        if not fonts.strip():
            pytest.skip("needs a font with Chinese glyphs (Debian package `fonts-wqy-zenhei`)")
    docx_path = tmp_path / "周会.docx"
    docx_path.write_bytes(writers.render_bytes("docx", TRANSCRIPT))
    proc = subprocess.run(
        [soffice, "--headless", "--norestore", "--nolockcheck", f"-env:UserInstallation={(tmp_path / 'lo').as_uri()}",
         "--convert-to", "pdf", "--outdir", str(tmp_path), str(docx_path)],
        capture_output=True, text=True, timeout=300)
    pdf = tmp_path / "周会.pdf"
    assert proc.returncode == 0 and pdf.exists(), (proc.stdout, proc.stderr)
    text = subprocess.run([pdftotext, "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout
    # Line wrapping and spacing are the PDF's: compare without whitespace, in order.
    expected = [TRANSCRIPT.source.name, "Date:2025-03-04 09:15(UTC+08:00)"]
    for turn in TRANSCRIPT.turns():
        h, m, s = int(turn.start) // 3600, int(turn.start) // 60 % 60, int(turn.start) % 60
        expected += [TRANSCRIPT.speaker_display(turn.speaker), f"[{h:02d}:{m:02d}:{s:02d}]", one_line(turn.text)]
    flat, at = squash(text), 0
    for piece in expected:
        found = flat.find(squash(piece), at)
        assert found >= 0, f"{piece!r} missing from the PDF text (after {flat[max(0, at - 40):at]!r}):\n{text}"
        at = found + len(squash(piece))
