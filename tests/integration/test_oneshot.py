"""`spkd transcribe FILE…` as a user runs it: a subprocess, tiny models, no daemon, no database.

One run covers the good path and the failure path at once (one model load for the
module): the two-voice wav and m4a plus a broken file and a missing one. The good
files must be written in every requested format, each parsing; the bad ones must be
reported with a reason, and the exit status must say that something failed.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon import writers
from daemon.engine.models import ModelDirs
from tests.support.config import FOLDERS, write_config
from tests.support.documents import assert_holds_transcript, read_docx, read_markdown

pytestmark = pytest.mark.integration

FORMATS = writers.FORMATS
ROOT = Path(__file__).resolve().parents[2]


def oneshot_config(folder: Path, models_dir: Path) -> Path:
    """A config of its own (models.dir: the tiny models), with every folder under `folder`,
    so nothing touches the repository's var/."""
    return write_config(folder, paths={name: f"var/{name}" for name in FOLDERS}, models={"dir": str(models_dir)},
                        output={"formats": ["json", "txt"]}, workers={"device": "cpu"})


def spkd(config: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_models: ModelDirs, two_voice_wav: Path,
        two_voice_m4a: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("oneshot")
    config = oneshot_config(folder, tiny_models.asr.parent)
    broken = folder / "broken.m4a"
    broken.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"not really audio" * 64)
    out = folder / "out"
    proc = spkd(config, "transcribe", str(two_voice_wav), str(broken), str(two_voice_m4a),
                str(folder / "missing.wav"), "--out", str(out), "--formats", ",".join(FORMATS),
                "--speakers", "2", "--device", "cpu")
    return {"proc": proc, "out": out, "wav": two_voice_wav, "m4a": two_voice_m4a}


def test_exit_status_and_reasons(run: dict[str, Any]) -> None:
    proc = run["proc"]
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert re.search(r"FAILED \[2/4\] broken\.m4a: bad_audio: .*(decode|Invalid data|moov)", err), err
    assert re.search(r"FAILED \[4/4\] missing\.wav: bad_audio: no such file", err), err
    assert re.search(r"ok +\[1/4\] two_voices\.wav: [\d.]+ s audio, \d+ sentences, 2 speakers", err), err
    assert re.search(r"ok +\[3/4\] two_voices\.m4a: ", err), err
    assert "4 files: 2 done, 2 failed" in err
    assert "Traceback" not in err


def test_no_database_and_no_engine_chatter(run: dict[str, Any]) -> None:
    folder = run["out"].parent
    assert not (folder / "var" / "state").exists()  # without --voices the database is not touched
    err = run["proc"].stderr
    assert "trust_remote_code" not in err and "model hub" not in err and "funasr version" not in err
    # the inputs are looked at before the models load: the missing file is told first
    assert err.index("FAILED [4/4] missing.wav") < err.index("loading models")


def test_stdout_lists_exactly_the_written_files(run: dict[str, Any]) -> None:
    out: Path = run["out"]
    listed = [Path(line) for line in run["proc"].stdout.splitlines()]
    # wav and m4a share the stem `two_voices`: the second gets ` (2)`, as in the daemon's outbox
    expected = [out / f"two_voices{writers.extension(f)}" for f in FORMATS]
    expected += [out / f"two_voices (2){writers.extension(f)}" for f in FORMATS]
    assert listed == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)  # no temp files, no others


@pytest.mark.parametrize("stem,source", [("two_voices", "wav"), ("two_voices (2)", "m4a")])
def test_every_format_exists_and_parses(run: dict[str, Any], stem: str, source: str) -> None:
    import srt
    import webvtt

    out: Path = run["out"]
    audio: Path = run[source]

    def read(fmt: str) -> str:
        return (out / f"{stem}{writers.extension(fmt)}").read_text(encoding="utf-8")

    t = writers.parse_json(read("json"))
    assert t.source is not None and t.source.name == audio.name
    import hashlib

    assert t.source.sha256 == hashlib.sha256(audio.read_bytes()).hexdigest()
    assert t.engine is not None and t.engine.device == "cpu"
    assert t.segments and len(t.speakers) == 2
    n = len(t.segments)

    cues = list(srt.parse(read("srt")))
    assert len(cues) >= n
    assert len(webvtt.from_string(read("vtt")).captions) == len(cues)
    rows = list(csv.reader(io.StringIO(read("tsv")), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["start", "end", "speaker", "text"] and len(rows) == n + 1
    assert len(re.findall(r"^\[\d+\] \S+ -> \S+ \| Speaker\d+$", read("sentences"), flags=re.M)) == n
    assert re.match(r"Speaker[12] \[\d\d:\d\d:\d\d\]: ", read("txt"))
    html = read("html")
    assert html.startswith("<!DOCTYPE html>") and html.count('class="seg"') == n
    assert html.count('class="speaker-row"') == 2
    assert_holds_transcript(read_markdown(read("md")), t)
    assert_holds_transcript(read_docx((out / f"{stem}.docx").read_bytes()), t)


def test_missing_models_fail_fast_with_the_fix(tmp_path: Path, two_voice_wav: Path) -> None:
    config = oneshot_config(tmp_path, tmp_path / "no-models")
    proc = spkd(config, "transcribe", str(two_voice_wav), timeout=60)
    assert proc.returncode == 2
    assert "model directories missing or incomplete" in proc.stderr
    assert "spkd models fetch" in proc.stderr and "make-tiny" in proc.stderr
    assert proc.stdout == ""
    assert not list(two_voice_wav.parent.glob("two_voices.json"))  # nothing written beside the input


def test_bad_options_are_refused_before_any_work(tmp_path: Path, two_voice_wav: Path) -> None:
    config = oneshot_config(tmp_path, tmp_path / "no-models")
    proc = spkd(config, "transcribe", str(two_voice_wav), "--formats", "json,pdf", timeout=60)
    assert proc.returncode == 2
    assert "formats: unknown format 'pdf'" in proc.stderr


def test_no_model_load_when_no_input_exists(tmp_path: Path, tiny_models: ModelDirs) -> None:
    config = oneshot_config(tmp_path, tiny_models.asr.parent)
    proc = spkd(config, "transcribe", str(tmp_path / "nope.wav"), timeout=60)
    assert proc.returncode == 1
    assert "FAILED [1/1] nope.wav: bad_audio: no such file" in proc.stderr
    assert "loading models" not in proc.stderr  # no model load when no file can be transcribed


def test_output_stems_beside_inputs(tmp_path: Path) -> None:
    from daemon.cli.oneshot import output_stems

    a, b, c = tmp_path / "x" / "talk.wav", tmp_path / "y" / "talk.m4a", tmp_path / "x" / "talk.mp3"
    assert output_stems([a, b, c], None) == [(a.parent, "talk"), (b.parent, "talk"), (a.parent, "talk (2)")]
    out = tmp_path / "out"
    assert output_stems([a, b, c], out) == [(out, "talk"), (out, "talk (2)"), (out, "talk (3)")]
