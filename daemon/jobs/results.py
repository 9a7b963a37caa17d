"""Recording a job's result: the one module that writes what a job leaves behind.

A result is four things, and only this module writes them:

- the job's outbox files (through daemon.writers; each written atomically, so a reader
  sees the old file or the new one, never half of one);
- its stored transcript, `state/transcripts/<id>.json` (with the speakers' centroids):
  what a re-render, a rename and a later duplicate start from;
- its rows in the store: `done` (or `done`, reused from a twin) with its segments in
  the same transaction, or, later, the segments replaced with an event saying why;
- its source moved from the spool to archive/, and where it went recorded.

Each way a result comes about writes them in the order that survives a crash at any
point between two steps:

- transcribed by a worker (`write_outputs`, then `record_transcribed`): the stored
  transcript, then the outbox files, then `done` with the segments, only while the
  worker still holds the job's lease, then the source archived. A crash before `done`
  leaves a claimed job whose lease runs out: it is transcribed again and the same
  files are replaced. A lease taken back meanwhile means nothing is recorded: the job
  belongs to whoever has it now. A crash after `done` leaves the source in the spool;
  the supervisor's start-up (`retire_done` from settle_spool) archives it.
- an enrolment (`record_enrolled`): `done` with the voice's sample in one transaction,
  then the source archived (the same recovery).
- a duplicate taken at intake (`record_reused`): the outbox files, then the `done` row
  with the twin's segments (one insert), then the stored transcript (its name is the
  new job's id), then the source archived. A crash before the insert leaves a spool
  file without a row, which the watcher's recovery makes a job again (and reuses
  again, over the same file names).
- a re-render of a done job (`rerender`: rename, rematch, and any later edit): the
  stored transcript, then the outbox files, then the segments with the event.

And a result is taken back here too: `withdraw` (a done job run again with `spkd
retry --force`, or removed with `spkd remove`) deletes its outbox files and stored
transcript, then its segments and outputs list in the store; `discard` deletes what a
worker wrote for a job that was cancelled meanwhile (nothing was recorded for it).

Reuse of an earlier result is decided by one function, `reusable`, at two moments
(see there). The read side (where a stored transcript lives, reading it, which formats
a job has) is daemon.jobs.outputs; search and the dashboard only read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files, writers
from daemon.jobs import outputs, spool
from daemon.store.search import PG_LOCALE_NOTE
from daemon.transcript import Transcript

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["BackfillResult", "Reuse", "Write", "backfill_segments", "discard", "publish", "record_enrolled",
           "record_reused", "record_transcribed", "rerender", "result_files", "retire_done", "reusable",
           "save_transcript", "withdraw", "write_outputs"]

# How a store write is run: `write(what, call)` returns call()'s result, or None when the
# caller gave up waiting for the database (the worker passes its wait-out-the-database
# retry, which gives up only when the worker is asked to stop); `what` names the write
# in the log line that says it is waiting.
Write = Callable[[str, Callable[[], Any]], Any]


def _now(what: str, call: Callable[[], Any]) -> Any:
    return call()


# --------------------------------------------------------------------------- reuse


@dataclass(frozen=True)
class Reuse:
    """An earlier job's result that a new job takes instead of transcribing."""

    twin: "Job"  # the done job that transcribed the same audio with the same options
    transcript: Transcript  # the twin's stored transcript, as the new job's file's


def reusable(config: "Config", store: "Store", dedup_key: str | None, *, audio_path: Path, source_name: str,
             sha256: str | None) -> Reuse | None:
    """The result a job with `dedup_key` (same audio, same transcript options) can take
    from an earlier done job, or None: no such job, or its stored transcript is gone
    (then the file is transcribed after all).

    Asked at two moments, because the twin may not be done at the first: the watcher
    asks when it takes a file (a duplicate of a finished job is done at once, without
    queueing), and the worker asks again when it claims a job (a duplicate that came in
    while its twin was still queued or running was queued; by its turn the twin may be
    done, and it is reused then rather than transcribed a second time)."""
    twin = store.done_twin(dedup_key)
    if twin is None:
        return None
    transcript = outputs.load_transcript(config, twin.id)
    if transcript is None:
        return None
    return Reuse(twin=twin, transcript=transcript.for_source(audio_path, name=source_name, sha256=sha256))


# --------------------------------------------------------------------------- the files


def save_transcript(config: "Config", job_id: int, transcript: Transcript) -> None:
    """The job's own copy of its transcript, with the speakers' centroids (for naming
    later), replaced atomically."""
    from daemon.writers.json_format import render_json

    files.atomic_write(outputs.transcript_path(config, job_id), render_json(transcript, centroids=True))


def publish(config: "Config", *, output_stem: str, transcript: Transcript, formats: Sequence[str]) -> list[str]:
    """Write the outbox files of one job (each atomically); returns their paths relative
    to the outbox. Daemon code publishes through the recording functions below."""
    stem = PurePosixPath(output_stem)
    outbox = config.paths.outbox
    directory = files.inside(outbox, stem.parent.as_posix()) if stem.parent.parts else outbox
    written = writers.publish(transcript, directory=directory, stem=stem.name, formats=formats)
    return [p.relative_to(outbox).as_posix() for p in written]


def write_outputs(config: "Config", job_id: int, transcript: Transcript, *, output_stem: str,
                  formats: Sequence[str]) -> list[str]:
    """A transcribed job's files, before anything is recorded in the store: its stored
    transcript, then its outbox files. Returns the outbox paths, for
    `record_transcribed`. Raises whatever writing raised (the worker fails the job)."""
    save_transcript(config, job_id, transcript)
    return publish(config, output_stem=output_stem, transcript=transcript, formats=formats)


# --------------------------------------------------------------------------- recording


def retire_done(config: "Config", store: "Store", job_id: int, *, spool_path: Path, source_name: str,
                write: Write = _now) -> Path | None:
    """Archive a done job's source and record where it went (`jobs.archive_name`), so
    that the job's own file, and no other of the same name, is what the dashboard plays.
    Only once the job's `done` is recorded (a source archived first would be lost to a
    retry). The file is moved once; `write` runs the store write. Also what the
    supervisor's start-up and the voices folder's tidying use for a source a crash left
    in the spool. None when the source had already moved on."""
    archive_root = config.paths.archive
    target = spool.archive(spool_path=spool_path, spool_root=config.paths.spool, archive_root=archive_root,
                           source_name=source_name)
    if target is not None:
        name = target.relative_to(archive_root.resolve()).as_posix()
        write(f"recording where job {job_id}'s source went", lambda: store.set_archive_name(job_id, name))
    return target


def record_transcribed(config: "Config", store: "Store", job: "Job", transcript: Transcript, *,
                       written: Sequence[str], pid: int, processing_seconds: float, device: str,
                       reuse: Reuse | None = None, write: Write = _now) -> bool | None:
    """After `write_outputs`: the claimed `job` is `done`, with `transcript`'s segments
    in the same transaction (`reuse`: it took a twin's result, named in `reused_from`),
    then its source goes to archive/. True when recorded; False when the lease was
    taken back (nothing recorded: the job is someone else's now); None when `write`
    gave up (the job stays claimed and goes back to the queue when its lease runs out)."""
    done = write(f"recording job {job.id} done", lambda: store.complete(
        job.id, pid=pid, audio_seconds=transcript.audio_seconds, processing_seconds=processing_seconds,
        speakers=len(transcript.speakers), outputs=list(written), device=device,
        reused_from=reuse.twin.id if reuse is not None else None, transcript=transcript))
    if not done:
        return done
    retire_done(config, store, job.id, spool_path=Path(job.spool_path), source_name=job.source_name, write=write)
    return True


def record_enrolled(config: "Config", store: "Store", job: "Job", *, pid: int, name: str, sample: Mapping[str, Any],
                    processing_seconds: float, device: str, write: Write = _now) -> bool | None:
    """An enrolment job is `done` with its voice's `sample` (one transaction, only while
    its lease is held), then its source goes to archive/ like any job's. True, False or
    None as `record_transcribed`."""
    done = write(f"recording job {job.id} done", lambda: store.complete_enrolment(
        job.id, pid=pid, name=name, sample=sample, processing_seconds=processing_seconds, device=device))
    if not done:
        return done
    retire_done(config, store, job.id, spool_path=Path(job.spool_path), source_name=job.source_name, write=write)
    return True


def record_reused(config: "Config", store: "Store", reuse: Reuse, *, spool_path: Path, source_name: str,
                  output_stem: str, sha256: str, size_bytes: int, options: Mapping[str, Any],
                  dedup_key: str | None) -> int:
    """A file the watcher has just spooled is a duplicate of `reuse.twin`: its outbox
    files rendered from the twin's transcript, a `done` job recorded for it (with the
    segments), its stored transcript, its source archived. Returns the new job's id.

    The stored transcript comes after the insert because its name is the job's id; a
    crash between the two leaves a done duplicate without one (its outputs and
    segments are whole; a rename of the twin passes it by)."""
    transcript = reuse.transcript
    written = publish(config, output_stem=output_stem, transcript=transcript,
                      formats=outputs.formats_for(config, options))
    job_id = store.add_reused(source_name=source_name, spool_path=str(spool_path), output_stem=output_stem,
                              sha256=sha256, size_bytes=size_bytes, options=options, dedup_key=dedup_key,
                              twin=reuse.twin, outputs=written, audio_seconds=transcript.audio_seconds,
                              speakers=len(transcript.speakers), transcript=transcript)
    save_transcript(config, job_id, transcript)
    retire_done(config, store, job_id, spool_path=spool_path, source_name=source_name)
    return job_id


def rerender(config: "Config", store: "Store", job_id: int, transcript: Transcript, *, event: str,
             **detail: Any) -> bool:
    """Change a done job's result after the fact: the one way to do it, for renaming
    speakers, re-matching them against the library, and any later change to what was
    said (edits, summaries). `transcript` becomes the job's:

    1. its stored transcript (the source of truth the next re-render starts from);
    2. its outbox files, in the formats it has now (`jobs.outputs`), under the same
       names, each replaced atomically (a job recorded with no outputs gets none);
    3. its segment rows, replaced in one transaction with an `event` row (`detail` its
       fields) saying what changed.

    A crash between the steps leaves the stored transcript ahead of the rest; doing the
    same re-render again brings them level. The job's state, times and outputs list do
    not change. False when there is no job `job_id`."""
    row = store.job(job_id)
    if row is None:
        return False
    save_transcript(config, job_id, transcript)
    formats = outputs.formats_written(row)
    if formats:
        publish(config, output_stem=row.output_stem, transcript=transcript, formats=formats)
    store.replace_segments(job_id, transcript, event=event, **detail)
    return True


# --------------------------------------------------------------------------- taking back


def result_files(config: "Config", job: "Job") -> list[Path]:
    """The files a job's result left that exist now: its outbox files (its row's
    outputs list) and its stored transcript."""
    found = []
    for name in job.outputs or ():
        path = files.regular_file_inside(config.paths.outbox, name)
        if path is not None:
            found.append(path)
    stored = outputs.transcript_path(config, job.id)
    if stored.is_file():
        found.append(stored)
    return found


def _delete(config: "Config", paths: Sequence[Path]) -> None:
    outbox = config.paths.outbox.resolve()
    for path in paths:
        path.unlink(missing_ok=True)
        if outbox in path.resolve().parents:
            spool.remove_empty_parents(path.parent, outbox)


def withdraw(config: "Config", store: "Store", job: "Job") -> list[Path]:
    """Take back a done job's result before it runs again (`spkd retry --force`) or is
    removed (`spkd remove`): its outbox files and stored transcript are deleted, then
    its segments and outputs list in the store. Returns the files deleted. A crash
    between the two leaves a done job without its files; withdrawing again finishes."""
    gone = result_files(config, job)
    _delete(config, gone)
    store.withdraw_result(job.id)
    return gone


def discard(config: "Config", job_id: int, written: Sequence[str]) -> None:
    """A worker wrote `written` (outbox paths) and the stored transcript for a job that
    was cancelled before its result could be recorded: nothing of it stays published."""
    paths = [p for p in (files.regular_file_inside(config.paths.outbox, name) for name in written) if p is not None]
    _delete(config, [*paths, outputs.transcript_path(config, job_id)])


# --------------------------------------------------------------------------- backfill


@dataclass(frozen=True)
class BackfillResult:
    jobs: int = 0
    segments: int = 0
    # Done jobs of this host whose stored transcript is gone: they stay without segments.
    missing: tuple[int, ...] = ()


def backfill_segments(config: "Config", store: "Store") -> BackfillResult:
    """Give done jobs without segment rows (finished before the segments existed)
    their rows from the stored transcripts under `paths.state/transcripts/`. Each job
    is filled in one transaction, and only while it has none, so running this again,
    or on two hosts at once, adds nothing twice. Run after every migration that has a
    config at hand (`spkd db upgrade`, daemon start)."""
    filled = rows = 0
    missing: list[int] = []
    candidates = store.done_jobs_without_segments()
    for done, job_id in enumerate(candidates):
        if done and done % 1000 == 0:
            logger.info("search: filling earlier jobs' segments, {} of {} looked at", done, len(candidates))
        transcript = outputs.load_transcript(config, job_id)
        if transcript is None:
            missing.append(job_id)
            continue
        added = store.add_segments(job_id, transcript)
        if added:
            filled += 1
            rows += added
    if filled:
        logger.info("search: filled {} earlier job(s) with {} segment row(s) from their stored transcripts", filled,
                    rows)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
        logger.warning("search: {} done job(s) have no stored transcript under {}, so their text is not searchable "
                       "(jobs {})", len(missing), config.paths.state / "transcripts", shown)
    if store.is_postgres and not store.trigram_index_covers_cjk():
        logger.warning("search: {}", PG_LOCALE_NOTE)
    return BackfillResult(jobs=filled, segments=rows, missing=tuple(missing))
