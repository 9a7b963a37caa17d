"""`spkd retry`, `spkd cancel` and `spkd remove` from outside: the real `spkd` against a
real daemon (fake engine), as a user on a bad day would use them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e

SPKD = Path(sys.executable).with_name("spkd")


def spkd(d: Daemon, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [str(SPKD)] if SPKD.exists() else [sys.executable, "-m", "daemon"]
    return subprocess.run([*command, "--config", str(d.config_path), *argv], capture_output=True, text=True,
                          env=d.env, stdin=subprocess.DEVNULL, timeout=60)


def job_named(d: Daemon, name: str, *states: str) -> dict | None:
    for job in d.jobs():
        if job["source_name"] == name and (not states or job["state"] in states):
            return job
    return None


def wait_job(d: Daemon, name: str, *states: str, timeout: float = 30) -> dict:
    return d.wait(lambda: job_named(d, name, *states), timeout=timeout, what=f"{name} {'/'.join(states)}")


def outbox_files(d: Daemon, stem: str) -> list[Path]:
    return sorted(p for p in d.outbox.rglob(f"{stem}.*")) if d.outbox.exists() else []


def test_a_sidecar_corrected_in_failed_is_what_the_retry_runs_with(tmp_path: Path) -> None:
    with Daemon(tmp_path, config={"workers": {"count": 1}}) as d:
        d.start()
        (d.inbox / "dialog30.wav.spkd.json").write_text('{"speakerz": 2}')  # the typo
        write_wav(d.inbox / "dialog30.wav", 1.0, seed=3)
        job = wait_job(d, "dialog30.wav", "failed")
        assert job["error_kind"] == "bad_options"
        sidecar = tmp_path / "failed" / "dialog30.wav.spkd.json"

        result = spkd(d, "retry", str(job["id"]))
        assert result.returncode == 1 and "its sidecar has not changed since" in result.stderr, result.stderr
        sidecar.write_text('{"speakers": 2}')  # corrected where the failure left it
        result = spkd(d, "retry", str(job["id"]))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (f'requeued job {job["id"]}: dialog30.wav with options {{"speakers": 2}} '
                                         f"(from {sidecar})")
        assert result.stderr == "", "no log line besides the command's own"
        done = wait_job(d, "dialog30.wav", "done")
        assert json.loads(done["options"]) == {"speakers": 2}
        assert "speakers=2" in (d.outbox / "dialog30.txt").read_text()

        # what is done is refused with the reason, as is what never existed
        result = spkd(d, "retry", str(done["id"]))
        assert result.returncode == 1 and f"job {done['id']} is done; `spkd retry --force" in result.stderr
        result = spkd(d, "retry", "999")
        assert (result.returncode, result.stdout, result.stderr.strip()) == (1, "", "spkd retry: no job 999")
        result = spkd(d, "speakers", "99")
        assert result.returncode == 1 and result.stderr.strip() == "spkd speakers: no job 99"

        # remove: says what goes; without a terminal it needs --yes; the audio stays in failed/
        published = outbox_files(d, "dialog30")
        assert published
        result = spkd(d, "remove", str(done["id"]))
        assert result.returncode == 2 and "pass --yes" in result.stderr and all(p.exists() for p in published)
        assert "dialog30.txt" in result.stdout and "segment row(s)" in result.stdout
        result = spkd(d, "remove", "--yes", str(done["id"]))
        assert result.returncode == 0 and f"removed job {done['id']}" in result.stdout, result.stderr
        assert outbox_files(d, "dialog30") == [] and job_named(d, "dialog30.wav") is None
        assert (tmp_path / "failed" / "dialog30.wav").is_file()


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe decides not_audio at intake")
def test_a_file_that_is_not_audio_keeps_its_reason(tmp_path: Path) -> None:
    with Daemon(tmp_path, config={"workers": {"count": 1}}) as d:
        d.start()
        (d.inbox / "notes.mp3").write_text("minutes of the meeting, typed, not recorded\n" * 20)
        job = wait_job(d, "notes.mp3", "failed")
        assert job["error_kind"] == "not_audio"
        result = spkd(d, "retry", str(job["id"]))
        assert result.returncode == 1 and "the file has not changed since" in result.stderr, result.stderr
        result = spkd(d, "retry", "--force", str(job["id"]))
        assert result.returncode == 1 and "notes.mp3 is still not audio (not_audio:" in result.stderr
        time.sleep(1)
        after = job_named(d, "notes.mp3")
        assert (after["state"], after["error_kind"]) == ("failed", "not_audio"), "never a frame error from a worker"
        assert (tmp_path / "failed" / "notes.mp3").is_file()


def test_cancel_a_queued_job_and_a_running_one(tmp_path: Path) -> None:
    with Daemon(tmp_path, config={"workers": {"count": 1}}, env={"SPKD_FAKE_SLOW_SECONDS": "30"}) as d:
        d.start()
        write_wav(d.inbox / "slow-meeting.wav", 1.0, seed=1)
        running = wait_job(d, "slow-meeting.wav", "running")
        write_wav(d.inbox / "later.wav", 1.0, seed=2)
        queued = wait_job(d, "later.wav", "queued")

        result = spkd(d, "cancel", str(queued["id"]))
        assert result.returncode == 0 and f"cancelled job {queued['id']} (was queued)" in result.stdout
        asked = time.monotonic()
        result = spkd(d, "cancel", str(running["id"]))
        assert result.returncode == 0 and f"cancelled job {running['id']} (was running)" in result.stdout
        d.wait(lambda: "abandoned after" in d.log(), timeout=10, what="the worker abandoning the job")
        d.wait(lambda: any(w["state"] == "ready" and w["current_job_id"] is None for w in d.workers()), timeout=10,
               what="the slot ready again")
        assert time.monotonic() - asked < 8, "stopped within a few seconds, not after its 30 s"

        write_wav(d.inbox / "next.wav", 1.0, seed=4)
        wait_job(d, "next.wav", "done", timeout=20)  # the same slot serves the next job

        for job in (queued, running):
            row = job_named(d, job["source_name"])
            assert (row["state"], row["error_kind"]) == ("cancelled", "cancelled")
            assert "cancelled" in [e["kind"] for e in d.events(job["id"])]
            kept = tmp_path / "failed" / job["source_name"]
            assert kept.is_file()
            assert json.loads(kept.with_name(kept.name + ".error.json").read_text())["error_kind"] == "cancelled"
            assert outbox_files(d, Path(job["source_name"]).stem) == [], "nothing published"
            assert not (tmp_path / "state" / "transcripts" / f"{job['id']}.json").exists()
        assert "claimed" not in [e["kind"] for e in d.events(queued["id"])], "the queued job never started"
        assert d.query("select count(*) as n from segments where job_id in (?, ?)", queued["id"],
                       running["id"])[0]["n"] == 0

        done = job_named(d, "next.wav")
        result = spkd(d, "cancel", str(done["id"]))
        assert result.returncode == 1 and "is done: only a queued or running job can be cancelled" in result.stderr


def test_a_running_job_whose_engine_call_cannot_be_interrupted_costs_a_restart_not_the_slot(tmp_path: Path) -> None:
    with Daemon(tmp_path, config={"workers": {"count": 1}}, env={"SPKD_FAKE_SLOW_SECONDS": "60"}) as d:
        d.start()
        write_wav(d.inbox / "deaf-call.wav", 1.0, seed=5)
        running = wait_job(d, "deaf-call.wav", "running")
        worker_pid = running["pid"]
        assert spkd(d, "cancel", str(running["id"])).returncode == 0
        d.wait(lambda: worker_pid not in d.worker_pids(), timeout=15, what="the worker to give the job up")
        write_wav(d.inbox / "after.wav", 1.0, seed=6)
        wait_job(d, "after.wav", "done", timeout=30)
        assert "cannot be interrupted" in d.log()
        assert job_named(d, "deaf-call.wav")["state"] == "cancelled"
        assert outbox_files(d, "deaf-call") == []
