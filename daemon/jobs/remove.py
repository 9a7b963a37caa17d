"""`spkd remove`: a finished job's outputs and rows deleted, its audio kept.

`plan` says what will go for each job (its outbox files and stored transcript, its
segment and event rows, the job row) and where its audio will lie, or why a job
cannot be removed; `remove` does it. The audio is never deleted: a failed or cancelled
job's stays in failed/, a done job's archived source moves there (daemon.jobs.spool).

Order, so that a crash between two steps leaves nothing that cannot be finished by
removing again: the audio to failed/, then the result's files and rows
(daemon.jobs.results.withdraw), then the job's rows in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from loguru import logger

from daemon.errors import JobRefusedError, NoSuchJobError
from daemon.jobs import results, spool

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["REMOVABLE_STATES", "Removal", "plan", "remove"]

REMOVABLE_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Removal:
    """What removing one job deletes, and where its audio will lie."""

    job: Job
    files: tuple[Path, ...]  # its outbox files and stored transcript
    segments: int  # segment rows
    events: int  # event rows
    audio: Path | None  # where its audio lies now
    audio_moves: bool  # it moves into failed/ (a done job's archived source)


def plan(config: Config, store: Store, job_ids: Sequence[int]) -> tuple[list[Removal], list[str]]:
    """What removing `job_ids` would do, and, for those that cannot be removed, why
    (no such job, not finished, its result reused by a job not removed with it)."""
    wanted = set(job_ids)
    removals: list[Removal] = []
    refused: list[str] = []
    for job_id in dict.fromkeys(job_ids):
        try:
            removals.append(_plan_one(config, store, job_id, wanted))
        except JobRefusedError as exc:
            refused.append(exc.message)
    return removals, refused


def _plan_one(config: Config, store: Store, job_id: int, wanted: set[int]) -> Removal:
    job = store.job(job_id)
    if job is None:
        raise NoSuchJobError(f"no job {job_id}")
    if job.state not in REMOVABLE_STATES:
        raise JobRefusedError(f"job {job_id} is {job.state}: only a finished job can be removed "
                              f"(`spkd cancel {job_id}` first)")
    reusers = [i for i in store.duplicates_of(job_id) if i not in wanted]
    if reusers:
        listed = " ".join(map(str, reusers))
        raise JobRefusedError(f"job {job_id}: its transcript was reused by job(s) {', '.join(map(str, reusers))}; "
                              f"remove them with it (`spkd remove {job_id} {listed}`)")
    segments, events = store.removal_counts(job_id)
    audio = spool.source_of(config, job)
    moves = audio is not None and (job.state == "done" or audio == Path(job.spool_path))
    return Removal(job=job, files=tuple(results.result_files(config, job)), segments=segments, events=events,
                   audio=audio, audio_moves=moves)


def remove(config: Config, store: Store, removals: Sequence[Removal]) -> list[int]:
    """Remove what `plan` found; returns the ids removed (a job that changed meanwhile,
    retried or reused, stays)."""
    kept = []
    for removal in removals:
        job, audio = removal.job, removal.audio
        now = store.job(job.id)
        if now is None or now.state != job.state:
            continue  # retried or removed meanwhile: not what was shown
        kept.append(job.id)
        if removal.audio_moves and audio is not None:
            try:
                if job.state == "done":
                    spool.keep_in_failed(config, job, audio)
                else:
                    spool.retire_failed(config, job)  # a failed job's file a crash left in the spool
            except FileNotFoundError:
                pass  # moved meanwhile (retried, or tidied up by the supervisor)
        if job.state == "done":
            results.withdraw(config, store, job)
    removed = store.remove_jobs(kept)
    for job_id in removed:
        logger.info("job {} removed", job_id)
    return removed
