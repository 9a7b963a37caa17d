"""`spkd retry`: failed jobs go back to the queue and their sources come back from
failed/ into the spool, where their rows say they are (daemon.jobs.spool.requeue_failed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.store import db
from daemon.jobs import spool
from daemon.cli.main import main
from daemon.config import from_dict
from daemon.errors import ExitCode
from daemon.store import Store


@pytest.fixture()
def setup(tmp_path: Path):
    raw = {"paths": {name: name for name in ("inbox", "outbox", "archive", "failed", "spool", "state")}}
    (tmp_path / "spkd.json").write_text(json.dumps(raw))
    config = from_dict(raw, base_dir=tmp_path, source=tmp_path / "spkd.json", env={})
    db.migrate(config.database_url)
    store = Store(config.database_url, host="h1")
    yield config, store
    store.close()


def failed_job(config, store: Store, name: str) -> tuple[int, Path]:
    """A job that failed for good, its source in failed/ with its .error.json (as a worker leaves it)."""
    source = spool.new_slot(config.paths.spool) / name
    source.parent.mkdir(parents=True)
    source.write_bytes(b"RIFF" + name.encode())
    job_id = store.enqueue(source_name=name, spool_path=str(source), output_stem=Path(name).stem, sha256=None,
                           size_bytes=8, max_attempts=1)
    job = store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    outcome = store.fail(job.id, pid=1, kind="bad_audio", message="undecodable", permanent=True,
                         retry_backoff_seconds=0)
    spool.retire_failed(config, outcome.job)
    assert not source.exists() and (config.paths.failed / name).is_file()
    return job_id, source


def test_requeued_sources_come_back_from_failed(setup) -> None:
    config, store = setup
    job_id, source = failed_job(config, store, "a.wav")
    assert spool.requeue_failed(config, store, job_ids=[job_id]) == [job_id]
    assert source.is_file() and source.read_bytes() == b"RIFFa.wav"
    assert not (config.paths.failed / "a.wav").exists() and not (config.paths.failed / "a.wav.error.json").exists()
    row = store.job(job_id)
    assert (row.state, row.attempts) == ("queued", 0)


def test_a_source_gone_from_failed_is_recorded(setup) -> None:
    config, store = setup
    job_id, _ = failed_job(config, store, "b.wav")
    (config.paths.failed / "b.wav").unlink()  # the user deleted it meanwhile
    assert spool.requeue_failed(config, store, all_failed=True) == [job_id]
    [event] = [e for e in store.events(job_id) if e.kind == "retry_missing_source"]
    assert event.detail["path"] == str(config.paths.failed / "b.wav")


def test_spkd_retry(setup, capsys: pytest.CaptureFixture[str]) -> None:
    config, store = setup
    first, _ = failed_job(config, store, "c.wav")
    second, _ = failed_job(config, store, "d.wav")
    assert main(["--config", str(config.source), "retry", "--failed"]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"requeued 2 job(s): {first}, {second}"
    assert main(["--config", str(config.source), "retry"]) == ExitCode.ERROR  # neither ids nor --failed


@pytest.mark.parametrize("name", ["same.wav", "L" * 247 + ".wav"])
def test_each_job_gets_its_own_source_back_when_failed_holds_several_of_that_name(setup, name) -> None:
    """Two jobs of one name: the second's source lies in failed/ as `same (2).wav`; a name
    near the limit lies there shortened. Each retry finds its own file by its .error.json."""
    config, store = setup
    first, first_source = failed_job(config, store, name) if name == "same.wav" else (None, None)
    source = spool.new_slot(config.paths.spool) / name
    source.parent.mkdir(parents=True)
    source.write_bytes(b"RIFF second")
    second = store.enqueue(source_name=name, spool_path=str(source), output_stem="x", sha256=None, size_bytes=11,
                           max_attempts=1)
    job = store.claim(slot=0, pid=1, device="cpu", lease_seconds=60)
    outcome = store.fail(job.id, pid=1, kind="bad_audio", message="undecodable", permanent=True,
                         retry_backoff_seconds=0)
    retired = spool.retire_failed(config, outcome.job)
    assert retired.name != name
    assert spool.requeue_failed(config, store, job_ids=[second]) == [second]
    assert source.read_bytes() == b"RIFF second" and not retired.exists()
    assert not [e for e in store.events(second) if e.kind == "retry_missing_source"]
    if first is not None:
        assert (config.paths.failed / name).read_bytes() == b"RIFFsame.wav"  # the other job's file stays
