"""The voices folder: `paths.voices/<Name>/` makes the library follow it.

Each settled audio file in a name's folder becomes an enrolment job through the
queue (its copy in the spool, so a worker embeds it and a crash only delays it); the
files stay as the library's source of truth: a file or folder removed takes its
samples, and a voice left without one, with it. The dashboard's enrolment drops an
upload into the folder (`drop_for_enrolment`), and the daemon takes it from there.
Files are taken by the inbox's rules (daemon.intake.stability.ignored_because).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from loguru import logger

from daemon import files
from daemon.errors import EnrolmentError, VoiceError
from daemon.intake.stability import ignored_because
from daemon.jobs import results, spool
from daemon.voices import library
from daemon.voices.library import folder_source, voice_source_name
from daemon.voices.matching import check_name

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["ENROL_COPY_PREFIX", "ENROL_PRIORITY", "FolderSync", "ORPHAN_COPY_SECONDS", "drop_for_enrolment",
           "settle_enrol_copies", "sync_folder", "waiting_files"]

# Enrolment jobs go before transcriptions: a voice dropped together with recordings of
# that person names them.
ENROL_PRIORITY = 1000
# An enrolment job's copy of its file in the spool starts with this.
ENROL_COPY_PREFIX = ".enrol-"
# A copy without a job this old was left by a crash between copying and queueing.
ORPHAN_COPY_SECONDS = 3600.0


@dataclass
class FolderSync:
    """What one look at paths.voices did."""

    queued: list[int] = field(default_factory=list)  # enrolment job ids
    removed_samples: int = 0
    removed_voices: list[str] = field(default_factory=list)


def _folder_files(config: "Config") -> dict[str, Path]:
    """Audio files directly inside paths.voices/<Name>/ (a real folder, a real file; no
    dot-names, no sidecars), by their path under paths.voices."""
    root = config.paths.voices
    found: dict[str, Path] = {}
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                         and not p.name.startswith("."))
    except OSError:
        return found
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            rel = PurePosixPath(folder.name, path.name)
            if path.is_symlink() or not path.is_file() or ignored_because(config, rel) is not None:
                continue
            found[rel.as_posix()] = path
    return found


def waiting_files(config: "Config", store: "Store") -> list[tuple[str, str]]:
    """Files in paths.voices/<Name>/ that the folder scan has not taken yet (neither a
    sample nor an enrolment job has their path), as (voice folder, file name): what the
    daemon's next look at the folder (every watch.rescan_seconds) queues. By path only,
    so that a page can ask without hashing the library; a file changed in place shows as
    enrolled until the scan sees it."""
    taken = {s.source for s in store.voice_samples_of() if s.origin == "folder"}
    taken |= {folder_source(j.source_name) for j in store.enrol_jobs()}
    return [(PurePosixPath(rel).parent.name, PurePosixPath(rel).name)
            for rel in sorted(_folder_files(config)) if rel not in taken]


def sync_folder(config: "Config", store: "Store", *, now: float | None = None,
                digests: dict[str, tuple[tuple[int, int], str]] | None = None) -> FolderSync:
    """`_sync_folder` under the library's folder lock (daemon.voices.library.folder_lock),
    so that a voice renamed meanwhile (its name, its samples' paths and its folder) is
    seen before or after, never half-way; a rename a crash interrupted is finished first."""
    with library.folder_lock(config):
        library.finish_folder_renames(config, store)
        return _sync_folder(config, store, now=now, digests=digests)


def _sync_folder(config: "Config", store: "Store", *, now: float | None = None,
                 digests: dict[str, tuple[tuple[int, int], str]] | None = None) -> FolderSync:
    """Make the library follow paths.voices: a new or changed file that has been still
    for `watch.settle_seconds` becomes an enrolment job (its copy in the spool, so that
    the job's source lives where every job's does and a failure lands in failed/ with
    its `.error.json`); samples whose file is gone (or changed) go, and a voice left
    without samples with them. A file whose enrolment failed is tried again only once
    it changes. Idempotent. `digests` (path -> ((size, mtime_ns), sha256)), kept by the
    caller from one look to the next, spares hashing the whole library every rescan: a
    file is hashed again only when its size or mtime changed."""
    settle_enrol_copies(config, store, now=now)

    clock = time.time() if now is None else now
    report = FolderSync()
    present = _folder_files(config)
    samples = [s for s in store.voice_samples_of() if s.origin == "folder"]
    jobs = store.enrol_jobs()
    known = {} if digests is None else digests
    for gone in set(known) - set(present):
        del known[gone]

    def sha(rel: str) -> str | None:
        try:
            identity = files.file_identity(present[rel])
            if identity is None:
                return None
            if rel not in known or known[rel][0] != identity:
                known[rel] = (identity, files.sha256_file(present[rel]))
        except OSError:
            return None
        return known[rel][1]

    # gone or changed: their samples go
    stale = [s.id for s in samples if s.source not in present or sha(s.source) != s.sha256]
    if stale:
        report.removed_voices = store.remove_voice_samples(stale)
        report.removed_samples = len(stale)
        logger.info("voices: {} sample(s) whose file is gone or changed removed{}", len(stale),
                    f"; voice(s) {', '.join(report.removed_voices)} with them" if report.removed_voices else "")
    enrolled = {(s.source, s.sha256) for s in samples if s.id not in stale}
    for rel, path in present.items():
        try:
            info = path.stat()
        except OSError:
            continue
        if clock - info.st_mtime < config.watch.settle_seconds:
            continue  # still being written, perhaps: the next look takes it
        digest = sha(rel)
        if digest is None or (rel, digest) in enrolled:
            continue
        source_name = voice_source_name(rel)
        if any(j.source_name == source_name and j.sha256 == digest for j in jobs):
            continue  # queued, running, done (its sample is there) or failed (until the file changes)
        try:
            name = check_name(PurePosixPath(rel).parent.name)
        except VoiceError as exc:
            logger.warning("voices: {}: {}; not enrolled", rel, exc.message)
            continue
        # A dot-name: the spool recovery (which makes transcriptions of spooled files
        # without a job) never sees it; settle_enrol_copies tidies what a crash leaves.
        spooled = spool.new_slot(config.paths.spool, config.host) / (ENROL_COPY_PREFIX + PurePosixPath(rel).name)
        spooled.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spooled)
        with open(spooled, "rb") as copy:
            os.fsync(copy.fileno())  # durable before the job that points at it is recorded
        files.fsync_dir(spooled.parent)
        job_id = store.enqueue(source_name=source_name, spool_path=str(spooled),
                               output_stem=str(PurePosixPath(source_name).with_suffix("")), sha256=digest,
                               size_bytes=info.st_size, options={"voice": name}, priority=ENROL_PRIORITY,
                               max_attempts=config.jobs.max_attempts, task="enrol")
        report.queued.append(job_id)
        logger.info("job {} queued: enrol {} as voice {}", job_id, rel, name)
    return report


def settle_enrol_copies(config: "Config", store: "Store", *, now: float | None = None) -> int:
    """Enrolment copies in the spool whose job ended while its worker died before moving
    the copy on are archived or moved to failed/ now; a copy left without a job by a
    crash is removed (the folder's file is still there, and queued again). Returns how
    many were tidied."""
    clock = time.time() if now is None else now
    copies = [p for p in config.paths.spool.glob(f"*/{ENROL_COPY_PREFIX}*") if p.is_file()]
    if not copies:
        return 0
    rows = store.jobs_by_spool_path([str(p) for p in copies])
    tidied = 0
    for path in copies:
        job = rows.get(str(path))
        try:
            if job is None:
                if clock - path.stat().st_mtime >= ORPHAN_COPY_SECONDS:
                    path.unlink(missing_ok=True)
                    spool.remove_empty_parents(path.parent, config.paths.spool)
                    tidied += 1
            elif job.host in (None, store.host) and job.state == "done":
                results.retire_done(config, store, job.id, spool_path=path, source_name=job.source_name)
                tidied += 1
            elif job.host in (None, store.host) and job.state == "failed":
                spool.retire_failed(config, job)
                tidied += 1
        except OSError as exc:
            logger.warning("voices: cannot tidy the spool copy {}: {}", path, exc)
    return tidied


def drop_for_enrolment(config: "Config", name: str, recording: Path, *, file_name: str) -> Path:
    """Move a recording the caller hands over (an upload's temporary file) into
    paths.voices/<name>/ (the dashboard's enrolment: the daemon enrols it like any file
    dropped there; this process never loads a model). files.move renames, or copies
    under a dot-name and renames across file systems, so the folder scan never sees half
    a file."""
    name = check_name(name)
    safe = files.safe_file_name(file_name) or "recording"
    # The folder scan takes a file by the inbox's rules (_folder_files): one it would
    # leave alone is refused here rather than sit in the folder, never enrolled.
    reason = ignored_because(config, PurePosixPath(safe))
    if reason is not None:
        raise EnrolmentError(f"{safe}: not taken from paths.voices ({reason}); allowed extensions: "
                             f"{', '.join(config.watch.extensions)}")
    if Path(recording).stat().st_size == 0:
        raise EnrolmentError(f"{safe}: the file is empty")
    folder = config.paths.voices / name
    folder.mkdir(parents=True, exist_ok=True)
    return files.move(Path(recording), files.free_name(folder / safe))
