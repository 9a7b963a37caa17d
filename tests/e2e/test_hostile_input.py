"""Hostile input against the real daemon process (fake engine): names that are not
UTF-8 or near the 255-byte limit, sidecars that cannot be parsed, FIFOs and device
files, spool leftovers of a crash. The service keeps serving the other files, every
hostile file ends in a defined state with a reason, and a restart finds nothing to
trip over."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e


def by_name(d: Daemon) -> dict[str, dict]:
    return {j["source_name"]: j for j in d.jobs()}


def drop_raw(folder: Path, raw_name: bytes, data: bytes) -> None:
    with open(os.fsencode(folder) + b"/" + raw_name, "wb") as handle:
        handle.write(data)


def names_fit(folder: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            assert len(os.fsencode(name)) <= 255, name


def test_hostile_names_end_done_or_failed_with_names_that_fit(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        audio = write_wav(tmp_path / "src" / "a.wav", seconds=1.0).read_bytes()
        drop_raw(d.inbox, b"\xff\xfe.wav", audio)  # as SMB and old Windows clients write names
        drop_raw(d.inbox, b"line\nbreak.wav", write_wav(tmp_path / "src" / "b.wav", seed=1).read_bytes())
        long_248 = "L" * 244 + ".wav"  # its sidecar name (258 bytes) cannot exist
        long_235 = "M" * 231 + ".wav"  # its temporary output names would not fit
        bad_long = "bad" + "B" * 240 + ".wav"  # fails in the worker: its .error.json must fit too
        for i, name in enumerate((long_248, long_235, bad_long)):
            write_wav(d.inbox / name, seed=10 + i)
        write_wav(d.inbox / "plain.wav", seed=20)
        jobs = {j["source_name"]: j for j in d.wait_finished(6)}
        assert jobs["\\xff\\xfe.wav"]["state"] == "done"
        assert sorted(p.name for p in d.outbox.iterdir() if p.name.startswith("\\xff")) == [
            "\\xff\\xfe.json", "\\xff\\xfe.sentences.txt", "\\xff\\xfe.srt", "\\xff\\xfe.txt", "\\xff\\xfe.vtt"]
        record = json.loads((d.outbox / "\\xff\\xfe.json").read_text(encoding="utf-8"))
        assert record["source"]["name"] == "\\xff\\xfe.wav"
        assert jobs["line\\x0abreak.wav"]["state"] == "done" and (d.outbox / "line\\x0abreak.txt").exists()
        assert jobs[long_248]["state"] == jobs[long_235]["state"] == jobs["plain.wav"]["state"] == "done"
        assert len(json.loads(jobs[long_235]["outputs"])) == 5
        bad = jobs[bad_long]
        assert bad["state"] == "failed" and bad["error_kind"] == "bad_audio"
        error_files = list((tmp_path / "failed").glob("*.error.json"))
        assert len(error_files) == 1 and json.loads(error_files[0].read_text())["job_id"] == bad["id"]
        assert not any(p.name.startswith(".") for p in d.outbox.iterdir())  # no temporary file left behind
        for folder in ("outbox", "archive", "failed"):
            names_fit(tmp_path / folder)
        assert "Traceback" not in d.log()
        assert d.stop() == 0


def test_unparsable_sidecars_fail_bad_options_and_restart_is_clean(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        sidecars = {
            "deep.wav": lambda p: p.write_text("[" * 30_000 + "]" * 30_000),
            "huge.wav": lambda p: (p.touch(), os.truncate(p, 50 * 2**20)),  # 50 MB, sparse
            "empty.wav": lambda p: p.write_text(""),
            "folder.wav": lambda p: p.mkdir(),
            "pipe.wav": lambda p: os.mkfifo(p),
        }
        for i, (name, make) in enumerate(sidecars.items()):
            make(d.inbox / f"{name}.spkd.json")
            write_wav(d.inbox / name, seed=i)
        write_wav(d.inbox / "good.wav", seed=99)
        jobs = {j["source_name"]: j for j in d.wait_finished(6)}
        assert jobs["good.wav"]["state"] == "done"
        for name in sidecars:
            assert (jobs[name]["state"], jobs[name]["error_kind"]) == ("failed", "bad_options"), jobs[name]
            d.wait((tmp_path / "failed" / f"{name}.error.json").exists, what=f"{name}.error.json")
        assert "nested too deeply" in jobs["deep.wav"]["error_message"]
        assert "larger than 64 KB" in jobs["huge.wav"]["error_message"]
        assert spool_files(tmp_path) == []
        assert d.stop() == 0
        d.start()
        time.sleep(3)  # a rescan later: nothing re-spooled, nothing new
        assert len(d.jobs()) == 6 and spool_files(tmp_path) == []
        assert d.stop() == 0


def spool_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root / "spool")) for p in (root / "spool").rglob("*") if p.is_file())


def test_fifos_and_device_files_fail_at_once(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        os.mkfifo(d.inbox / "pipe.wav")
        os.mknod(d.inbox / "zero.wav", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
        write_wav(d.inbox / "good.wav")
        jobs = {j["source_name"]: j for j in d.wait_finished(3, timeout=30)}
        assert jobs["good.wav"]["state"] == "done"
        assert jobs["pipe.wav"]["error_kind"] == jobs["zero.wav"]["error_kind"] == "not_a_file"
        d.wait((tmp_path / "failed" / "zero.wav.error.json").exists, what="zero.wav.error.json")
        assert d.stop() == 0


def test_start_up_recovery_survives_what_an_older_spkd_left_in_the_spool(tmp_path):
    """A crash between the move into the spool and the row: recovery records each file,
    whatever its name or sidecar, instead of stopping the daemon at every start."""
    token = tmp_path / "spool" / "20250101T000000-leftover-0001"
    token.mkdir(parents=True)
    drop_raw(token, b"caf\xe9.wav", write_wav(tmp_path / "src" / "a.wav", seed=1).read_bytes())
    write_wav(token / "deep.wav", seed=2)
    (token / "deep.wav.spkd.json").write_text("[" * 30_000 + "]" * 30_000)
    with Daemon(tmp_path, config={"daemon": {"host": "leftover"}}) as d:
        d.start()
        jobs = {j["source_name"]: j for j in d.wait_finished(2)}
        assert jobs["caf\\xe9.wav"]["state"] == "done"
        assert (jobs["deep.wav"]["state"], jobs["deep.wav"]["error_kind"]) == ("failed", "bad_options")
        assert d.stop() == 0


def test_native_events_resume_after_the_inbox_is_deleted_and_made_again(tmp_path):
    import shutil

    with Daemon(tmp_path, config={"watch": {"rescan_seconds": 300}}) as d:  # no rescan will come to help
        d.start()
        write_wav(d.inbox / "first.wav", seed=1)
        d.wait_finished(1, timeout=20)
        shutil.rmtree(d.inbox)
        time.sleep(1.0)
        d.inbox.mkdir()
        time.sleep(2.0)  # the new folder's own scan is over: what follows only native events can report
        write_wav(d.inbox / "second.wav", seed=2)
        jobs = d.wait_finished(2, timeout=20)
        assert [j["state"] for j in jobs] == ["done", "done"]
        assert "is gone; waiting for it to come back" in d.log() and "watching it again" in d.log()
        assert d.stop() == 0
