"""What the CLI prints, read by a person: the one table printer (cells cut with a mark,
`--wide`, wide characters aligned by terminal columns, in every table), JSON text shown
readably by `spkd sql`, and no message that misleads (`spkd db upgrade` about
enrolments, FunASR's hub chatter, `spkd transcribe` of a file that is not there)."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon.cli.common import CUT_MARK, MAX_CELL_WIDTH, display_width, table_lines
from daemon.cli.main import main
from tests.support.config import make_config, write_config

REPO = Path(__file__).resolve().parents[2]
DAEMON = REPO / "daemon"


# --- the table printer ---------------------------------------------------------------------

def column_starts(line: str, cells: list[str]) -> list[int]:
    """The terminal column where each of `cells` (in order) starts in `line`."""
    starts, at = [], 0
    for cell in cells:
        at = line.index(cell, at)
        starts.append(display_width(line[:at]))
        at += len(cell)
    return starts


def test_wide_characters_count_two_columns() -> None:
    assert display_width("李雷") == 4 and display_width("Bob") == 3
    assert display_width("ＡＢ") == 4  # full width
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert display_width("王总 talks") == 10


def test_cjk_cells_are_aligned_in_terminal_columns() -> None:
    rows = [["王总", "李雷说的话", 1], ["Bob", "hello", 22], ["欧阳娜娜", "x", 333]]
    lines = table_lines(["name", "said", "n"], rows)
    header = column_starts(lines[0], ["name", "said", "n"])
    for line, row in zip(lines[1:], rows):
        assert column_starts(line, [str(c) for c in row]) == header, lines
    assert lines[1] == "王总      李雷说的话  1"


def test_a_cut_cell_is_marked_and_wide_shows_it_whole() -> None:
    long_ascii, long_cjk = "x" * 100, "李" * 100
    lines = table_lines(["a", "b"], [[long_ascii, long_cjk], ["short", "短"]])
    first = lines[1]
    assert CUT_MARK in first and long_ascii not in first
    a, b = first.split("  ", 1)
    assert display_width(a) == MAX_CELL_WIDTH and a.endswith(CUT_MARK)
    assert display_width(b.strip()) <= MAX_CELL_WIDTH and b.strip().endswith(CUT_MARK)
    assert "short" in lines[2] and CUT_MARK not in lines[2]  # what fits is not marked
    whole = table_lines(["a", "b"], [[long_ascii, long_cjk]], wide=True)[1]
    assert long_ascii in whole and long_cjk in whole and CUT_MARK not in whole


def test_a_cell_stays_one_line_and_moves_no_cursor() -> None:
    [_, line] = table_lines(["name"], [["a\nb\x1b[2Jc"]])
    assert line == "a b\\x1b[2Jc"


def test_no_table_is_aligned_outside_the_one_printer() -> None:
    """Every table the CLI prints goes through daemon/cli/common.py, which counts wide
    characters: str.ljust and its kin count characters, not columns. (A format width,
    `{state:8}`, is for fixed ASCII words only.)"""
    offenders = []
    for path in sorted((DAEMON / "cli").glob("*.py")):
        if path.name == "common.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(r"\.(ljust|rjust|center)\(", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


@pytest.fixture()
def cli_config(tmp_path: Path, store) -> Path:
    return write_config(tmp_path, url=store.url, host="h1")


def test_every_table_command_aligns_chinese_names(store, cli_config: Path, capsys) -> None:
    for name in ("王总的会议.m4a", "standup.m4a"):
        store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.split(".")[0], sha256=None,
                      size_bytes=1)
    store.add_voice_sample("王总", {"embedding": [1.0, 0.0], "model_name": "cam++", "model_revision": "v",
                                   "sha256": None, "speech_seconds": 12.0, "origin": "cli", "source": "a.wav",
                                   "job_id": None})
    store.add_voice_sample("Li", {"embedding": [0.0, 1.0], "model_name": "cam++", "model_revision": "v",
                                  "sha256": None, "speech_seconds": 11.0, "origin": "cli", "source": "b.wav",
                                  "job_id": None})
    for argv, names in ((["jobs"], ["王总的会议.m4a", "standup.m4a"]), (["voices", "list"], ["Li", "王总"]),
                        (["sql", "SELECT source_name, state FROM jobs ORDER BY id"], ["王总的会议.m4a", "standup.m4a"])):
        assert main(["--config", str(cli_config), *argv]) == 0
        lines = capsys.readouterr().out.splitlines()
        found = [next(line for line in lines if name in line) for name in names]
        # the cell after the name starts in the same terminal column on every line
        after = [display_width(line[:line.index(name) + len(name)]) + len(re.match(r" *", line[
            line.index(name) + len(name):]).group(0)) for line, name in zip(found, names)]
        assert len(set(after)) == 1, (argv, lines)


# --- spkd sql: JSON text readable, --wide ----------------------------------------------------

@pytest.mark.backends("sqlite")
def test_sql_shows_json_text_readably(store, cli_config: Path, capsys) -> None:
    job_id = store.enqueue(source_name="a.wav", spool_path="/spool/a.wav", output_stem="a", sha256=None,
                           size_bytes=1, options={"expected_speakers": ["李雷"]})
    path = Path(store.url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(path)
    # as rows were stored before: SQLAlchemy's default json.dumps escapes every non-ASCII character
    conn.execute("INSERT INTO job_events (job_id, at, kind, detail) VALUES (?, '2026-01-01', 'renamed', ?)",
                 (job_id, json.dumps({"Speaker2": "李雷", "path": "C:\\u674e"})))
    conn.commit()
    conn.close()
    query = "SELECT kind, detail FROM job_events WHERE kind = 'renamed'"
    assert main(["--config", str(cli_config), "sql", query]) == 0
    out = capsys.readouterr().out
    assert '{"Speaker2": "李雷", "path": "C:\\\\u674e"}' in out, out  # an escaped backslash stays text
    assert main(["--config", str(cli_config), "sql", "--json", query]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["detail"] == '{"Speaker2": "李雷", "path": "C:\\\\u674e"}'
    # rows written now are stored readably: LIKE finds the name
    assert main(["--config", str(cli_config), "sql", "SELECT id FROM jobs WHERE options LIKE '%李雷%'"]) == 0
    assert capsys.readouterr().out.split() == ["id", str(job_id)]


def test_readable_json_changes_nothing_but_the_escapes() -> None:
    from daemon.store.sqlconsole import readable_json

    assert readable_json('"\\ud83d\\ude00 \\u674e"') == '"😀 李"'  # a surrogate pair is one character
    kept = ['{"q": "\\"\\n\\u2028\\u0041"}', "not json \\u674e", '{"a": "\\ud83d"}', "[1, 2]"]
    assert [readable_json(v) for v in kept] == kept  # invisible, ASCII, lone surrogates, not JSON
    assert readable_json(7) == 7 and readable_json(None) is None


@pytest.mark.backends("sqlite")
def test_sql_wide_shows_long_cells_whole(store, cli_config: Path, capsys) -> None:
    name = "会议" * 40 + ".m4a"
    store.enqueue(source_name=name, spool_path="/spool/x", output_stem="x", sha256=None, size_bytes=1)
    assert main(["--config", str(cli_config), "sql", "SELECT source_name FROM jobs"]) == 0
    cut = capsys.readouterr().out
    assert name not in cut and CUT_MARK in cut
    assert main(["--config", str(cli_config), "sql", "--wide", "SELECT source_name FROM jobs"]) == 0
    assert name in capsys.readouterr().out


# --- spkd db upgrade: enrolments have no transcript --------------------------------------

def test_an_enrolment_is_not_a_job_without_its_transcript(store, tmp_path: Path) -> None:
    from daemon.jobs import results

    config = make_config(tmp_path, url=store.url, host="h1")
    enrol = store.enqueue(source_name="voices/李雷/a.wav", spool_path="/spool/e/a.wav", output_stem="a",
                          sha256="ab" * 32, size_bytes=10, options={"voice": "李雷"}, task="enrol")
    job = store.claim(slot=0, pid=41, device="cpu", lease_seconds=60)
    assert job is not None and job.id == enrol
    sample = {"embedding": [1.0, 0.0], "model_name": "cam++", "model_revision": "v", "sha256": "ab" * 32,
              "speech_seconds": 12.0, "audio_seconds": 13.0, "origin": "folder", "source": "李雷/a.wav",
              "job_id": enrol}
    assert store.complete_enrolment(enrol, pid=41, name="李雷", sample=sample, processing_seconds=1, device="cpu")
    assert store.done_jobs_without_segments() == []
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        result = results.backfill_segments(config, store)
    finally:
        logger.remove(sink)
    assert result.missing == () and not [m for m in messages if "no stored transcript" in m]


# --- FunASR's hub chatter ----------------------------------------------------------------------

@pytest.fixture()
def loguru_lines():
    from daemon.logs import route_std_logging

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    route_std_logging()
    try:
        yield lines
    finally:
        logger.remove(sink)
        root.handlers[:], root.level = before


def test_funasr_s_hub_chatter_is_dropped_and_real_warnings_kept(loguru_lines: list[str]) -> None:
    from daemon.logs import printed_to_log

    # exactly what FunASR 1.4 says for each of the four models it loads from local folders
    for _ in range(4):
        logging.info("download models from model hub: ms")
        logging.warning("trust_remote_code: False")
    with printed_to_log("funasr"):
        print("funasr version: 1.4.16.")
        print("error, init_param does not exist!: /models/asr/model.pt")
    logging.warning("trust_remote_code: True")  # not what spkd asks for: worth a line
    logging.getLogger("uvicorn.error").error("something broke")
    assert loguru_lines == ["WARNING funasr: error, init_param does not exist!: /models/asr/model.pt",
                            "WARNING test_cli_output: trust_remote_code: True",  # root logger: the module
                            "ERROR uvicorn.error: something broke"]
    assert not any("model hub" in line or "funasr version" in line or "trust_remote_code: False" in line
                   for line in loguru_lines)


def test_a_library_s_basic_config_finds_spkd_s_handler(loguru_lines: list[str], capsys) -> None:
    """FunASR's import calls logging.basicConfig(level=INFO, …): with spkd's handler in
    place it does nothing, so its INFO lines neither reach stderr nor become spkd's INFO."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(levelname)s] %(message)s")
    logging.info("Loading pretrained params from /models/asr/model.pt")
    assert capsys.readouterr().err == ""
    assert loguru_lines == []


# --- spkd transcribe: the inputs first ------------------------------------------------------

def test_transcribe_of_a_missing_file_fails_at_once_without_funasr(tmp_path: Path) -> None:
    models = tmp_path / "models"
    config = write_config(tmp_path, models={"dir": str(models)}, workers={"device": "cpu"})
    probe = ("import sys, time; from daemon.cli.main import main; started = time.monotonic(); "
             "code = main(['--config', sys.argv[1], 'transcribe', 'nosuch.m4a', sys.argv[2]]); "
             "print(code, round(time.monotonic() - started, 3), 'funasr' in sys.modules, 'torch' in sys.modules)")
    empty = tmp_path / "empty.m4a"
    empty.touch()
    proc = subprocess.run([sys.executable, "-c", probe, str(config), str(empty)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    code, _elapsed, funasr, torch = proc.stdout.split()
    # neither FunASR nor torch was imported (loading them takes 8 s and more); no wall-clock
    # bound: on a loaded machine the store's imports alone took 5 s
    assert (code, funasr, torch) == ("1", "False", "False"), proc.stderr
    assert "FAILED [1/2] nosuch.m4a: bad_audio: no such file" in proc.stderr
    assert "FAILED [2/2] empty.m4a: empty: " in proc.stderr
    assert "model" not in proc.stderr  # the missing models are not the problem here


def test_transcribe_says_which_inputs_are_bad_before_loading_the_models(tmp_path: Path, monkeypatch) -> None:
    import io

    from daemon.cli import oneshot

    said: list[str] = []

    class Loaded(Exception):
        pass

    def load_engine(config, device, say):  # noqa: ANN001, ANN202 - stands in for the 8-s load
        said.append("loading models")
        raise Loaded

    monkeypatch.setattr(oneshot, "load_engine", load_engine)
    monkeypatch.setattr("daemon.engine.models.require_model_dirs", lambda dirs: dirs)
    good = tmp_path / "good.wav"
    good.write_bytes(b"RIFF....")
    err = io.StringIO()
    with pytest.raises(Loaded):
        oneshot.transcribe_files(make_config(tmp_path), [good, tmp_path / "nosuch.m4a", tmp_path], err=err,
                                 progress=False)
    assert err.getvalue().splitlines() == ["FAILED [2/3] nosuch.m4a: bad_audio: no such file",
                                           f"FAILED [3/3] {tmp_path.name}: not_a_file: a folder, not a file"]
    assert said == ["loading models"]


def test_transcribe_opens_no_database_without_voices(tmp_path: Path, monkeypatch) -> None:
    from daemon.cli import oneshot

    monkeypatch.setattr(oneshot, "load_engine", lambda *a: (_ for _ in ()).throw(RuntimeError("loaded")))
    monkeypatch.setattr("daemon.engine.models.require_model_dirs", lambda dirs: dirs)
    config = make_config(tmp_path)
    good = tmp_path / "good.wav"
    good.write_bytes(b"RIFF....")
    with pytest.raises(RuntimeError, match="loaded"):
        oneshot.transcribe_files(config, [good], progress=False)
    assert not (tmp_path / "state").exists()  # no database made or opened
    from daemon.errors import VoiceError

    started = time.monotonic()
    with pytest.raises(VoiceError, match="no job database"):
        oneshot.transcribe_files(config, [good], progress=False, voices=True)
    assert time.monotonic() - started < 2.0 and not (tmp_path / "state").exists()  # nor created by --voices


def test_a_read_only_store_reads_and_refuses_to_write(store, url) -> None:
    from daemon.store import Store

    store.add_voice_sample("王总", {"embedding": [1.0, 0.0], "model_name": "cam++", "model_revision": "v",
                                   "sha256": None, "speech_seconds": 12.0, "origin": "cli", "source": "a.wav",
                                   "job_id": None})
    reader = Store(url, host="h1", read_only=True)
    try:
        assert [s.name for s in reader.voice_samples_of()] == ["王总"]
        with pytest.raises(Exception, match=r"(?i)read.?only"):  # the database's refusal, on either backend
            reader.add_voice_sample("李雷", {"embedding": [0.0, 1.0], "model_name": "cam++", "model_revision": "v",
                                             "sha256": None, "speech_seconds": 12.0, "origin": "cli",
                                             "source": "b.wav", "job_id": None})
    finally:
        reader.close()
    assert [s.name for s in store.voice_samples_of()] == ["王总"]


def test_search_lines_up_the_text_whatever_the_speaker_s_name(store, cli_config: Path, capsys) -> None:
    from daemon.transcript import Segment, Transcript

    job_id = store.enqueue(source_name="会议.m4a", spool_path="/spool/x", output_stem="x", sha256=None, size_bytes=1)
    store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    segments = tuple(Segment(start=10.0 * i, end=10.0 * i + 4.0, speaker=s, text=f"预算第{i}次")
                     for i, s in enumerate((1, 2, 3)))
    assert store.complete(job_id, pid=1, audio_seconds=60, processing_seconds=1, speakers=3, outputs=[],
                          device="cpu", transcript=Transcript(segments=segments, audio_seconds=60,
                                                                speaker_names={1: "王总", 3: "Li"}))
    assert main(["--config", str(cli_config), "search", "预算第"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(lines) == 3 and len({display_width(line[:line.index("[预算第]")]) for line in lines}) == 1, lines
