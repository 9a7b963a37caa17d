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
- a summary of a done job (`record_summary`, daemon/jobs/summarize.py): NAME.summary.md
  and the json's `summary` object, then the summary's `done`, only while its worker
  holds the summary's lease. Re-renders and the doctor's check carry the recorded
  summary along (`_published_summary`).
- an enrolment (`record_enrolled`): `done` with the voice's sample in one transaction,
  then the source archived (the same recovery).
- a duplicate taken at intake (`record_reused`): the outbox files, then the `done` row
  with the twin's segments (one insert), then the stored transcript (its name is the
  new job's id), then the source archived. A crash before the insert leaves a spool
  file without a row, which the watcher's recovery makes a job again (and reuses
  again, over the same file names).
- a re-render of done jobs (`rerender_jobs`: rename, rematch, a repair, and any later
  edit): each job's new transcript written beside its stored one (`<id>.next.json`),
  then every job's intent recorded in one transaction (a `rerender` event, see
  daemon.store.rerenders), then job by job: the new transcript put in the stored one's
  place (a rename), the outbox files, the segments with the event that says it is done.
  A crash before the intents changes nothing; after them, `finish_rerenders` (at start,
  before the next re-render of the job, in the next rematch, in `spkd doctor`) brings
  each job whose intent is pending to its new transcript, from the step it reached.
  Doing a step twice does what doing it once does. `check_results` finds any done job
  whose outputs or segments disagree with its stored transcript; `repair_results`
  re-renders those (the doctor).

The outbox files and the segments are made from the transcript as stored (rounded to
milliseconds): what a re-render makes from the stored transcript is then what the
worker made, byte for byte, and a check can compare them.

And a result is taken back here too: `withdraw` (a done job run again with `spkd
retry --force`, or removed with `spkd remove`) deletes its outbox files and stored
transcript, then its segments and outputs list in the store; `discard` deletes what a
worker wrote for a job that was cancelled meanwhile (nothing was recorded for it).

Reuse of an earlier result is decided by one function, `reusable`, at two moments
(see there). The read side (where a stored transcript lives, reading it, which formats
a job has) is daemon.jobs.outputs; search and the dashboard only read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files, writers
from daemon.errors import VersionConflictError
from daemon.jobs import outputs, spool
from daemon.store.rerenders import RERENDER_EVENTS
from daemon.store.search import PG_LOCALE_NOTE
from daemon.store.segments import segment_rows
from daemon.transcript import Transcript
from daemon.writers.summary_doc import render_summary_markdown

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store
    from daemon.store.corrections import NewVersion

__all__ = ["BackfillResult", "Change", "RERENDER_EVENTS", "Repair", "Reuse", "Write", "as_stored", "backfill_segments",
           "check_results", "disagreements", "discard", "finish_rerenders", "next_transcript_path", "publish",
           "record_enrolled", "record_reused", "record_summary", "record_transcribed", "repair_results", "rerender",
           "rerender_jobs", "result_files", "retire_done", "reusable", "save_transcript", "withdraw", "write_outputs"]

# How a store write is run: `write(what, call)` returns call()'s result, or None when the
# caller gave up waiting for the database (the worker passes its wait-out-the-database
# retry, which gives up only when the worker is asked to stop); `what` names the write
# in the log line that says it is waiting.
Write = Callable[[str, Callable[[], Any]], Any]

# A re-render's new transcript with no intent recorded for it (its process was killed
# before it recorded them) is removed at start once it is this old.
STALE_NEXT_SECONDS = 600.0


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


def _stored_form(transcript: Transcript) -> str:
    from daemon.writers.json_format import render_json

    return render_json(transcript, centroids=True)


def as_stored(transcript: Transcript) -> Transcript:
    """`transcript` as its stored copy reads back (times to the millisecond, centroids
    to 6 decimals): what outputs and segments are made from."""
    return writers.parse_json(_stored_form(transcript))


def save_transcript(config: "Config", job_id: int, transcript: Transcript) -> None:
    """The job's own copy of its transcript, with the speakers' centroids (for naming
    later), replaced atomically."""
    files.atomic_write(outputs.transcript_path(config, job_id), _stored_form(transcript))


def next_transcript_path(config: "Config", job_id: int) -> Path:
    """Where a re-render puts a job's new transcript before it replaces the stored one."""
    return outputs.transcript_path(config, job_id).with_suffix(".next.json")


def publish(config: "Config", *, output_stem: str, transcript: Transcript, formats: Sequence[str],
            summary: Mapping[str, Any] | None = None) -> list[str]:
    """Write the outbox files of one job (each atomically); returns their paths relative
    to the outbox. `summary`: the job's summary, which its json carries. Daemon code
    publishes through the recording functions below."""
    stem = PurePosixPath(output_stem)
    outbox = config.paths.outbox
    directory = files.inside(outbox, stem.parent.as_posix()) if stem.parent.parts else outbox
    written = writers.publish(transcript, directory=directory, stem=stem.name, formats=formats, summary=summary)
    return [p.relative_to(outbox).as_posix() for p in written]


def write_outputs(config: "Config", job_id: int, transcript: Transcript, *, output_stem: str,
                  formats: Sequence[str]) -> list[str]:
    """A transcribed job's files, before anything is recorded in the store: its stored
    transcript, then its outbox files. Returns the outbox paths, for
    `record_transcribed`. Raises whatever writing raised (the worker fails the job)."""
    save_transcript(config, job_id, transcript)
    return publish(config, output_stem=output_stem, transcript=as_stored(transcript), formats=formats)


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
    stored = as_stored(transcript)  # the segments as the stored transcript has them
    done = write(f"recording job {job.id} done", lambda: store.complete(
        job.id, pid=pid, audio_seconds=transcript.audio_seconds, processing_seconds=processing_seconds,
        speakers=len(transcript.speakers), outputs=list(written), device=device,
        reused_from=reuse.twin.id if reuse is not None else None, transcript=stored,
        summary_attempts=_summary_attempts(config, job.options)))
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
    transcript = as_stored(reuse.transcript)
    written = publish(config, output_stem=output_stem, transcript=transcript,
                      formats=outputs.formats_for(config, options))
    job_id = store.add_reused(source_name=source_name, spool_path=str(spool_path), output_stem=output_stem,
                              sha256=sha256, size_bytes=size_bytes, options=options, dedup_key=dedup_key,
                              twin=reuse.twin, outputs=written, audio_seconds=transcript.audio_seconds,
                              speakers=len(transcript.speakers), transcript=transcript,
                              summary_attempts=_summary_attempts(config, options))
    save_transcript(config, job_id, transcript)
    retire_done(config, store, job_id, spool_path=spool_path, source_name=source_name)
    return job_id


@dataclass(frozen=True)
class Change:
    """One job's re-render: `transcript` becomes its result, and an `event` (one of
    RERENDER_EVENTS) with `detail` (its fields; None values left out) says so. `version`:
    a correction (daemon.jobs.corrections), whose transcript version is added in the
    transaction that records the re-render as intended."""

    job_id: int
    transcript: Transcript
    event: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    version: "NewVersion | None" = None


def rerender(config: "Config", store: "Store", job_id: int, transcript: Transcript, *, event: str,
             **detail: Any) -> bool:
    """Change one done job's result after the fact (`rerender_jobs` with one change).
    False when there is no done job `job_id`."""
    return bool(rerender_jobs(config, store, [Change(job_id, transcript, event, detail)]))


def rerender_jobs(config: "Config", store: "Store", changes: Sequence[Change]) -> list[int]:
    """Change done jobs' results after the fact: the one way to do it, for renaming
    speakers (a job and its duplicates together), re-matching them against the
    library, repairing, and any later change to what was said. Each change's
    `transcript` becomes its job's:

    1. written beside the stored transcript (`<id>.next.json`), for every job first;
    2. every job's re-render recorded as intended, in one transaction (from here on it
       is finished, whatever happens: `finish_rerenders`);
    3. then job by job: the new transcript replaces the stored one (the source of truth
       the next re-render starts from), the outbox files are made again in the formats
       the job has (`jobs.outputs`, same names, each replaced atomically), and its
       segment rows are replaced in one transaction with the `event` row that says the
       re-render is done.

    An interrupted earlier re-render of these jobs is finished first. The job's state,
    times and outputs list do not change. Returns the jobs re-rendered (those done).
    A correction's version that can no longer be added (VersionConflictError) records
    nothing and removes what step 1 wrote."""
    if not changes:
        return []
    finish_rerenders(config, store, job_ids=[c.job_id for c in changes])
    for change in changes:
        files.atomic_write(next_transcript_path(config, change.job_id), _stored_form(change.transcript))
    versions = {c.job_id: c.version for c in changes if c.version is not None}
    try:
        intents = store.begin_rerenders([(c.job_id, c.event, {k: v for k, v in c.detail.items() if v is not None})
                                         for c in changes], **({"versions": versions} if versions else {}))
    except VersionConflictError:  # a correction that landed second: nothing of it may stay
        for change in changes:
            next_transcript_path(config, change.job_id).unlink(missing_ok=True)
        raise
    for change in changes:
        if change.job_id not in intents:
            next_transcript_path(config, change.job_id).unlink(missing_ok=True)
    done = []
    for change in changes:
        intent = intents.get(change.job_id)
        if intent is not None and _bring_level(config, store, change.job_id, intent=intent, event=change.event,
                                               detail=change.detail):
            done.append(change.job_id)
    return done


def _bring_level(config: "Config", store: "Store", job_id: int, *, intent: int, event: str,
                 detail: Mapping[str, Any]) -> bool:
    """Step 3 of a re-render whose intent is recorded, from wherever an interrupted one
    stopped: the new transcript into place (if not there yet), the outputs and the
    segments with the closing event. False when there is nothing to bring level (the
    job is no longer done, or its stored transcript is gone)."""
    row = store.job(job_id)
    ahead = next_transcript_path(config, job_id)
    if row is None or row.state != "done":
        ahead.unlink(missing_ok=True)
        return False
    if ahead.exists():
        os.replace(ahead, outputs.transcript_path(config, job_id))
        files.fsync_dir(ahead.parent)
    transcript = outputs.load_transcript(config, job_id)
    if transcript is None:
        logger.warning("job {}: its stored transcript is gone; its {} cannot be finished", job_id, event)
        return False
    formats = outputs.formats_written(row)
    summary = _published_summary(store, job_id)
    if formats:
        publish(config, output_stem=row.output_stem, transcript=transcript, formats=formats, summary=summary)
    if summary is not None:
        _publish_summary_file(config, row, summary)
    store.replace_segments(job_id, transcript, event=event, intent=intent,
                           **{k: v for k, v in detail.items() if v is not None})
    return True


def finish_rerenders(config: "Config", store: "Store", *, job_ids: Sequence[int] | None = None) -> list[int]:
    """Finish re-renders that were recorded as intended but not recorded done (a
    process killed in the middle): of `job_ids`, or of every job of this host (at
    start, in `spkd doctor`), which also removes new transcripts a re-render wrote
    before it was interrupted ahead of its intent (it changed nothing). Returns the jobs
    finished."""
    pending = store.pending_rerenders(job_ids, this_host=job_ids is None)
    finished = []
    for intent in pending:
        detail = intent.detail or {}
        if _bring_level(config, store, intent.job_id, intent=intent.id, event=str(detail.get("event") or "repaired"),
                        detail=dict(detail.get("detail") or {})):
            finished.append(intent.job_id)
    if job_ids is None:
        waiting = {i.job_id for i in pending}
        names = {f"{i}.next.json" for i in waiting}
        for ahead in sorted(outputs.transcript_path(config, 0).parent.glob("*.next.json")):
            try:  # a young one may be a re-render's that is recording its intents right now
                stale = ahead.name not in names and time.time() - ahead.stat().st_mtime > STALE_NEXT_SECONDS
            except OSError:
                continue
            if stale:
                ahead.unlink(missing_ok=True)
    if finished:
        logger.warning("finished {} interrupted re-render(s) of job(s) {}", len(finished), ", ".join(map(str, finished)))
    return finished


# --------------------------------------------------------------------------- summaries


def _summary_attempts(config: "Config", options: Mapping[str, Any]) -> int | None:
    """The attempts a done job's summary is queued with, or None: it gets none
    (summaries off, or its sidecar says `"summary": false`)."""
    return config.summary.max_attempts if config.summary.wanted(options) else None


def _published_summary(store: "Store", job_id: int) -> dict[str, Any] | None:
    """The summary the job's outputs carry: its last good result (kept while a renewal runs)."""
    row = store.summary(job_id)
    return row.result if row is not None else None


def _summary_markdown(job: "Job", summary: Mapping[str, Any]) -> str:
    stem = PurePosixPath(job.output_stem)
    return render_summary_markdown(summary, title=PurePosixPath(job.source_name).name, page=f"{stem.name}.html")


def _publish_summary_file(config: "Config", job: "Job", summary: Mapping[str, Any]) -> None:
    files.atomic_write(outputs.summary_path(config, job.output_stem), _summary_markdown(job, summary))


def record_summary(config: "Config", store: "Store", job: "Job", summary: Mapping[str, Any], *, pid: int,
                   transcript_version: int, model: str, write: Write = _now) -> bool | None:
    """A summary made by worker `pid`: NAME.summary.md and the `summary` object of
    NAME.json (from the stored transcript as it is now), then the summary `done` with
    its result, only while the worker holds its lease. True when recorded; False when
    the lease was taken back; None when `write` gave up. The files come first, as for a
    transcript: a worker that loses its lease meanwhile leaves them to the next attempt,
    which writes them again, and `spkd doctor` brings them level with the recorded
    result (`disagreements`)."""
    if not write(f"checking job {job.id}'s summary is still ours", lambda: store.holds_summary(job.id, pid=pid)):
        return False
    result = {**summary, "model": model, "transcript_version": transcript_version}
    transcript = outputs.load_transcript(config, job.id)
    written = [outputs.summary_path(config, job.output_stem)]
    if transcript is not None and "json" in outputs.formats_written(job):
        written += [config.paths.outbox / name for name in publish(
            config, output_stem=job.output_stem, transcript=transcript, formats=["json"], summary=result)]
    _publish_summary_file(config, job, result)
    done = write(f"recording job {job.id}'s summary", lambda: store.complete_summary(
        job.id, pid=pid, result=result, transcript_version=transcript_version, model=model))
    if done is False and store.job(job.id) is None:  # removed while its summary was made: nothing of it stays
        _delete(config, written)
    return done


# --------------------------------------------------------------------------- checking


def disagreements(config: "Config", store: "Store", job_id: int) -> list[str]:
    """How a done job's outputs and segment rows disagree with its stored transcript
    (empty: they agree, or there is no stored transcript to compare with)."""
    row = store.job(job_id)
    transcript = outputs.load_transcript(config, job_id)
    if row is None or row.state != "done" or transcript is None:
        return []
    found = []
    want = [(r["idx"], r["start_seconds"], r["end_seconds"], r["speaker"], r["text"])
            for r in segment_rows(job_id, transcript)]
    have = store.segment_texts(job_id)
    if len(want) != len(have) or any(
            w[0] != h[0] or w[3:] != h[3:] or abs(w[1] - h[1]) > 0.002 or abs(w[2] - h[2]) > 0.002
            for w, h in zip(want, have)):
        found.append("segments")
    summary = _published_summary(store, job_id)
    wanted = {fmt: (row.output_stem + writers.extension(fmt), writers.render_bytes(fmt, transcript, summary=summary))
              for fmt in outputs.formats_written(row)}
    if summary is not None:
        wanted["summary"] = (row.output_stem + outputs.SUMMARY_SUFFIX, _summary_markdown(row, summary).encode())
    for what, (name, content) in wanted.items():
        path = files.regular_file_inside(config.paths.outbox, name)
        try:
            same = path is not None and path.read_bytes() == content
        except OSError:
            same = False
        if not same:
            found.append(what)
    return found


@dataclass(frozen=True)
class Repair:
    checked: int = 0
    finished: tuple[int, ...] = ()  # interrupted re-renders finished
    repaired: dict[int, tuple[str, ...]] = field(default_factory=dict)  # job -> what disagreed


def check_results(config: "Config", store: "Store") -> dict[int, list[str]]:
    """Every done transcription of this host whose outputs or segments disagree with
    its stored transcript (an interrupted re-render among them), with what disagrees."""
    found = {i.job_id: ["a re-render was interrupted"] for i in store.pending_rerenders(this_host=True)}
    for job_id in store.done_transcriptions_here():
        if job_id not in found:
            problems = disagreements(config, store, job_id)
            if problems:
                found[job_id] = problems
    return found


def repair_results(config: "Config", store: "Store") -> Repair:
    """`spkd doctor`: interrupted re-renders finished, then every done job whose
    outputs or segments still disagree with its stored transcript re-rendered from it
    (a `repaired` event saying what disagreed)."""
    finished = finish_rerenders(config, store)
    jobs = store.done_transcriptions_here()
    wrong = {job_id: problems for job_id in jobs if (problems := disagreements(config, store, job_id))}
    changes = []
    for job_id, problems in wrong.items():
        transcript = outputs.load_transcript(config, job_id)
        if transcript is not None:
            changes.append(Change(job_id, transcript, "repaired", {"disagreed": problems}))
    done = rerender_jobs(config, store, changes)
    if done:
        logger.warning("repaired {} job(s) whose outputs or segments disagreed with their stored transcript: {}",
                       len(done), ", ".join(map(str, done)))
    return Repair(checked=len(jobs), finished=tuple(finished),
                  repaired={j: tuple(wrong[j]) for j in done})


# --------------------------------------------------------------------------- taking back


def result_files(config: "Config", job: "Job") -> list[Path]:
    """The files a job's result left that exist now: its outbox files (its row's
    outputs list, and its summary), and its stored transcript."""
    found = []
    for name in [*(job.outputs or ()), job.output_stem + outputs.SUMMARY_SUFFIX]:
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
    config at hand (`spkd db upgrade`, daemon start). Re-renders a crash interrupted
    are finished first (`finish_rerenders`): this is where a start brings done jobs
    level with their stored transcripts."""
    try:
        finish_rerenders(config, store)
    except OSError as exc:  # a file that cannot be written now: the next start (or spkd doctor) tries again
        logger.error("cannot finish the re-renders a crash interrupted: {}", exc)
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
