"""Stopping a job that has not finished: `spkd cancel` (and the dashboard's button, which
uses this function).

A queued job is `cancelled` at once and never claimed. A running one is `cancelled` in
the store at once; its worker loses its hold on the job (daemon.store's heartbeat and
completion accept only the holder of a running job), and the worker's heartbeat
thread, which reads the job's state every few seconds, tells the worker to abandon it
(daemon.jobs.worker): the engine call stops at its next progress report, or, when it
cannot be interrupted, the worker exits and the supervisor starts a fresh one in its
slot. Either way nothing is published for it.

The store is written first, then the source moves to failed/ with an `.error.json`
whose reason is `cancelled`; a crash between the two leaves a cancelled job whose file
is in the spool, which the supervisor's start-up moves to failed/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from daemon.errors import JobRefusedError, NoSuchJobError
from daemon.jobs import spool

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["CANCELLABLE_STATES", "cancel_job"]

CANCELLABLE_STATES = ("queued", "running")


def cancel_job(config: Config, store: Store, job_id: int, *, by: str = "spkd cancel") -> Job:
    """Cancel job `job_id` (`by`: who asked, for its message and event). Returns the job
    as it was (its `state` then: queued or running). Raises NoSuchJobError, or
    JobRefusedError for a job that has finished."""
    job = store.job(job_id)
    if job is None:
        raise NoSuchJobError(f"no job {job_id}")
    was = store.cancel(job_id, message=f"cancelled ({by})", by=by) if job.state in CANCELLABLE_STATES else None
    if was is None:
        now = store.job(job_id)
        state = now.state if now is not None else "gone"
        raise JobRefusedError(f"job {job_id} is {state}: only a queued or running job can be cancelled"
                              + (" (spkd remove deletes a finished job)" if state != "gone" else ""))
    row = store.job(job_id)
    if row is not None:
        try:
            spool.retire_failed(config, row)
        except FileNotFoundError:
            pass  # moved meanwhile (the supervisor tidying up): it is where it belongs
    logger.info("job {} cancelled ({}, was {}): {}", job_id, by, was.state, was.source_name)
    return was
