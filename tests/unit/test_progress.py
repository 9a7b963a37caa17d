"""A running job's progress: the stage arithmetic (daemon.progress), what the store keeps
of it (and clears when the job leaves `running`), and the worker's heartbeat thread,
which writes it at most every couple of seconds. On a real SQLite database and a real
PostgreSQL server (the `store` fixture of tests/conftest.py)."""

from __future__ import annotations

import time

import pytest

from daemon.progress import STAGE_SHARES, STAGES, Progress, eta_seconds, overall_fraction
from daemon.jobs.worker import PROGRESS_SECONDS, Heartbeat


def enqueue(store, name="a.wav", audio_seconds=60.0):
    return store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=name.rsplit(".", 1)[0],
                         sha256="0" * 64, size_bytes=10, audio_seconds=audio_seconds)


def test_stages_add_up_to_the_whole_job() -> None:
    assert set(STAGE_SHARES) == set(STAGES) and sum(STAGE_SHARES.values()) == pytest.approx(1.0)
    fractions = [overall_fraction(stage, f) for stage in STAGES for f in (None, 0.5, 1.0)]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert overall_fraction("asr", 0.5) == pytest.approx(0.03 + 0.07 + 0.35)
    with pytest.raises(ValueError, match="unknown stage"):
        overall_fraction("thinking", 0.1)


def test_time_left_from_the_slots_recent_speed_else_the_pace_so_far() -> None:
    # 100 s of audio at RTF 0.2: a 20-s job; a quarter done leaves 15 s
    assert eta_seconds(fraction=0.25, elapsed_seconds=5, audio_seconds=100, recent_rtf=0.2) == 15.0
    # slower than the slot's recent jobs: the pace so far wins (20 s for a quarter: 80 s in all)
    assert eta_seconds(fraction=0.25, elapsed_seconds=20, audio_seconds=100, recent_rtf=0.2) == 60.0
    # no recent RTF (the slot's first job): extrapolate once a tenth is done, not before
    assert eta_seconds(fraction=0.5, elapsed_seconds=10, audio_seconds=100, recent_rtf=None) == 10.0
    assert eta_seconds(fraction=0.05, elapsed_seconds=1, audio_seconds=None, recent_rtf=None) is None


def test_the_store_keeps_progress_while_running_and_clears_it_after(store) -> None:
    job_id = enqueue(store)
    job = store.claim(slot=0, pid=100, device="cpu", lease_seconds=30)
    assert job is not None and job.id == job_id
    assert store.heartbeat(job_id, pid=100, lease_seconds=30, progress=Progress("asr", 0.45, 12.0))
    row = store.job(job_id)
    assert (row.stage, row.progress, row.eta_seconds) == ("asr", 0.45, 12.0)
    assert row.progress_at is not None
    assert not store.heartbeat(job_id, pid=999, lease_seconds=30, progress=Progress("vad", 0.1, None)), \
        "only the holder reports progress"
    assert store.complete(job_id, pid=100, audio_seconds=60, processing_seconds=6, speakers=2, outputs=[],
                          device="cpu")
    row = store.job(job_id)
    assert (row.stage, row.progress, row.eta_seconds, row.progress_at) == (None, None, None, None)

    second = enqueue(store, "b.wav")
    store.claim(slot=0, pid=100, device="cpu", lease_seconds=30)
    store.heartbeat(second, pid=100, lease_seconds=30, progress=Progress("speakers", 0.9, 1.0))
    store.release(pid=100, reason="worker died")
    row = store.job(second)
    assert row.state == "queued" and row.stage is None and row.progress is None


def test_recent_rtf_is_the_median_of_the_slots_last_transcriptions(store) -> None:
    assert store.recent_rtf(slot=0) is None
    for name, seconds in (("a.wav", 6.0), ("b.wav", 12.0), ("c.wav", 30.0)):
        job_id = enqueue(store, name)
        store.claim(slot=0, pid=100, device="cpu", lease_seconds=30)
        store.complete(job_id, pid=100, audio_seconds=60, processing_seconds=seconds, speakers=1, outputs=[],
                       device="cpu")
    assert store.recent_rtf(slot=0) == pytest.approx(0.2)  # of 0.1, 0.2, 0.5
    assert store.recent_rtf(slot=1) is None, "another slot's speed is not this one's"


def test_the_heartbeat_writes_the_latest_stage_at_most_every_couple_of_seconds(store) -> None:
    enqueue(store, audio_seconds=100.0)
    job = store.claim(slot=0, pid=100, device="cpu", lease_seconds=30)
    writes: list[Progress | None] = []
    original = store.heartbeat

    def counting(job_id, **kw):
        writes.append(kw.get("progress"))
        return original(job_id, **kw)

    store.heartbeat = counting  # type: ignore[method-assign]
    with Heartbeat(store, job, pid=100, lease_seconds=30, every_seconds=60, recent_rtf=0.2) as beat:
        for step in range(30):  # the engine reports far more often than the database hears
            beat.report("asr", step / 30)
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while not writes and time.monotonic() < deadline:
            time.sleep(0.05)
    assert 1 <= len(writes) <= 3 / PROGRESS_SECONDS + 1, writes
    row = store.job(job.id)
    assert row.stage == "asr" and 0.1 < row.progress < 0.8
    assert row.eta_seconds is not None and 0 < row.eta_seconds < 20  # a 20-s job, under way


def test_spkd_jobs_and_status_show_a_running_jobs_progress(store, tmp_path, capsys) -> None:
    import json

    from daemon.cli.main import main, progress_text

    config = tmp_path / "spkd.json"
    config.write_text(json.dumps({"paths": {"state": str(tmp_path / "state")},
                                  "database": {"url": store.url}}))
    job_id = enqueue(store)
    store.claim(slot=0, pid=100, device="cpu", lease_seconds=30)
    store.heartbeat(job_id, pid=100, lease_seconds=30, progress=Progress("asr", 0.456, 12.3))
    assert progress_text(store.job(job_id)) == "asr 46%, ~12 s left"
    assert main(["--config", str(config), "jobs"]) == 0
    assert "asr 46%, ~12 s left" in capsys.readouterr().out
    main(["--config", str(config), "status"])
    assert f"running job {job_id}: a.wav on cpu: asr 46%, ~12 s left" in capsys.readouterr().out
    main(["--config", str(config), "status", "--json"])
    running = json.loads(capsys.readouterr().out)["running_jobs"]
    assert [(r["id"], r["stage"], r["progress"]) for r in running] == [(job_id, "asr", 0.456)]
