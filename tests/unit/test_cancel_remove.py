"""`spkd cancel` and `spkd remove` (daemon.jobs.cancel, daemon.jobs.remove) on each
database backend, the worker's heartbeat seeing a cancel, and the commands' reasons
and exit codes (`spkd retry 999`, `spkd speakers 99`, `spkd remove` without a terminal),
and that they print only their own messages, never the daemon's log lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.errors import ExitCode, JobCancelledError, JobRefusedError, NoSuchJobError, WorkerLostError
from daemon.jobs import cancel, outputs, remove, spool
from daemon.jobs.worker import Heartbeat
from tests.support.config import make_config, write_config
from tests.support.jobs import done_job, failed_job, queued_job


@pytest.fixture()
def config(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    return make_config(tmp_path, url=url, host="h1")


def test_a_queued_job_cancelled_is_never_claimed_and_its_file_goes_to_failed(config, store) -> None:
    job_id = queued_job(config, store, "later.wav")
    spooled = Path(store.job(job_id).spool_path)
    was = cancel.cancel_job(config, store, job_id)
    assert was.state == "queued"
    row = store.job(job_id)
    assert (row.state, row.error_kind) == ("cancelled", "cancelled") and row.finished_at is not None
    assert store.claim(slot=0, pid=1, device="cpu", lease_seconds=60) is None
    assert not spooled.exists() and (config.paths.failed / "later.wav").is_file()
    reason = json.loads(spool.error_file_of(config.paths.failed / "later.wav").read_text())
    assert (reason["job_id"], reason["error_kind"]) == (job_id, "cancelled")
    [event] = [e for e in store.events(job_id) if e.kind == "cancelled"]
    assert event.detail["was"] == "queued"
    # and it can be run again: a cancel is no failure of the file
    assert store.job(job_id).state == "cancelled"
    from daemon.jobs import retry

    assert retry.offered(config, store.job(job_id))
    assert retry.retry_job(config, store, job_id).job.state == "queued" and spooled.is_file()


def test_a_running_job_cancelled_loses_its_worker_hold(config, store) -> None:
    job_id = queued_job(config, store, "now.wav")
    store.claim(slot=0, pid=42, device="cpu", lease_seconds=60)
    assert cancel.cancel_job(config, store, job_id).state == "running"
    assert store.job_state(job_id) == "cancelled" and not store.still_held(job_id, pid=42)
    assert not store.heartbeat(job_id, pid=42, lease_seconds=60)
    assert not store.complete(job_id, pid=42, audio_seconds=1, processing_seconds=1, speakers=1, outputs=[],
                              device="cpu")
    assert store.fail(job_id, pid=42, kind="error", message="x", permanent=False, retry_backoff_seconds=0) is None
    assert store.release(pid=42, reason="worker exited") == [], "a cancelled job is not taken back"
    [event] = [e for e in store.events(job_id) if e.kind == "cancelled"]
    assert (event.detail["was"], event.detail["pid"]) == ("running", 42)


def test_a_finished_job_cannot_be_cancelled(config, store) -> None:
    job_id = done_job(config, store, "done.wav")
    with pytest.raises(JobRefusedError, match=f"job {job_id} is done: only a queued or running job"):
        cancel.cancel_job(config, store, job_id)
    with pytest.raises(NoSuchJobError, match="^no job 77$"):
        cancel.cancel_job(config, store, 77)


def test_the_heartbeat_sees_the_cancel_stops_the_engine_at_its_next_report_or_gives_up_on_it(config, store) -> None:
    job_id = queued_job(config, store, "long.wav")
    job = store.claim(slot=0, pid=7, device="cpu", lease_seconds=60)
    abandoned = threading.Event()
    beat = Heartbeat(store, job, pid=7, lease_seconds=60, every_seconds=0.1, grace_seconds=0.5,
                     on_abandon=abandoned.set)
    with beat:
        beat.report("asr", 0.1)
        cancel.cancel_job(config, store, job_id)
        assert beat.cancelled.wait(5), "seen within a tick"
        with pytest.raises(JobCancelledError):
            beat.report("asr", 0.2)  # where an engine that reports progress stops
        # an engine call that never reports again: the worker is told to give it up
        assert abandoned.wait(5)

    second = queued_job(config, store, "short.wav")
    job = store.claim(slot=0, pid=8, device="cpu", lease_seconds=60)
    abandoned.clear()
    with Heartbeat(store, job, pid=8, lease_seconds=60, every_seconds=0.1, grace_seconds=1.0,
                   on_abandon=abandoned.set) as beat:
        cancel.cancel_job(config, store, second)
        assert beat.cancelled.wait(5)
    time.sleep(1.2)
    assert not abandoned.is_set(), "a worker that left the job in time is not given up"


def test_remove_a_done_job_deletes_its_result_and_rows_and_keeps_its_audio_in_failed(config, store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    row = store.job(job_id)
    archived = config.paths.archive / row.archive_name
    published = [config.paths.outbox / name for name in row.outputs]
    [plan], refused = remove.plan(config, store, [job_id])
    assert refused == [] and plan.audio in (archived, archived.resolve())
    assert set(plan.files) >= {p.resolve() for p in published} and plan.segments == 1 and plan.events >= 3
    assert remove.remove(config, store, [plan]) == [job_id]
    assert store.job(job_id) is None and store.events(job_id) == [] and store.removal_counts(job_id) == (0, 0)
    assert not any(p.exists() for p in published) and not outputs.transcript_path(config, job_id).exists()
    kept = config.paths.failed / "meeting.wav"
    assert kept.is_file() and not archived.exists()
    assert json.loads(spool.error_file_of(kept).read_text())["job_id"] == job_id


def test_remove_keeps_a_failed_jobs_audio_where_it_is_and_refuses_what_has_not_finished(config, store) -> None:
    job_id, source = failed_job(config, store, "bad.wav", WorkerLostError("lost"))
    queued = queued_job(config, store, "waiting.wav")
    removals, refused = remove.plan(config, store, [job_id, queued, 404])
    assert [r.job.id for r in removals] == [job_id]
    assert refused == [f"job {queued} is queued: only a finished job can be removed (`spkd cancel {queued}` first)",
                       "no job 404"]
    assert remove.remove(config, store, removals) == [job_id]
    assert source.is_file() and store.job(queued).state == "queued"


def test_remove_refuses_a_job_whose_result_a_duplicate_reused_unless_both_go(config, store) -> None:
    original = done_job(config, store, "a.wav")
    twin = store.job(original)
    duplicate = store.add_reused(source_name="b.wav", spool_path="/nowhere/b.wav", output_stem="b",
                                 sha256=twin.sha256, size_bytes=1, options={}, dedup_key=None, twin=twin, outputs=[],
                                 audio_seconds=1.0, speakers=1)
    _, refused = remove.plan(config, store, [original])
    assert refused == [f"job {original}: its transcript was reused by job(s) {duplicate}; remove them with it "
                       f"(`spkd remove {original} {duplicate}`)"]
    removals, refused = remove.plan(config, store, [original, duplicate])
    assert refused == [] and sorted(remove.remove(config, store, removals)) == [original, duplicate]


# --- the commands' words and exit codes (in this process) ------------------------------------

@pytest.fixture()
def cli(tmp_path: Path, url: str, config):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, url=url, host="h1")
    return lambda *argv: main(["--config", str(path), *argv])


def test_retry_cancel_and_speakers_say_why_nothing_happened(cli, config, store, capsys) -> None:
    done = done_job(config, store, "done.wav")
    assert cli("retry", "999") == ExitCode.FAILED
    assert capsys.readouterr().err.strip() == "spkd retry: no job 999"
    assert cli("retry", str(done)) == ExitCode.FAILED
    assert f"job {done} is done; `spkd retry --force {done}` runs it again" in capsys.readouterr().err
    assert cli("cancel", str(done), "998") == ExitCode.FAILED
    err = capsys.readouterr().err
    assert f"job {done} is done: only a queued or running job can be cancelled" in err and "no job 998" in err
    assert cli("speakers", "99") == ExitCode.FAILED
    assert capsys.readouterr().err.strip() == "spkd speakers: no job 99"  # named like retry's and cancel's
    assert cli("retry", "--options", '{"speakerz": 1}', str(done)) == ExitCode.ERROR
    assert "--options: speakerz: unknown key" in capsys.readouterr().err
    assert cli("retry") == ExitCode.ERROR


def test_retry_says_which_options_it_used(cli, config, store, capsys) -> None:
    from daemon.errors import OptionsError

    job_id, source = failed_job(config, store, "x.wav", OptionsError("x.wav.spkd.json: not valid JSON"),
                                sidecar="{")
    spool.sidecar_of(source).write_text('{"speakers": 3}')
    assert cli("retry", str(job_id)) == ExitCode.OK
    assert capsys.readouterr().out.strip() == (f'requeued job {job_id}: x.wav with options {{"speakers": 3}} '
                                               f"(from {spool.sidecar_of(source)})")
    lost, _ = failed_job(config, store, "y.wav", WorkerLostError("lost"))
    assert cli("retry", "--failed") == ExitCode.OK
    assert capsys.readouterr().out.splitlines()[-1] == f"requeued 1 job(s): {lost}"


def test_remove_shows_what_goes_and_without_a_terminal_needs_yes(cli, config, store, capsys, monkeypatch) -> None:
    import io

    job_id = done_job(config, store, "talk.wav")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli("remove", str(job_id)) == ExitCode.ERROR
    captured = capsys.readouterr()
    assert f"job {job_id} (done): talk.wav" in captured.out and "talk.txt" in captured.out
    assert "nothing removed: confirm on a terminal, or pass --yes" in captured.err
    assert store.job(job_id) is not None
    assert cli("remove", "--yes", str(job_id)) == ExitCode.OK
    assert f"removed job {job_id}" in capsys.readouterr().out and store.job(job_id) is None


# --- the commands' own messages, and nothing of the log (a process of its own) ----------------

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.backends("sqlite")
def test_commands_print_their_own_messages_and_not_the_daemon_s_log_lines(tmp_path, url, config, store) -> None:
    """`spkd retry` printed, besides its line, loguru's `2026-12-07 10:54:08.879 | INFO |
    daemon.jobs.retry:retry_job:243 - job 3 requeued …`: in a process of its own, where
    loguru's default sink is on."""
    path = write_config(tmp_path, url=url, host="h1")

    def spkd(*argv: str) -> subprocess.CompletedProcess[str]:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "daemon", "--config", str(path), *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert " | " not in done.stderr and "INFO" not in done.stderr, done.stderr
        return done

    lost, _ = failed_job(config, store, "lost.wav", WorkerLostError("lost"))
    assert spkd("retry", str(lost)).stderr == ""
    assert spkd("cancel", str(lost)).stderr == ""
    done = done_job(config, store, "talk.wav")
    renamed = spkd("speakers", str(done), "Speaker1=Alice")
    assert renamed.stderr.splitlines() == [f"job {done}: Speaker1 -> Alice; re-rendered job(s) {done}"]
    assert spkd("voices", "rematch").stderr == ""
    assert spkd("remove", "--yes", str(done)).stderr == ""
    assert spkd("db", "upgrade").stderr == ""


def test_a_warning_in_a_command_is_one_line_in_the_cli_s_style(tmp_path, capsys, monkeypatch) -> None:
    from loguru import logger

    from daemon.cli import main as cli_main

    def upgrade_that_logs(args):  # type: ignore[no-untyped-def]
        logger.info("job 3 requeued: the daemon's log")
        logger.warning("something to know")
        return ExitCode.OK

    monkeypatch.setattr(cli_main, "cmd_db_upgrade", upgrade_that_logs)
    assert cli_main.main(["db", "upgrade"]) == ExitCode.OK
    assert capsys.readouterr().err == "spkd db upgrade: warning: something to know\n"
    assert cli_main.command_name(cli_main.build_parser().parse_args(["voices", "rematch"])) == "spkd voices rematch"
