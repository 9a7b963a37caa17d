"""Files still being written are never taken: a recorder that writes in bursts farther
apart than settle_seconds (ffmpeg -re, and a process of our own), against the real
daemon. On Linux the kernel says a file is still open for writing (a read lease is
refused); the file is taken once its writer closes it, whole."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e

BURST_WRITER = r"""
import struct, sys, time
path, bursts, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rate = 16000
with open(path, "wb") as out:
    # As a streaming recorder does: the sizes are unknown until the end.
    out.write(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
              rate * 2, 2, 16) + b"data" + struct.pack("<I", 0xFFFFFFFF))
    for i in range(bursts):
        out.write(struct.pack("<h", 1000 + i) * rate)  # one second of audio per burst
        out.flush()
        print("burst", i, flush=True)
        time.sleep(pause)
    size = out.tell()
    out.seek(4); out.write(struct.pack("<I", size - 8))
    out.seek(40); out.write(struct.pack("<I", size - 44))
print("closed", flush=True)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_bursty_recorder_is_taken_only_when_it_closes_the_file(tmp_path):
    with Daemon(tmp_path, config={"watch": {"settle_seconds": 0.3}}) as d:
        d.start()
        live = d.inbox / "live.wav"
        writer = subprocess.Popen([sys.executable, "-c", BURST_WRITER, str(live), "6", "1.0"],
                                  stdout=subprocess.PIPE, text=True)
        lines = [writer.stdout.readline() for _ in range(3)]
        assert lines[-1].startswith("burst 2")
        time.sleep(0.8)  # between two bursts, well past settle_seconds: still open, so not taken
        assert d.jobs() == [] and live.exists()
        assert writer.wait(timeout=30) == 0
        [job] = d.wait_finished(1)
        archived = tmp_path / "archive" / "live.wav"
        d.wait(archived.exists, what="archived source")
        assert job["state"] == "done" and job["size_bytes"] == 44 + 6 * 32000
        assert job["audio_seconds"] == pytest.approx(6.0, abs=0.1)
        assert archived.stat().st_size == 44 + 6 * 32000
        assert "open for writing" in d.log()
        assert d.stop() == 0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_ffmpeg_writing_in_real_time_is_taken_whole(tmp_path):
    source = write_wav(tmp_path / "src" / "talk.wav", seconds=12.0)
    with Daemon(tmp_path, config={"watch": {"settle_seconds": 0.5}}) as d:
        d.start()
        # ffmpeg -re writes 256 KB about every 8 s, far apart than settle_seconds.
        ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(source), "-f", "wav",
                                   str(d.inbox / "live.wav")])
        assert ffmpeg.wait(timeout=60) == 0
        [job] = d.wait_finished(1)
        archived = tmp_path / "archive" / "live.wav"
        d.wait(archived.exists, what="archived source")
        assert job["state"] == "done" and job["size_bytes"] == archived.stat().st_size
        assert job["sha256"] == sha(archived)
        assert job["audio_seconds"] == pytest.approx(12.0, abs=0.2)
        assert d.stop() == 0
