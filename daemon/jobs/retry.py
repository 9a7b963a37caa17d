"""Running a finished job again: `spkd retry` and the dashboard's Retry button, one
code for both.

What a retry can change is decided by one function, `refusal`, from the error class
of the job's failure (daemon.errors, its `permanent` flag) and from the job's files as
they lie now against what the failure recorded:

- a transient failure (a crash, a lost worker, a full disk, anything unforeseen) and a
  cancelled job may always run again;
- a permanent one (`not_audio`, `empty`, `too_short`, `bad_audio`, an enrolment with too
  little speech, …) would fail the same way, so it is refused unless its file changed
  since (its size and modification time in failed/ against its `.error.json`, then its
  sha256 against the job's), or `--force` is given;
- `bad_options` can be fixed without touching the audio: it may run again once its
  sidecar changed (its sha256 against the one its `.error.json` recorded) or options
  are given with `--options`;
- a done job runs again only with `--force`: its result is taken back first
  (daemon.jobs.results.withdraw) and its source comes back from archive/.

A retry re-reads the job's sidecar from where it lies now (failed/, the spool or
archive/), validates it as intake does (daemon.options) and stores those options on the
job, unless `--options` replaces them. A job that failed as not audio is probed again
(the caller passes intake's probe), so that a file that is still not audio is refused
with that reason instead of reaching a worker whose decoder would give a vaguer one.

The source moves back into the spool before the job is queued (a worker that claims it
finds it there); a crash between the two leaves a finished job whose file is in the
spool, which the supervisor's start-up puts back where the job's state says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files, options
from daemon.errors import (
    AudioError,
    JobRefusedError,
    NoSuchJobError,
    OptionsError,
    SpkdError,
    error_class,
)
from daemon.jobs import results, spool

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["RETRYABLE_STATES", "Look", "Probe", "Retry", "look", "offered", "origin_text", "refusal", "retry_failed",
           "retry_job", "why_not"]

# The states a retry takes a job from without --force (a done job needs it).
RETRYABLE_STATES = ("failed", "cancelled")

# daemon.intake.probe.probe, passed in by the callers that may import intake: raises an
# AudioError for a file that is not audio; its result's `duration_seconds` is the length.
Probe = Callable[[Path], Any]

# sha256 of files the dashboard looked at, by (path, size, mtime): it asks every few seconds.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_KEPT = 256


@dataclass(frozen=True)
class Look:
    """A finished job's source as it lies now, against what its failure recorded."""

    source: Path | None  # where it lies (None: in none of the places it could be)
    changed: bool | None  # the file differs from when the job failed (None: cannot tell, or not asked)
    sidecar_changed: bool | None  # its sidecar likewise
    sha256: str | None  # the file's now
    size_bytes: int | None


@dataclass(frozen=True)
class Retry:
    """A job queued again, with the options it will run with and where they came from."""

    job: Job
    options: dict[str, Any]
    options_from: str  # "--options", the sidecar's path, "no sidecar", "its enrolment"

    @property
    def options_text(self) -> str:
        """Where the options came from, for a person: `from <sidecar>`, `--options` …"""
        return origin_text(self.options_from)


# Where a retry's options came from when not from a sidecar (whose path is given plain).
NOT_A_SIDECAR = ("--options", "no sidecar", "its enrolment")


def origin_text(options_from: str) -> str:
    """`options_from` (Retry's, or a `retry_requested` event's detail) as a person reads
    it: a sidecar's path becomes `from <path>`; the others are words already."""
    return options_from if options_from in NOT_A_SIDECAR else f"from {options_from}"


def _digest(path: Path, identity: tuple[int, int] | None) -> str | None:
    key = (str(path), *identity) if identity is not None else None
    if key is not None and key in _DIGESTS:
        return _DIGESTS[key]
    try:
        digest = files.sha256_file(path)
    except (OSError, SpkdError):  # not a regular file (a link, a FIFO), or unreadable
        return None
    if key is not None:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def look(config: Config, job: Job, *, compare: bool = True) -> Look:
    """Where `job`'s source lies and, with `compare`, whether it (and its sidecar)
    changed since the job failed: a stat against its `.error.json` first, so that a file
    nobody touched is not read; its sha256 against the job's when that differs."""
    source = spool.source_of(config, job)
    if source is None or not compare:
        return Look(source, None, None, job.sha256, job.size_bytes)
    record = spool.error_record(source) or {}
    identity = files.file_identity(source)
    recorded = (record.get("size_bytes"), record.get("mtime_ns"))
    if identity is not None and recorded[1] is not None and tuple(identity) == recorded:
        changed: bool | None = False
        sha256, size = job.sha256, job.size_bytes
    else:
        sha256, size = _digest(source, identity), identity[0] if identity is not None else None
        earlier = record.get("sha256") or job.sha256
        if sha256 is not None and earlier is not None:
            changed = sha256 != earlier
        else:  # no hash to compare: a different stat is a change; without one there is no telling
            changed = True if recorded[1] is not None else None
    sidecar_changed = (spool.sidecar_digest(source) != record["sidecar_sha256"]) if "sidecar_sha256" in record \
        else None
    return Look(source, changed, sidecar_changed, sha256, size)


def refusal(job: Job, seen: Look, *, options_given: bool = False, force: bool = False) -> str | None:
    """Why a retry of `job` would not help, or cannot run, in a sentence; None when it
    may run. The one rule of `spkd retry` and of the dashboard's Retry button."""
    if job.state in ("queued", "running"):
        return f"job {job.id} is {job.state}: it has not finished, so there is nothing to retry"
    if job.state == "done" and not force:
        return f"job {job.id} is done; `spkd retry --force {job.id}` runs it again"
    if job.state == "done" and job.task != "transcribe":
        return (f"job {job.id} is a done voice enrolment: its sample is in the library, and running it again would "
                "add it twice")
    if seen.source is None:
        where = "archive/" if job.state == "done" else "failed/"
        return f"job {job.id}: its file {job.source_name} is no longer in {where} nor in the spool"
    failure = error_class(job.error_kind)
    if job.state != "failed" or force or failure is None or not failure.permanent:
        return None
    why = f"job {job.id} failed {job.error_kind}: {job.error_message}"
    if issubclass(failure, OptionsError):
        # Where the failure recorded no sidecar digest (an `.error.json` written before it
        # did), the sidecar is read again and judged by what it says now.
        if options_given or seen.sidecar_changed is not False or seen.changed:
            return None
        return (f"{why}; its sidecar has not changed since, so a retry would fail the same way: correct "
                f"{spool.sidecar_of(seen.source)}, or give the options with --options")
    if seen.changed:
        return None
    return (f"{why}; the file has not changed since, so a retry would fail the same way (replace {seen.source}, "
            "or --force runs it anyway)")


def why_not(config: Config, job: Job) -> str | None:
    """Why a plain retry (without --force or --options) cannot help `job`, or None when
    it may: `refusal` with the job's files looked at only as far as its failure needs."""
    if job.state not in RETRYABLE_STATES:
        return refusal(job, Look(None, None, None, job.sha256, job.size_bytes))
    failure = error_class(job.error_kind)
    return refusal(job, look(config, job, compare=failure is not None and failure.permanent))


def offered(config: Config, job: Job) -> bool:
    """Whether the dashboard offers Retry for `job`: a failed or cancelled job that a
    plain retry may change."""
    return job.state in RETRYABLE_STATES and why_not(config, job) is None


def _options_for(job: Job, source: Path, given: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The options the job runs with and where they came from: `given` (validated by the
    caller), else its sidecar where it lies now, else none. An enrolment keeps its own."""
    if job.task != "transcribe":
        if given is not None:
            raise JobRefusedError(f"job {job.id} is a voice enrolment: it takes no options")
        return dict(job.options), "its enrolment"
    if given is not None:
        return dict(given), "--options"
    sidecar = spool.sidecar_of(source)
    if not files.exists(sidecar):
        return {}, "no sidecar"
    try:
        return options.read_sidecar(sidecar), str(sidecar)
    except OptionsError as exc:
        raise JobRefusedError(f"job {job.id}: its sidecar {sidecar} is not valid: {exc.message}; correct it, or "
                              "give the options with --options") from None


def _probed(probe: Probe, job: Job, source: Path) -> float | None:
    """The file's length from `probe`; JobRefusedError when it is still not audio."""
    try:
        found = probe(source)
    except AudioError as exc:
        raise JobRefusedError(f"job {job.id}: {job.source_name} is still not audio ({exc.kind}: {exc.message})") \
            from None
    except OSError:  # no ffprobe here: the worker's decoder decides
        return None
    seconds = getattr(found, "duration_seconds", None)
    return float(seconds) if isinstance(seconds, (int, float)) else None


def retry_job(config: Config, store: Store, job_id: int, *, given: Mapping[str, Any] | None = None,
              force: bool = False, probe: Probe | None = None) -> Retry:
    """Queue job `job_id` again (see the module's docstring); `given`: options already
    validated (daemon.options.validate) that replace its sidecar's. Raises
    NoSuchJobError, or JobRefusedError saying why nothing happened."""
    job = store.job(job_id)
    if job is None:
        raise NoSuchJobError(f"no job {job_id}")
    seen = look(config, job)
    reason = refusal(job, seen, options_given=given is not None, force=force)
    if reason is not None:
        raise JobRefusedError(reason)
    assert seen.source is not None
    chosen, origin = _options_for(job, seen.source, given)
    failure = error_class(job.error_kind)
    audio_seconds = None
    if probe is not None and job.state != "done" and failure is not None and issubclass(failure, AudioError):
        audio_seconds = _probed(probe, job, seen.source)
    key = job.dedup_key if job.task != "transcribe" else \
        options.dedup_key(seen.sha256, {"channels": config.audio.channels, **chosen})
    try:
        spool.bring_back(config, job, seen.source)
    except FileNotFoundError:  # someone else moved it first (another retry of the same job)
        raise JobRefusedError(f"job {job_id}: its file was moved meanwhile (retried by someone else?); "
                              "not retried") from None
    if job.state == "done":
        results.withdraw(config, store, job)
    row = store.requeue(job.id, from_state=job.state, options=chosen, dedup_key=key, sha256=seen.sha256,
                        size_bytes=seen.size_bytes, audio_seconds=audio_seconds,
                        max_attempts=config.jobs.max_attempts, forced=force or None, options_from=origin)
    if row is None:
        now = store.job(job_id)
        state = now.state if now is not None else "gone"
        if now is not None and now.state in RETRYABLE_STATES:
            spool.retire_failed(config, now)  # back where its state says
        raise JobRefusedError(f"job {job_id} changed meanwhile (it is {state} now); not retried")
    logger.info("job {} requeued ({}): {} with options {} ({})", job_id, "forced" if force else "retry",
                job.source_name, chosen, origin_text(origin))
    return Retry(job=row, options=chosen, options_from=origin)


def retry_failed(config: Config, store: Store, *, force: bool = False,
                 probe: Probe | None = None) -> tuple[list[Retry], list[str]]:
    """`spkd retry --failed`: every failed job that a retry may change, oldest first;
    returns those queued and, for the others, why not."""
    queued: list[Retry] = []
    skipped: list[str] = []
    for job in reversed(store.jobs(limit=1_000_000, state="failed")):
        try:
            queued.append(retry_job(config, store, job.id, force=force, probe=probe))
        except JobRefusedError as exc:
            skipped.append(exc.message)
    return queued, skipped
