"""Nothing lost: fault injection against the real daemon processes (fake engine).

Every test drops real (small) WAV files into the inbox of a daemon started as a
process, breaks something on purpose, and checks from outside that every file
ends exactly once as `done` (or `failed` with a reason), with one set of outputs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import REPO, Daemon, write_wav

pytestmark = pytest.mark.e2e


def running_job(d: Daemon) -> dict:
    return d.wait(lambda: next((j for j in d.jobs() if j["state"] == "running"), None), what="a running job")


def outputs_of(d: Daemon) -> list[str]:
    return sorted(p.relative_to(d.outbox).as_posix() for p in d.outbox.rglob("*.json"))


def assert_history_consistent(d: Daemon) -> None:
    """Each job's events read queued, (claimed, then requeued/retry)*, claimed, done|failed."""
    for job in d.jobs():
        kinds = [e["kind"] for e in d.events(job["id"])]
        assert kinds[0] == "queued", kinds
        body = kinds[1:]
        if job["state"] == "failed" and body == ["failed"]:
            continue
        assert body[-1] == job["state"], (job["id"], kinds)
        steps = body[:-1]
        assert steps and steps[-1] == "claimed", (job["id"], kinds)
        for i, kind in enumerate(steps):
            assert kind == ("claimed" if i % 2 == 0 else kind), (job["id"], kinds)
            if i % 2 == 1:
                assert kind in ("requeued", "retry"), (job["id"], kinds)
        assert job["attempts"] == steps.count("claimed") - sum(
            1 for e in d.events(job["id"]) if e["kind"] == "requeued" and json.loads(e["detail"] or "{}").get(
                "reason", "").startswith("shutdown")), (job["id"], kinds)


def test_worker_killed_mid_job_is_requeued_and_done_once(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "2"}) as d:
        d.start()
        write_wav(d.inbox / "slow-talk.wav")
        job = running_job(d)
        os.kill(job["pid"], signal.SIGKILL)
        [done] = d.wait_finished(1, timeout=60)
        assert done["state"] == "done" and done["attempts"] == 2
        requeued = [json.loads(e["detail"]) for e in d.events(done["id"]) if e["kind"] == "requeued"]
        assert len(requeued) == 1 and "possibly out of memory" in requeued[0]["reason"]
        assert outputs_of(d) == ["slow-talk.json"]
        d.wait((d.root / "archive" / "slow-talk.wav").exists, what="archived source")
        assert "possibly out of memory" in d.log()
        assert d.stop() == 0
        assert_history_consistent(d)


def test_supervisor_killed_mid_job_then_restarted_finishes_once(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "2"}) as d:
        d.start()
        for i in range(3):
            write_wav(d.inbox / f"slow-{i}.wav", seed=i)
        running_job(d)
        os.kill(d.proc.pid, signal.SIGKILL)  # the supervisor only: its workers are orphaned
        d.proc.wait(timeout=10)
        time.sleep(0.5)
        d.start()
        jobs = d.wait_finished(3, timeout=90)
        assert [j["state"] for j in jobs] == ["done"] * 3
        assert outputs_of(d) == ["slow-0.json", "slow-1.json", "slow-2.json"]
        assert d.stop() == 0
        assert_history_consistent(d)


def test_power_loss_mid_job_then_restart(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "2"}) as d:
        d.start()
        for i in range(2):
            write_wav(d.inbox / f"slow-{i}.wav", seed=i)
        running_job(d)
        d.kill_group()  # supervisor and workers at once
        d.start()
        jobs = d.wait_finished(2, timeout=90)
        assert [j["state"] for j in jobs] == ["done"] * 2
        recovered = [e for e in d.events() if e["kind"] == "requeued"]
        assert recovered and all("recovered at start" in json.loads(e["detail"])["reason"] for e in recovered)
        assert outputs_of(d) == ["slow-0.json", "slow-1.json"]
        assert d.stop() == 0


def test_spool_file_without_a_row_is_recovered(tmp_path):
    with Daemon(tmp_path) as d:
        # As if the supervisor died between moving the file and inserting the row.
        write_wav(tmp_path / "spool" / "20260101T000000-deadbeef" / "team" / "lost.wav")
        d.start()
        [job] = d.wait_finished(1)
        assert job["state"] == "done" and job["source_name"] == "team/lost.wav"
        assert outputs_of(d) == ["team/lost.json"]
        assert d.stop() == 0


def test_hung_worker_is_killed_and_its_job_retried(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        write_wav(d.inbox / "hang.wav")
        [job] = d.wait_finished(1, timeout=60)
        assert job["state"] == "done" and job["attempts"] == 2
        reasons = [json.loads(e["detail"])["reason"] for e in d.events(job["id"]) if e["kind"] == "requeued"]
        assert len(reasons) == 1 and "hung" in reasons[0]
        assert d.stop() == 0


def test_job_past_its_timeout_is_killed_and_fails_when_attempts_are_spent(tmp_path):
    config = {"jobs": {"timeout_base_seconds": 1, "timeout_factor": 0, "max_attempts": 2}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_SLOW_SECONDS": "30"}) as d:
        d.start()
        write_wav(d.inbox / "slow.wav")
        [job] = d.wait_finished(1, timeout=60)
        assert job["state"] == "failed" and job["attempts"] == 2 and "timed out" in job["error_message"]
        error_file = tmp_path / "failed" / "slow.wav.error.json"
        d.wait(error_file.exists, what=str(error_file))
        error = json.loads(error_file.read_text())
        assert error["job_id"] == job["id"] and error["attempts"] == 2 and "timed out" in error["error_message"]
        assert d.stop() == 0


def test_poison_file_that_kills_every_worker_fails_instead_of_looping(tmp_path):
    with Daemon(tmp_path, config={"jobs": {"max_attempts": 2}}) as d:
        d.start()
        write_wav(d.inbox / "crash.wav")
        write_wav(d.inbox / "fine.wav", seed=1)
        jobs = {j["source_name"]: j for j in d.wait_finished(2, timeout=60)}
        assert jobs["crash.wav"]["state"] == "failed" and jobs["crash.wav"]["error_kind"] == "worker_lost"
        assert jobs["fine.wav"]["state"] == "done"
        d.wait((tmp_path / "failed" / "crash.wav.error.json").exists, what="crash.wav.error.json")
        assert (tmp_path / "failed" / "crash.wav").exists()
        assert d.stop() == 0


def test_transient_errors_retry_and_permanent_errors_fail_at_once(tmp_path):
    with Daemon(tmp_path, config={"jobs": {"max_attempts": 3}}) as d:
        d.start()
        write_wav(d.inbox / "boom.wav")
        write_wav(d.inbox / "bad.wav", seed=1)
        jobs = {j["source_name"]: j for j in d.wait_finished(2, timeout=60)}
        assert jobs["boom.wav"]["state"] == "failed" and jobs["boom.wav"]["attempts"] == 3
        assert [e["kind"] for e in d.events(jobs["boom.wav"]["id"])].count("retry") == 2
        assert jobs["bad.wav"]["state"] == "failed" and jobs["bad.wav"]["attempts"] == 1
        assert jobs["bad.wav"]["error_kind"] == "bad_audio"
        for name in ("boom.wav", "bad.wav"):
            d.wait((tmp_path / "failed" / f"{name}.error.json").exists, what=f"{name}.error.json")
            assert (tmp_path / "failed" / name).exists()
        assert d.stop() == 0


def test_slot_that_cannot_boot_ends_failed_while_others_serve(tmp_path):
    config = {"workers": {"count": 2, "max_boot_failures": 3}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_BOOT_FAIL_SLOTS": "1"}) as d:
        d.start(ready_slots=1)
        d.wait(lambda: any(w["slot"] == 1 and w["state"] == "failed" for w in d.workers()), timeout=60,
               what="slot 1 failed")
        [slot1] = [w for w in d.workers() if w["slot"] == 1]
        assert "fake boot failure of slot 1" in slot1["last_error"]
        write_wav(d.inbox / "a.wav")
        [job] = d.wait_finished(1)
        assert job["state"] == "done" and job["slot"] == 0
        assert d.log().count("slot 1 failed to boot on cpu (") == 3  # the supervisor's lines
        assert d.proc.poll() is None
        assert d.stop() == 0


def test_all_slots_failing_to_boot_stops_the_daemon(tmp_path):
    config = {"workers": {"count": 1, "max_boot_failures": 2, "fallback": False}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_BOOT_FAIL": "all"}) as d:
        d.start(wait_ready=False)
        assert d.proc.wait(timeout=60) == 3
        assert "no worker slot could boot" in d.log()


def test_sigterm_lets_running_jobs_finish_and_exits_zero(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "2"}, config={"workers": {"count": 1}}) as d:
        d.start()
        for i in range(3):
            write_wav(d.inbox / f"slow-{i}.wav", seed=i)
        d.wait(lambda: len(d.jobs()) == 3, what="3 jobs")
        running = running_job(d)
        assert d.stop(signal.SIGTERM) == 0
        jobs = {j["id"]: j for j in d.jobs()}
        assert jobs[running["id"]]["state"] == "done"  # finished within the grace period
        assert sorted(j["state"] for j in jobs.values()).count("running") == 0
        d.start()
        assert [j["state"] for j in d.wait_finished(3, timeout=60)] == ["done"] * 3
        assert d.stop() == 0
        assert_history_consistent(d)


def test_sigterm_past_the_grace_requeues_without_spending_an_attempt(tmp_path):
    config = {"workers": {"count": 1}, "daemon": {"shutdown_grace_seconds": 0.5}, "jobs": {"max_attempts": 1}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_SLOW_SECONDS": "5"}) as d:
        d.start()
        write_wav(d.inbox / "slow.wav")
        running_job(d)
        assert d.stop(signal.SIGTERM) == 0
        [job] = d.jobs()
        assert job["state"] == "queued" and job["attempts"] == 0
        d.env["SPKD_FAKE_SLOW_SECONDS"] = "0.1"
        d.start()
        [job] = d.wait_finished(1)
        assert job["state"] == "done"
        assert d.stop() == 0


def test_second_sigint_stops_at_once_losing_nothing(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "30"}, config={"workers": {"count": 1}}) as d:
        d.start()
        write_wav(d.inbox / "slow.wav")
        running_job(d)
        started = time.monotonic()
        d.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert d.stop(signal.SIGINT, timeout=15) == 0
        assert time.monotonic() - started < 15
        [job] = d.jobs()
        assert job["state"] == "queued"
        assert Path(job["spool_path"]).exists()


def test_sighup_resizes_the_pool_without_losing_a_job(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "1"}, config={"workers": {"count": 1}}) as d:
        d.start()
        for i in range(4):
            write_wav(d.inbox / f"slow-{i}.wav", seed=i)
        running_job(d)
        config = json.loads(d.config_path.read_text())
        config["workers"]["count"] = 2
        d.config_path.write_text(json.dumps(config))
        d.proc.send_signal(signal.SIGHUP)
        jobs = d.wait_finished(4, timeout=60)
        assert [j["state"] for j in jobs] == ["done"] * 4
        d.wait(lambda: len([w for w in d.workers() if w["state"] in ("ready", "busy")]) == 2, what="2 slots")
        assert all(j["attempts"] == 1 for j in jobs)
        assert d.stop() == 0


def test_recycling_after_max_jobs(tmp_path):
    with Daemon(tmp_path, config={"workers": {"count": 1, "max_jobs": 2}}) as d:
        d.start()
        for i in range(5):
            write_wav(d.inbox / f"a{i}.wav", seed=i)
        jobs = d.wait_finished(5)
        assert [j["state"] for j in jobs] == ["done"] * 5
        assert len({j["pid"] for j in jobs}) >= 3  # a fresh worker every 2 jobs
        assert d.log().count("recycling after 2 jobs") >= 2
        assert d.stop() == 0


def test_200_jobs_with_random_worker_kills_all_end_done_once(tmp_path):
    n = 200
    config = {"workers": {"count": 2}, "jobs": {"max_attempts": 20}, "watch": {"settle_seconds": 0.2}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_SECONDS": "0.03"}) as d:
        d.start()
        staging = tmp_path / "staging"
        for i in range(n):
            write_wav(staging / f"f{i:03}.wav", seconds=0.6, seed=i)
        for path in sorted(staging.iterdir()):
            os.rename(path, d.inbox / path.name)  # an atomic drop, like a finished download
        rng = random.Random(7)
        kills = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            jobs = d.jobs()
            if len(jobs) == n and all(j["state"] == "done" for j in jobs):
                break
            running = [j for j in jobs if j["state"] == "running"]
            if running and kills < 15 and rng.random() < 0.5:
                try:
                    os.kill(rng.choice(running)["pid"], signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            time.sleep(rng.uniform(0.2, 0.8))
        jobs = d.jobs()
        assert len(jobs) == n
        assert [j["state"] for j in jobs] == ["done"] * n, d.log()[-3000:]
        assert kills >= 5
        assert outputs_of(d) == [f"f{i:03}.json" for i in range(n)]
        d.wait(lambda: len(list((tmp_path / "archive").iterdir())) == n, what=f"{n} archived sources")
        assert not list(d.inbox.iterdir())
        assert d.stop() == 0
        assert_history_consistent(d)


def test_disk_guard_pauses_claiming_until_space_returns(tmp_path):
    config = {"daemon": {"min_free_mb": 10**9, "disk_check_seconds": 0.5}, "workers": {"count": 1}}
    with Daemon(tmp_path, config=config) as d:
        d.start()
        write_wav(d.inbox / "a.wav")
        d.wait(lambda: [j["state"] for j in d.jobs()] == ["queued"], what="a queued job")
        time.sleep(2)  # several worker polls: nothing is claimed while the disk is "full"
        assert [j["state"] for j in d.jobs()] == ["queued"]
        assert "claiming paused" in d.log()
        status = subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "status", "--json"],
                                capture_output=True, text=True, env=d.env, cwd=REPO)
        assert "MB free" in (json.loads(status.stdout)["paused"] or "")
        changed = json.loads(d.config_path.read_text())
        changed["daemon"]["min_free_mb"] = 0
        d.config_path.write_text(json.dumps(changed))
        d.proc.send_signal(signal.SIGHUP)
        [job] = d.wait_finished(1, timeout=60)
        assert job["state"] == "done" and "claiming resumed" in d.log()
        assert d.stop() == 0
