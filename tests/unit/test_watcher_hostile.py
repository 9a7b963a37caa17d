"""One bad file never stops the watcher or start-up recovery: the real watcher and a
real SQLite store, with the failure of one file injected or made for real (a FIFO, a
device file, a name that is not UTF-8, a sidecar that is a folder)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon import files
from daemon.store import db
from daemon.jobs import spool
from daemon.intake import watcher as watcher_module
from daemon import store as st
from daemon.intake.watcher import Watcher
from tests.support.config import make_config
from tests.support.daemon import write_wav


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path


def make_watcher(root: Path, **watch: object) -> Watcher:
    url = f"sqlite:///{root / 'state' / 'spkd.db'}"
    db.migrate(url)
    config = make_config(root, url=url, host="h1", watch={"settle_seconds": 0, **watch})
    for path in (config.paths.inbox, config.paths.spool, config.paths.failed, config.paths.archive):
        path.mkdir(parents=True, exist_ok=True)
    return Watcher(config, st.Store(url, host="h1"))


@pytest.fixture()
def w(root: Path):
    made = make_watcher(root)
    yield made
    made.store.close()


@pytest.fixture()
def logged():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    yield lines
    logger.remove(sink)


def take_all(w: Watcher) -> dict[str, dict]:
    w.scan()
    w.process_due()
    return {j.source_name: j for j in w.store.jobs(limit=100)}


def test_a_name_that_is_not_utf8_becomes_a_job_with_its_readable_name(w):
    raw = os.fsencode(w.inbox) + b"/\xff\xfe.wav"
    with open(raw, "wb") as handle:
        handle.write(write_wav(w.inbox.parent / "src.wav").read_bytes())
    jobs = take_all(w)
    job = jobs["\\xff\\xfe.wav"]
    assert job.state == "queued" and job.output_stem == "\\xff\\xfe"
    assert Path(job.spool_path).exists() and Path(job.spool_path).name == "\\xff\\xfe.wav"
    assert not os.path.exists(raw)


def test_recovery_adopts_a_spooled_name_that_is_not_utf8(w):
    token = spool.new_slot(w.config.paths.spool, "h1")
    token.mkdir(parents=True)
    raw = os.fsencode(token) + b"/\xe9t\xe9.wav"  # Latin-1 "été", as an old client wrote it
    with open(raw, "wb") as handle:
        handle.write(write_wav(w.inbox.parent / "src.wav").read_bytes())
    [job_id] = w.recover_spool()
    job = w.store.job(job_id)
    assert job.source_name == "\\xe9t\\xe9.wav" and Path(job.spool_path).exists()
    assert w.recover_spool() == []  # recorded once


def test_an_unexpected_error_in_recovery_fails_that_file_only(w, monkeypatch):
    for name in ("a.wav", "evil.wav", "b.wav"):
        target = spool.new_slot(w.config.paths.spool, "h1") / name
        write_wav(target, seed=len(name))
    real = Watcher.enqueue_spooled

    def enqueue(self, spool_path, **kwargs):  # type: ignore[no-untyped-def]
        if spool_path.name == "evil.wav":
            raise RuntimeError("something nobody foresaw")
        return real(self, spool_path, **kwargs)

    monkeypatch.setattr(Watcher, "enqueue_spooled", enqueue)
    recovered = w.recover_spool()
    jobs = {j.source_name: j for j in w.store.jobs()}
    assert len(recovered) == 3 and jobs["a.wav"].state == jobs["b.wav"].state == "queued"
    evil = jobs["evil.wav"]
    assert (evil.state, evil.error_kind) == ("failed", "error")
    assert evil.error_message == "RuntimeError: something nobody foresaw"
    error = json.loads((w.config.paths.failed / "evil.wav.error.json").read_text())
    assert error["job_id"] == evil.id and (w.config.paths.failed / "evil.wav").exists()


def test_an_unexpected_error_after_the_move_fails_the_job_instead_of_orphaning_the_file(w, monkeypatch):
    write_wav(w.inbox / "good.wav", seed=1)
    write_wav(w.inbox / "evil.wav", seed=2)
    real = Watcher.enqueue_spooled

    def enqueue(self, spool_path, **kwargs):  # type: ignore[no-untyped-def]
        if spool_path.name == "evil.wav":
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, spool_path, **kwargs)

    monkeypatch.setattr(Watcher, "enqueue_spooled", enqueue)
    jobs = take_all(w)
    assert jobs["good.wav"].state == "queued"
    assert (jobs["evil.wav"].state, jobs["evil.wav"].error_kind) == ("failed", "error")
    assert (w.config.paths.failed / "evil.wav.error.json").exists()
    assert spool.spooled_files(w.config.paths.spool) == [Path(jobs["good.wav"].spool_path)]


def test_an_unexpected_error_before_the_move_fails_that_file(w, monkeypatch):
    write_wav(w.inbox / "good.wav", seed=1)
    write_wav(w.inbox / "evil.wav", seed=2)
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file",
                        lambda p: (_ for _ in ()).throw(OSError(5, "Input/output error")) if p.name == "evil.wav"
                        else real(p))
    jobs = take_all(w)
    assert jobs["good.wav"].state == "queued"
    evil = jobs["evil.wav"]
    assert evil.state == "failed" and "Input/output error" in evil.error_message
    assert (w.config.paths.failed / "evil.wav").exists() and not (w.inbox / "evil.wav").exists()


def test_a_file_that_cannot_even_be_moved_stays_logged_once_until_it_changes(w, monkeypatch, logged):
    path = write_wav(w.inbox / "stuck.wav")
    monkeypatch.setattr(files, "sha256_file", lambda p: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    monkeypatch.setattr(Watcher, "_move_in", lambda self, p, name: (_ for _ in ()).throw(PermissionError(13, "no")))
    for _ in range(20):
        take_all(w)
    assert path.exists() and w.store.jobs() == []
    assert sum("stays in the inbox until it changes" in line for line in logged) == 1
    assert len(w.tracker) == 0  # not looked at again and again
    write_wav(path, seconds=0.6)  # it changed: looked at again
    monkeypatch.undo()
    jobs = take_all(w)
    assert jobs["stuck.wav"].state == "queued"


def test_fifos_and_devices_fail_at_once_as_not_a_file(w):
    os.mkfifo(w.inbox / "pipe.wav")
    os.mknod(w.inbox / "null.wav", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    write_wav(w.inbox / "good.wav")
    jobs = take_all(w)
    assert jobs["good.wav"].state == "queued"
    for name, what in (("pipe.wav", "FIFO"), ("null.wav", "character device")):
        assert (jobs[name].state, jobs[name].error_kind) == ("failed", "not_a_file"), jobs[name]
        assert what in jobs[name].error_message
        assert (w.config.paths.failed / f"{name}.error.json").exists()
    assert sorted(p.name for p in w.inbox.iterdir()) == []


def test_a_sidecar_that_is_a_folder_fails_its_audio_and_stays(w):
    write_wav(w.inbox / "a.wav")
    (w.inbox / "a.wav.spkd.json").mkdir()
    write_wav(w.inbox / "a.wav.spkd.json" / "inside.wav", seed=3)
    jobs = take_all(w)
    assert (jobs["a.wav"].error_kind, jobs["a.wav"].state) == ("bad_options", "failed")
    assert "a folder" in jobs["a.wav"].error_message
    assert "a.wav.spkd.json/inside.wav" not in jobs  # never mistaken for audio
    assert (w.inbox / "a.wav.spkd.json" / "inside.wav").exists()


def test_an_unreadable_file_waits_then_fails_as_unreadable(w, monkeypatch):
    path = write_wav(w.inbox / "locked.wav")
    real = files.open_regular
    monkeypatch.setattr(files, "open_regular", lambda p: (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if p.name == "locked.wav" else real(p))
    w.scan()
    assert w.take(path, age_seconds=1.0) is None and path.exists()  # its owner may still fix that
    job_id = w.take(path, age_seconds=watcher_module.UNREADABLE_FAIL_SECONDS)
    job = w.store.job(job_id)
    assert (job.state, job.error_kind) == ("failed", "unreadable")
    assert "Permission denied" in job.error_message


def test_long_names_keep_every_derived_name_within_the_limit(w):
    for n in (235, 248, 251):
        write_wav(w.inbox / ("n" * (n - 4) + ".wav"), seed=n)
    jobs = take_all(w)
    assert len(jobs) == 3 and all(j.state == "queued" for j in jobs.values())
    for job in jobs.values():
        assert len(os.fsencode(job.output_stem)) + 14 <= 255
        assert len(os.fsencode(Path(job.spool_path).name)) <= 255


# --- files still being written -------------------------------------------------------

def test_the_kernel_says_whether_a_file_is_still_open_for_writing(tmp_path):
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("read leases are Linux's")
    assert files.ignore_lease_breaks()  # pytest runs tests in the main thread
    path = tmp_path / "rec.wav"
    path.write_bytes(b"x" * 100)
    assert files.open_for_writing(path) is False
    writer = subprocess.Popen([sys.executable, "-c", f"import sys, time\nf = open({str(path)!r}, 'ab')\n"
                               "print('open', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert files.open_for_writing(path) is True
    finally:
        writer.communicate("done\n", timeout=10)
    assert files.open_for_writing(path) is False
    reader = open(path, "rb")  # a reader does not count
    try:
        assert files.open_for_writing(path) is False
    finally:
        reader.close()


def streaming_wav(path: Path) -> Path:
    """A WAV as a recorder writes it before it knows the sizes (0xFFFFFFFF placeholders)."""
    import struct

    path.write_bytes(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " +
                     struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" +
                     struct.pack("<I", 0xFFFFFFFF) + b"\0\1" * 16000)
    return path


def mp4_without_index(path: Path) -> Path:
    import struct

    path.write_bytes(struct.pack(">I4s", 24, b"ftyp") + b"M4A \0\0\2\0isomiso2" + struct.pack(">I4s", 0, b"mdat") +
                     b"\0" * 5000)
    return path


@pytest.mark.parametrize("make, reason", [(streaming_wav, "WAV"), (mp4_without_index, "moov")])
def test_where_the_kernel_cannot_tell_an_unfinished_container_waits(root, monkeypatch, make, reason):
    monkeypatch.setattr(files, "open_for_writing", lambda path: None)  # not Linux, or another user's file
    w = make_watcher(root, incomplete_wait_seconds=300)
    try:
        path = make(w.inbox / f"rec{make.__name__[:3]}.{'wav' if reason == 'WAV' else 'm4a'}")
        assert w.take(path) is None and path.exists()  # still being written, as far as anyone can tell
    finally:
        w.store.close()
    # ... and once it stayed unchanged long enough
    w = make_watcher(root, incomplete_wait_seconds=0, unfinished_wav_seconds=0)
    try:
        job_id = w.take(path)
        assert job_id is not None and not path.exists()
        [warning] = [e for e in w.store.events(job_id) if e.kind == "warning"]
        assert reason in warning.detail["message"]
    finally:
        w.store.close()


def test_container_completeness(tmp_path):
    from daemon.intake.probe import incomplete_reason

    whole = write_wav(tmp_path / "whole.wav", seconds=1.0)
    assert incomplete_reason(whole) is None
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:5000])
    assert "promises" in incomplete_reason(cut)
    assert "still being written" in incomplete_reason(streaming_wav(tmp_path / "s.wav"))
    assert "moov" in incomplete_reason(mp4_without_index(tmp_path / "m.m4a"))
    other = tmp_path / "a.mp3"
    other.write_bytes(b"ID3" + b"\0" * 100)
    assert incomplete_reason(other) is None  # no such check for this format


def test_a_sidecar_from_the_future_or_with_a_byte_order_mark_does_not_hold_its_audio(w):
    """A share whose clock runs ahead gives a sidecar an mtime in the future; a Windows
    editor starts the file with a BOM. Neither may keep the audio waiting or failing."""
    write_wav(w.inbox / "a.wav")
    sidecar = w.inbox / "a.wav.spkd.json"
    sidecar.write_bytes(b"\xef\xbb\xbf" + json.dumps({"speakers": 2}).encode())
    future = os.stat(sidecar).st_mtime + 3600
    os.utime(sidecar, (future, future))
    w.config = dataclasses.replace(w.config, watch=dataclasses.replace(w.config.watch, settle_seconds=5.0))
    job_id = w.take(w.inbox / "a.wav")
    assert job_id is not None and w.store.job(job_id).options == {"speakers": 2}


def test_a_folder_that_cannot_be_listed_is_logged_not_passed_over_in_silence(w, logged):
    """A tree deeper than the system's 4096-byte path limit (or, for a user other than
    root, a folder without read permission): its files cannot be taken; the log says so,
    once, and the other files are taken as ever."""
    here = os.open(w.inbox, os.O_RDONLY)
    try:
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=here)
            deeper = os.open("d" * 250, os.O_RDONLY, dir_fd=here)
            os.close(here)
            here = deeper
        os.close(os.open("deep.wav", os.O_WRONLY | os.O_CREAT, dir_fd=here))
    finally:
        os.close(here)
    write_wav(w.inbox / "fine.wav")
    for _ in range(3):
        jobs = take_all(w)
    assert list(jobs) == ["fine.wav"]
    assert sum("cannot look into" in line and "File name too long" in line for line in logged) == 1


def test_start_up_settling_survives_a_spool_file_that_cannot_be_moved(w, monkeypatch, logged):
    from daemon.service.supervisor import Supervisor

    ids = []
    for name in ("stuck.wav", "fine.wav"):
        path = write_wav(spool.new_slot(w.config.paths.spool, "h1") / name, seed=len(name))
        ids.append(w.store.add_failed(source_name=name, spool_path=str(path), output_stem=name[:-4], sha256=None,
                                      size_bytes=1, kind="not_audio", message="m"))
    real = spool.retire_failed
    monkeypatch.setattr(spool, "retire_failed", lambda config, job: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")) if job.source_name == "stuck.wav" else real(config, job))
    supervisor = Supervisor(w.config)
    supervisor.store = w.store
    supervisor.settle_spool()  # at start, and after every worker crash: must not raise
    assert (w.config.paths.failed / "fine.wav").exists()
    assert any("cannot move its source" in line and "Permission denied" in line for line in logged)


def test_an_empty_file_still_open_for_writing_is_not_failed_as_empty(w):
    import subprocess
    import sys

    if not files.ignore_lease_breaks():
        pytest.skip("needs Linux read leases")
    path = w.inbox / "buffering.wav"
    writer = subprocess.Popen([sys.executable, "-c", f"import sys\nf = open({str(path)!r}, 'wb')\n"
                               "print('open', flush=True); sys.stdin.readline()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert w.take(path, age_seconds=w.config.watch.empty_fail_seconds + 1) is None and path.exists()
    finally:
        writer.communicate("done\n", timeout=10)
    job_id = w.take(path, age_seconds=w.config.watch.empty_fail_seconds + 1)
    assert w.store.job(job_id).error_kind == "empty"


def burst(path: Path, seconds: float, *, final: bool = False) -> None:
    """A recorder that reopens the file for each burst: appends PCM and closes it again,
    leaving the placeholder sizes in the header until the last burst (`final`)."""
    import struct

    with open(path, "r+b" if path.exists() else "w+b") as out:
        if out.seek(0, os.SEEK_END) == 0:
            out.write(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " +
                      struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", 0xFFFFFFFF))
        out.write(b"\0\1" * int(16000 * seconds))
        if final:
            size = out.tell()
            out.seek(4)
            out.write(struct.pack("<I", size - 8))
            out.seek(40)
            out.write(struct.pack("<I", size - 44))


def test_a_wav_reopened_for_each_burst_waits_for_its_final_header(root):
    """Nobody holds it open between bursts (the kernel says so), but the header says the
    recording goes on: the file is left alone until its header is final, then taken
    once, whole (issue 26, R2)."""
    w = make_watcher(root, unfinished_wav_seconds=60)
    try:
        path = w.inbox / "meeting.wav"
        for _ in range(3):
            burst(path, 1.0)
            assert files.open_for_writing(path) in (False, None)
            assert take_all(w) == {} and path.exists()
        burst(path, 1.0, final=True)
        jobs = take_all(w)
        assert list(jobs) == ["meeting.wav"] and not path.exists()
        assert jobs["meeting.wav"].size_bytes == 44 + 4 * 32000
        assert not [e for e in w.store.events(jobs["meeting.wav"].id) if e.kind == "warning"]
    finally:
        w.store.close()


@pytest.mark.parametrize("damage", ["placeholder", "zero", "short_riff"])
def test_an_unfinished_wav_is_taken_after_it_stopped_growing_with_a_warning(root, damage):
    import struct

    path = root / "inbox" / "rec.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    burst(path, 1.0, final=True)
    data = bytearray(path.read_bytes())
    if damage == "placeholder":
        data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    elif damage == "zero":
        data[40:44] = struct.pack("<I", 0)
    else:  # the header written after the first burst, audio appended since
        data[4:8] = struct.pack("<I", 36 + 3200)
        data[40:44] = struct.pack("<I", 3200)
    path.write_bytes(bytes(data))
    w = make_watcher(root, unfinished_wav_seconds=60)
    try:
        assert take_all(w) == {} and path.exists()  # still being written, as far as its header says
        old = time.time() - 61
        os.utime(path, (old, old))
        jobs = take_all(w)
        assert list(jobs) == ["rec.wav"]
        [warning] = [e for e in w.store.events(jobs["rec.wav"].id) if e.kind == "warning"]
        assert "WAV" in warning.detail["message"] and "without growth" in warning.detail["message"]
        assert jobs["rec.wav"].size_bytes == 44 + 32000  # the audio it has
    finally:
        w.store.close()


def test_unfinished_wav_seconds_is_a_checked_config_key(root):
    from daemon.config import ConfigError

    assert make_config(root, watch={"unfinished_wav_seconds": 5}).watch.unfinished_wav_seconds == 5
    assert make_config(root).watch.unfinished_wav_seconds == 60
    with pytest.raises(ConfigError, match="watch.unfinished_wav_seconds"):
        make_config(root, watch={"unfinished_wav_seconds": -1})


@pytest.mark.parametrize("first,second,second_stem", [
    ("meeting.wav", "meeting.summary.wav", "meeting.summary (2)"),  # its .md would be meeting's summary
    ("meeting.summary.wav", "meeting.wav", "meeting (2)"),
    ("team/call.wav", "team/call.sentences.m4a", "team/call.sentences (2)"),  # its .txt: call's sentences
    ("notes.wav", "notes.summary.extra.wav", "notes.summary.extra"),  # no output of one is named as the other's
])
def test_a_name_whose_outputs_would_be_another_job_s_gets_a_number(w, first, second, second_stem):
    from daemon.jobs import outputs

    for name in (first, second):
        target = w.inbox / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(target)
        take_all(w)
    jobs = {j.source_name: j for j in w.store.jobs(limit=10)}
    assert jobs[second].output_stem == second_stem
    names = [{stem + ending for ending in outputs._ENDINGS}
             for stem in (jobs[first].output_stem, jobs[second].output_stem)]
    assert names[0].isdisjoint(names[1])
