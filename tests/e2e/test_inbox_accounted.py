"""From outside: impossible folders stop `spkd run` with one line, and every file lying
in the inbox is accounted for by `spkd status` (the real CLI and daemon, fake engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.daemon import REPO, Daemon, write_wav

pytestmark = pytest.mark.e2e


def spkd(d: Daemon, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=timeout)


def test_an_inbox_under_a_regular_file_stops_run_with_one_line(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    d = Daemon(tmp_path, config={"paths": {"inbox": str(tmp_path / "hostname" / "inbox")}})
    run = spkd(d, "run", timeout=60)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert run.stderr.splitlines() == [f"spkd: paths.inbox: {tmp_path / 'hostname' / 'inbox'} cannot be created: "
                                       f"{tmp_path / 'hostname'} is a file, not a directory"]
    assert not (tmp_path / "state").exists()  # nothing made, no log file begun
    doctor = spkd(d, "doctor")
    assert doctor.returncode == 1 and "ready to run" not in doctor.stdout
    [line] = [line for line in doctor.stdout.splitlines() if line.startswith("BAD") and "folders" in line]
    assert "paths.inbox:" in line and "is a file, not a directory" in line
    report = json.loads(spkd(d, "doctor", "--json").stdout)
    assert not report["ok"] and any(c["check"] == "folders" and not c["ok"] for c in report["checks"])


def test_status_accounts_for_every_file_in_the_inbox(tmp_path):
    with Daemon(tmp_path, config={"watch": {"empty_fail_seconds": 600}}) as d:
        d.start()
        (d.inbox / "notes.txt").write_text("remember the milk\n")
        (d.inbox / "empty.m4a").write_bytes(b"")
        (d.inbox / "later.wav.spkd.json").write_text('{"speakers": 2}')
        write_wav(d.inbox / "real.wav")
        [job] = d.wait_finished(1)
        assert job["source_name"] == "real.wav"
        time.sleep(4.5)  # two rescans (rescan_seconds 2)

        out = spkd(d, "status")
        assert out.returncode == 0, out.stderr
        lines = {line.split()[1].rstrip(":"): line for line in out.stdout.splitlines() if line.startswith("  ")
                 and line.split()[0] in ("settling", "empty", "ignored")}
        assert sorted(lines) == ["empty.m4a", "later.wav.spkd.json", "notes.txt"], out.stdout
        assert "never taken: extension not in watch.extensions (.txt)" in lines["notes.txt"]
        assert "never taken: sidecar without its audio: taken with later.wav once that arrives" in lines["later.wav.spkd.json"]
        # the empty file's clock runs from its mtime: about 10 minutes after it was dropped
        assert "fails as `empty` in 9 min" in lines["empty.m4a"] and "unless it gets content" in lines["empty.m4a"]
        assert "inbox: 3 file(s) not taken yet" in out.stdout

        status = json.loads(spkd(d, "status", "--json").stdout)
        files = {f["name"]: f for f in status["inbox"]["files"]}
        assert files["notes.txt"]["state"] == "ignored"
        assert files["notes.txt"]["reason"] == "extension not in watch.extensions (.txt)"
        empty = files["empty.m4a"]
        assert empty["state"] == "empty" and empty["size_bytes"] == 0
        mtime = (d.inbox / "empty.m4a").stat().st_mtime
        assert empty["due_at"] == pytest.approx(mtime + 600) and 500 < empty["due_in_seconds"] <= 600

        # the watcher said each ignored file once, not at every rescan
        log = d.log()
        assert log.count("ignoring notes.txt in the inbox: extension not in watch.extensions (.txt)") == 1, log
        assert log.count("ignoring later.wav.spkd.json in the inbox: sidecar") == 1
        assert d.stop() == 0

    out = spkd(d, "status")  # the daemon is gone: status reads the inbox itself
    assert out.returncode == 1 and "fails as `empty` in 9 min" in out.stdout and "notes.txt" in out.stdout


def test_an_empty_files_clock_survives_a_restart(tmp_path):
    """Empty for longer than watch.empty_fail_seconds before this daemon started: it
    fails at once, not empty_fail_seconds after the start."""
    with Daemon(tmp_path, config={"watch": {"empty_fail_seconds": 60}}) as d:
        d.inbox.mkdir(parents=True)
        empty = d.inbox / "empty.m4a"
        empty.write_bytes(b"")
        os.utime(empty, (time.time() - 65, time.time() - 65))
        d.start()
        [job] = d.wait(lambda: [j for j in d.jobs() if j["state"] == "failed"] or None, timeout=20,
                       what="the empty file failed")
        assert (job["source_name"], job["error_kind"]) == ("empty.m4a", "empty")
        assert d.stop() == 0
