"""`spkd retry` and the dashboard's Retry (daemon.jobs.retry), on each database backend:
a retry re-reads the sidecar where it lies now and stores those options; `--options`
replaces them; what a retry cannot change (a permanent failure of an unchanged file, an
unchanged bad sidecar) is refused with the reason, by the one rule both use; a done job
runs again only with --force, its result taken back and its source back from archive/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon import files
from daemon.errors import (
    EmptyFileError,
    JobRefusedError,
    NoSuchJobError,
    NotAudioError,
    OptionsError,
    WorkerLostError,
)
from daemon.jobs import outputs, retry, spool
from tests.support.config import make_config
from tests.support.daemon import write_wav
from tests.support.jobs import done_job, failed_job


@pytest.fixture()
def config(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    return make_config(tmp_path, url=url, host="h1")


def test_a_sidecar_corrected_in_failed_is_read_stored_and_named(config, store) -> None:
    job_id, source = failed_job(config, store, "dialog30.wav", OptionsError("dialog30.wav.spkd.json: speakerz: "
                                                                            "unknown key"),
                                sidecar='{"speakerz": 2}')
    sidecar = spool.sidecar_of(source)
    with pytest.raises(JobRefusedError, match="its sidecar has not changed since"):
        retry.retry_job(config, store, job_id)
    assert not retry.offered(config, store.job(job_id)), "the dashboard offers the same as the CLI"

    sidecar.write_text('{"speakerz": 3}', encoding="utf-8")  # changed, still wrong: refused with what is wrong
    with pytest.raises(JobRefusedError, match="speakerz: unknown key"):
        retry.retry_job(config, store, job_id)
    assert store.job(job_id).state == "failed" and source.is_file(), "nothing moved"

    sidecar.write_text('{"speakers": 2, "priority": 7}', encoding="utf-8")
    assert retry.offered(config, store.job(job_id))
    done = retry.retry_job(config, store, job_id)
    assert done.options == {"speakers": 2, "priority": 7} and done.options_from == str(sidecar)
    row = store.job(job_id)
    assert (row.state, row.options, row.priority, row.attempts) == ("queued", {"speakers": 2, "priority": 7}, 7, 0)
    assert row.max_attempts == config.jobs.max_attempts and row.error_kind is None
    spooled = Path(row.spool_path)
    assert spooled.is_file() and spool.sidecar_of(spooled).is_file(), "source and sidecar back in the spool"
    assert not source.exists() and not spool.error_file_of(source).exists()
    [event] = [e for e in store.events(job_id) if e.kind == "retry_requested"]
    # the plain path (printed as `from <path>`), and the options it set
    assert event.detail["options_from"] == str(sidecar) and event.detail["was"] == "failed"
    assert event.detail["options"] == {"speakers": 2, "priority": 7}
    assert done.options_text == f"from {sidecar}"


def test_options_given_replace_the_sidecar_and_make_a_bad_options_failure_retryable(config, store) -> None:
    job_id, source = failed_job(config, store, "a.wav", OptionsError("a.wav.spkd.json: not valid JSON"),
                                sidecar="{oops")
    done = retry.retry_job(config, store, job_id, given={"hotwords": ["FunASR"]})
    assert done.options_from == "--options" and store.job(job_id).options == {"hotwords": ["FunASR"]}


def test_a_permanent_failure_is_refused_until_its_file_changes(config, store) -> None:
    job_id, source = failed_job(config, store, "notes.mp3", NotAudioError("not a readable audio or video file"),
                                content=b"hello, these are notes, not a recording")
    with pytest.raises(JobRefusedError, match="failed not_audio: .*the file has not changed since"):
        retry.retry_job(config, store, job_id)
    assert not retry.offered(config, store.job(job_id))
    os.utime(source, ns=(1, 1))  # touched, same bytes: still the same file
    assert not retry.offered(config, store.job(job_id))

    def still_not_audio(path: Path) -> None:
        raise NotAudioError("not a readable audio or video file: Invalid argument")

    # --force never lets a file that is still not audio reach a worker (whose decoder would
    # give a vaguer reason): it is probed again and refused with the clear one.
    with pytest.raises(JobRefusedError, match=r"still not audio \(not_audio: not a readable"):
        retry.retry_job(config, store, job_id, force=True, probe=still_not_audio)
    assert store.job(job_id).error_kind == "not_audio" and source.is_file()

    write_wav(source, 2.0)  # replaced in failed/ by a real recording
    assert retry.offered(config, store.job(job_id))
    done = retry.retry_job(config, store, job_id, probe=lambda path: type("P", (), {"duration_seconds": 2.0})())
    row = store.job(job_id)
    assert row.state == "queued" and row.audio_seconds == 2.0 and done.options_from == "no sidecar"
    spooled = Path(row.spool_path)
    assert (row.sha256, row.size_bytes) == (files.sha256_file(spooled), spooled.stat().st_size)


def test_an_empty_file_stays_refused_and_force_runs_an_unchanged_file(config, store) -> None:
    job_id, source = failed_job(config, store, "empty.m4a", EmptyFileError("the file stayed empty for 600 s"),
                                content=b"")
    with pytest.raises(JobRefusedError, match="failed empty"):
        retry.retry_job(config, store, job_id)
    assert retry.retry_job(config, store, job_id, force=True).job.state == "queued"


def test_transient_and_cancelled_failures_are_offered_and_retried(config, store) -> None:
    job_id, _ = failed_job(config, store, "crash.wav", WorkerLostError("worker 12 killed (SIGKILL)"))
    assert retry.offered(config, store.job(job_id))
    assert retry.retry_job(config, store, job_id).job.state == "queued"


def test_reasons_for_what_does_not_exist_or_has_not_finished(config, store) -> None:
    with pytest.raises(NoSuchJobError, match="^no job 999$"):
        retry.retry_job(config, store, 999)
    queued = store.enqueue(source_name="q.wav", spool_path=str(config.paths.spool / "t" / "q.wav"), output_stem="q",
                           sha256=None, size_bytes=1)
    with pytest.raises(JobRefusedError, match="is queued: it has not finished"):
        retry.retry_job(config, store, queued)
    job_id, source = failed_job(config, store, "gone.wav", WorkerLostError("lost"))
    source.unlink()
    with pytest.raises(JobRefusedError, match="no longer in failed/"):
        retry.retry_job(config, store, job_id)
    assert not retry.offered(config, store.job(job_id))


def test_a_done_job_runs_again_only_with_force_from_scratch(config, store) -> None:
    job_id = done_job(config, store, "meeting.wav")
    row = store.job(job_id)
    archived = config.paths.archive / row.archive_name
    published = [config.paths.outbox / name for name in row.outputs]
    assert archived.is_file() and all(p.is_file() for p in published) and store.removal_counts(job_id)[0] == 1
    with pytest.raises(JobRefusedError, match="is done; `spkd retry --force"):
        retry.retry_job(config, store, job_id)
    assert not retry.offered(config, row)

    retry.retry_job(config, store, job_id, force=True)
    row = store.job(job_id)
    assert (row.state, row.outputs, row.archive_name) == ("queued", None, None)
    assert Path(row.spool_path).is_file() and not archived.exists(), "the source came back from archive/"
    assert not any(p.exists() for p in published) and not outputs.transcript_path(config, job_id).exists()
    assert store.removal_counts(job_id)[0] == 0
    [event] = [e for e in store.events(job_id) if e.kind == "retry_requested"]
    assert event.detail["forced"] is True and event.detail["was"] == "done"


def test_retry_failed_queues_what_may_change_and_says_why_not_for_the_rest(config, store) -> None:
    lost, _ = failed_job(config, store, "lost.wav", WorkerLostError("lost"))
    text, _ = failed_job(config, store, "text.mp3", NotAudioError("no audio"), content=b"text")
    queued, skipped = retry.retry_failed(config, store)
    assert [r.job.id for r in queued] == [lost]
    assert len(skipped) == 1 and skipped[0].startswith(f"job {text} failed not_audio")
    assert store.job(text).state == "failed"


def test_an_old_error_file_without_the_stat_falls_back_to_the_hash(config, store) -> None:
    job_id, source = failed_job(config, store, "old.mp3", NotAudioError("no audio"), content=b"text")
    error_file = spool.error_file_of(source)
    info = json.loads(error_file.read_text())
    for key in ("size_bytes", "mtime_ns", "sidecar_sha256"):
        info.pop(key)
    error_file.write_text(json.dumps(info))
    assert not retry.offered(config, store.job(job_id)), "same sha256 as the job's"
    source.write_bytes(b"other text")
    assert retry.offered(config, store.job(job_id))


def test_a_bad_options_failure_recorded_without_a_sidecar_digest_is_judged_by_its_sidecar_now(config, store) -> None:
    job_id, source = failed_job(config, store, "older.wav", OptionsError("older.wav.spkd.json: not valid JSON"),
                                sidecar="{")
    error_file = spool.error_file_of(source)
    info = json.loads(error_file.read_text())
    info.pop("sidecar_sha256")
    error_file.write_text(json.dumps(info))
    with pytest.raises(JobRefusedError, match="is not valid: .*not valid JSON"):
        retry.retry_job(config, store, job_id)
    spool.sidecar_of(source).write_text('{"speakers": 2}')
    assert retry.retry_job(config, store, job_id).options == {"speakers": 2}
