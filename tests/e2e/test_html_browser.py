"""The html page in a real browser: headless Chromium, offline, no test server.

The page is rendered from a fixed transcript (two speakers, known sentences) so the
counts are exact and the test needs no models; `test_formats_agree` covers the page of
the real pipeline's output. Chromium loads it from a `file://` URL with every network
feature off, after its script ran (`--virtual-time-budget`), and we check the DOM it
dumps and the pixels of its screenshot (a PNG decoded here, no imaging library).

Needs the Debian package `chromium` (`make test` installs it through
`scripts/system-deps.sh`); without it these tests skip.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from daemon import writers
from daemon.transcript import Segment, Source, Transcript

pytestmark = pytest.mark.e2e

SEGMENTS = (
    Segment(1.0, 4.2, 1, "Good morning everyone, thank you for joining."),
    Segment(4.6, 8.9, 2, "Thanks. Could you tell us how the release went?"),
    Segment(9.3, 14.0, 1, "It went smoothly; we deployed before midnight."),
    Segment(14.2, 16.0, 1, "One index took longer <than> expected & nobody noticed."),
    Segment(16.5, 22.75, 2, "Good. Then let us talk about the budget."),
    Segment(23.0, 27.5, 1, "We need two more machines for the build farm."),
    Segment(27.9, 30.0, 2, "Please send me a proposal by Friday."),
)
TRANSCRIPT = Transcript(segments=SEGMENTS, audio_seconds=31.0, source=Source(name="meeting.m4a"))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                 "/Applications/Chromium.app/Contents/MacOS/Chromium",
                 "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs Chromium (Debian package `chromium`): run `make test-system-deps`, "
                "or `scripts/system-deps.sh chromium`, or apt-get install chromium")


def browse(page: Path, tmp: Path, *args: str, fragment: str = "") -> subprocess.CompletedProcess[bytes]:
    """One headless Chromium run over `page`, with nothing that could reach a network."""
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
        "--window-size=1200,900", "--virtual-time-budget=2000", *args, page.as_uri() + fragment,
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=90)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chromium()
    folder = tmp_path_factory.mktemp("html")
    (path,) = writers.publish(TRANSCRIPT, directory=folder, stem="meeting", formats=["html"])
    return path


class Dom(HTMLParser):
    """The elements we care about, from Chromium's serialised DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.timeline = 0
        self.rows: list[str] = []
        self.segs: list[dict[str, str]] = []  # with "row": the speaker row it is in
        self.active: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if a.get("id") == "timeline":
            self.timeline += 1
        if "speaker-row" in classes:
            self.rows.append(a.get("data-speaker", ""))
        if "seg" in classes:
            self.segs.append({**a, "row": self.rows[-1] if self.rows else ""})
        if "active" in classes:
            self.active.append((tag, a))


def test_dom_shows_the_timeline(page: Path, tmp_path: Path) -> None:
    dom = Dom(browse(page, tmp_path, "--dump-dom").stdout.decode())
    assert dom.timeline == 1
    assert dom.rows == ["1", "2"]  # one row per speaker, in speaker order
    assert len(dom.segs) == len(SEGMENTS)  # one block per sentence
    for seg in dom.segs:
        s = SEGMENTS[int(seg["data-index"])]
        assert seg["row"] == str(s.speaker), "a sentence's block sits in its speaker's row"
        assert seg["data-start"] == f"{s.start:.3f}"
    assert dom.active == []  # nothing highlighted without a time in the URL


def test_time_in_url_highlights_that_sentence(page: Path, tmp_path: Path) -> None:
    """What a click on the second block does: the URL becomes #t=<its start>, and the
    script marks that sentence, its turn and its block `active`."""
    second = SEGMENTS[1]
    dom = Dom(browse(page, tmp_path, "--dump-dom", fragment=f"#t={second.start:.3f}").stdout.decode())
    sentences = [a for tag, a in dom.active if "sent" in a["class"].split()]
    blocks = [a for tag, a in dom.active if "seg" in a["class"].split()]
    turns = [a for tag, a in dom.active if "turn" in a["class"].split()]
    assert [s["data-index"] for s in sentences] == ["1"]
    assert [b["data-index"] for b in blocks] == ["1"]
    assert [t["data-speaker"] for t in turns] == ["2"]


def test_screenshot_shows_the_coloured_timeline(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    browse(page, tmp_path, f"--screenshot={shot}")
    assert shot.stat().st_size > 5_000, "a blank page compresses to almost nothing"
    width, height, rows = read_png(shot.read_bytes(), max_rows=400)
    assert (width, height) == (1200, 900)

    def bars(hue: str) -> list[int]:
        """Rows with a long run of a speaker's colour (text and swatches are too short)."""
        found = []
        for y, row in enumerate(rows):
            n = sum(1 for r, g, b in row if (b - r > 60 if hue == "blue" else r - b > 60) and max(r, g, b) - min(r, g, b) > 60)
            if n >= 100:
                found.append(y)
        return found

    blue, orange = bars("blue"), bars("orange")  # Speaker1 #1f77b4, Speaker2 #ff7f0e
    assert blue, "no Speaker1 bar in the top of the page"
    assert orange, "no Speaker2 bar in the top of the page"
    assert max(blue) < min(orange), "Speaker1's row is drawn above Speaker2's"
    assert 8 <= len(blue) <= 40 and 8 <= len(orange) <= 40, "each bar is one row tall"
    for hue_rows in (blue, orange):
        assert hue_rows == list(range(hue_rows[0], hue_rows[-1] + 1)), "one band per speaker"


# --------------------------------------------------------------------------- PNG


def read_png(data: bytes, *, max_rows: int | None = None) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """(width, height, RGB rows) of an 8-bit, non-interlaced RGB or RGBA PNG (what
    Chromium writes); only the first `max_rows` rows are unfiltered."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG: {header}"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    prev = bytearray(stride)
    rows = []
    for y in range(min(height, max_rows or height)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, channels)])
        prev = line
    return width, height, rows
