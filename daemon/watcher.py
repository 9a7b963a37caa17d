"""The inbox watcher: finds dropped files, waits until each is stable, moves it into
the spool and records a job, in that order.

A file is *stable* once its size and mtime have not changed for `settle_seconds`
and it can be opened; any change restarts its clock. Filesystem events (watchdog)
only tell us where to look; the periodic rescan and the start-up scan catch what
events miss (network shares, overflowed inotify queues), so correctness never
depends on an event arriving.

Order matters for crash safety: hash, move into the spool, then insert the row.
A crash after the move leaves a spool file without a row, which the start-up
recovery (`recover_spool`) turns into a job; nothing is ever left half-taken in
the inbox, and nothing is ever written into the inbox.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from loguru import logger
from sqlalchemy.exc import InterfaceError, OperationalError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from daemon import files, options, outputs, spool
from daemon.config import Config
from daemon.errors import AudioError, OptionsError, SpkdError
from daemon.probe import ffprobe_available, probe
from daemon.store import Store
from daemon.transcript import Source

CHECK_INTERVAL_SECONDS = 0.25
# Shorter recordings fail at once: nothing useful can come out of them.
MIN_AUDIO_SECONDS = 0.5
# Another host's spool file without a job row is adopted at start only once it is this
# old: that host died between moving it in and recording it, and has not come back.
FOREIGN_ORPHAN_SECONDS = 3600.0


@dataclass
class _Pending:
    identity: tuple[int, int]
    since: float
    first_seen: float


class StabilityTracker:
    """Size + mtime settling. Thread-safe: events arrive on the observer's thread."""

    def __init__(self, settle_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_seconds = settle_seconds
        self._clock = clock
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()

    def touch(self, path: Path) -> None:
        """Something happened to `path`: (re)start watching it."""
        identity = files.file_identity(path)
        now = self._clock()
        with self._lock:
            if identity is None:
                self._pending.pop(path, None)
                return
            current = self._pending.get(path)
            if current is None:
                self._pending[path] = _Pending(identity, now, now)
            elif current.identity != identity:
                current.identity, current.since = identity, now

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def due(self) -> list[tuple[Path, float]]:
        """Paths whose identity has held still for `settle_seconds` (with their first-seen
        age), re-reading each so a file still growing is never returned."""
        now = self._clock()
        with self._lock:
            items = list(self._pending.items())
        ready: list[tuple[Path, float]] = []
        for path, pending in items:
            identity = files.file_identity(path)
            with self._lock:
                if identity is None:
                    self._pending.pop(path, None)
                    continue
                if identity != pending.identity:
                    pending.identity, pending.since = identity, now
                    continue
            if now - pending.since >= self.settle_seconds:
                ready.append((path, now - pending.first_seen))
        return ready


class _EventHandler(FileSystemEventHandler):
    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                # A folder moved in whole brings files that raise no events of their own.
                self.watcher.scan(Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path)))
            return
        if event.event_type == "moved":
            self.watcher.consider(Path(os.fsdecode(event.dest_path)))
            self.watcher.tracker.forget(Path(os.fsdecode(event.src_path)))
        elif event.event_type in ("created", "modified", "closed"):
            self.watcher.consider(Path(os.fsdecode(event.src_path)))
        elif event.event_type == "deleted":
            self.watcher.tracker.forget(Path(os.fsdecode(event.src_path)))


class Watcher:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.inbox = config.paths.inbox
        self.tracker = StabilityTracker(config.watch.settle_seconds)
        self._extensions = {e.lower().lstrip(".") for e in config.watch.extensions}
        self._stop = threading.Event()
        self._observer: Observer | PollingObserver | None = None
        self._thread: threading.Thread | None = None
        self._take_lock = threading.Lock()

    # --- what to look at ---------------------------------------------------------------

    def ignore_reason(self, path: Path) -> str | None:
        """Why `path` is not a candidate, or None when it is one."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return "outside the inbox"
        for part in rel.parts:
            if part.startswith("."):
                return "hidden"
        name = rel.name
        if name.endswith(spool.SIDECAR_SUFFIX):
            return "sidecar"
        for pattern in self.config.watch.ignore:
            if fnmatch.fnmatchcase(name, pattern):
                return f"matches ignore pattern {pattern!r}"
        if PurePosixPath(name).suffix.lower().lstrip(".") not in self._extensions:
            return "extension not in watch.extensions"
        return None

    def consider(self, path: Path) -> None:
        if self.ignore_reason(path) is None:
            self.tracker.touch(path)

    def scan(self, root: Path | None = None) -> int:
        """Walk the inbox (or a folder in it) and consider every file: the start-up scan
        and the periodic rescan."""
        root = root or self.inbox
        seen = 0
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                self.consider(Path(dirpath) / name)
                seen += 1
        return seen

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        observer_class = PollingObserver if self.config.watch.polling else Observer
        self._observer = observer_class()
        self._observer.schedule(_EventHandler(self), str(self.inbox), recursive=True)
        self._observer.start()
        self.scan()
        self._thread = threading.Thread(target=self._run, name="spkd-watcher", daemon=True)
        self._thread.start()
        logger.info("watching {} ({} observer, settle {:.1f} s)", self.inbox,
                    "polling" if self.config.watch.polling else "native", self.config.watch.settle_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.process_due()
            except Exception:  # the watcher thread must outlive any one bad file
                logger.exception("watcher: unexpected error")
            self._stop.wait(CHECK_INTERVAL_SECONDS)

    def process_due(self) -> list[int]:
        taken: list[int] = []
        for path, age in self.tracker.due():
            try:
                job_id = self.take(path, age)
            except FileNotFoundError:
                self.tracker.forget(path)  # gone while we looked (moved away by its owner)
                continue
            except Exception:  # noqa: BLE001 - one bad file must not stop the others
                logger.exception("watcher: cannot take {}; will look again", path)
                continue
            if job_id is not None:
                taken.append(job_id)
        return taken

    # --- taking a file ---------------------------------------------------------------

    def take(self, path: Path, age_seconds: float = 0.0) -> int | None:
        """Move a stable file into the spool and record its job. Returns the job id, or
        None when the file is not ready after all (it stays under watch)."""
        with self._take_lock:
            identity = files.file_identity(path)
            if identity is None and not path.is_symlink():
                self.tracker.forget(path)
                return None
            source_name = path.relative_to(self.inbox).as_posix()
            if path.is_symlink():
                # Never follow a link: it may point anywhere on the machine.
                return self._spool_and_fail(path, source_name, "symlink",
                                            "symbolic links are not followed; drop the file itself")
            size = identity[0] if identity else 0
            if size == 0:
                if age_seconds >= self.config.watch.empty_fail_seconds:
                    return self._spool_and_fail(path, source_name, "empty",
                                                f"the file stayed empty for {age_seconds:.0f} s")
                return None  # probably a copy that has not started writing yet
            sidecar = spool.sidecar_of(path)
            sidecar_identity = files.file_identity(sidecar)
            if sidecar_identity is not None and \
                    time.time() - sidecar_identity[1] / 1e9 < self.config.watch.settle_seconds:
                return None  # the sidecar is still being written
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                logger.debug("not yet openable: {} ({})", path, exc)
                return None
            digest = files.sha256_file(path)
            if files.file_identity(path) != identity:
                self.tracker.touch(path)  # changed while hashing: not stable after all
                return None
            self.tracker.forget(path)
            target = self._move_in(path, source_name)
            if sidecar_identity is not None:
                try:
                    files.move(sidecar, spool.sidecar_of(target))
                except FileNotFoundError:
                    logger.warning("{}: its sidecar {} vanished before it could be taken; no options", path,
                                   sidecar.name)
            try:
                return self.enqueue_spooled(target, source_name=source_name, sha256=digest, size_bytes=size)
            except (OperationalError, InterfaceError) as exc:
                # The database is out of reach (a PostgreSQL server restarting): the file
                # waits in the spool, and the next rescan's recovery records its job.
                logger.error("{} is in the spool but its job could not be recorded ({}); the next rescan "
                             "will record it", source_name, str(getattr(exc, "orig", exc)).strip().splitlines()[0])
                return None

    def _move_in(self, path: Path, source_name: str) -> Path:
        """Move an inbox file into a fresh spool folder of this host.

        The rename is the arbiter between hosts watching one shared inbox: of several
        renames of the same file only one succeeds, the others raise FileNotFoundError
        (the file is gone: another host took it), which the caller treats like a file
        its owner moved away. The sidecar moves only after the file itself, so a host
        that lost the race never takes it either."""
        target = spool.new_slot(self.config.paths.spool, self.store.host) / source_name
        try:
            files.move(path, target)
        except FileNotFoundError:
            spool.remove_empty_parents(target.parent, self.config.paths.spool)
            logger.debug("{} is gone (taken by another host, or moved away)", path)
            raise
        return target

    def _spool_and_fail(self, path: Path, source_name: str, kind: str, message: str) -> int:
        self.tracker.forget(path)
        target = self._move_in(path, source_name)
        return self._fail_early(target, source_name, self._output_stem(source_name), None, None,
                                AudioError(message, kind=kind))

    def enqueue_spooled(self, spool_path: Path, *, source_name: str, sha256: str | None = None,
                        size_bytes: int | None = None) -> int:
        """Record a job for a file already in the spool (fresh, or found by recovery)."""
        if sha256 is None:
            sha256 = files.sha256_file(spool_path)
        if size_bytes is None:
            size_bytes = spool_path.stat().st_size
        output_stem = self._output_stem(source_name)
        sidecar = spool.sidecar_of(spool_path)
        try:
            job_options = options.read_sidecar(sidecar) if sidecar.exists() else {}
        except SpkdError as exc:
            return self._fail_early(spool_path, source_name, output_stem, sha256, size_bytes, exc)
        audio_seconds: float | None = None
        channels = job_options.get("channels", self.config.audio.channels)
        if ffprobe_available():
            try:
                found = probe(spool_path)
                audio_seconds = found.duration_seconds
                if audio_seconds is not None and audio_seconds < MIN_AUDIO_SECONDS:
                    raise AudioError(f"too short: {audio_seconds:.2f} s of audio (at least {MIN_AUDIO_SECONDS} s "
                                     "needed)", kind="too_short")
                if found.channels is not None:  # else the engine checks after decoding
                    options.check_channels(channels, found.channels, source=source_name)
            except (AudioError, OptionsError) as exc:
                return self._fail_early(spool_path, source_name, output_stem, sha256, size_bytes, exc,
                                        job_options)
        key = options.dedup_key(sha256, {"channels": channels, **job_options})
        reused = self._reuse(spool_path, source_name=source_name, output_stem=output_stem, sha256=sha256,
                             size_bytes=size_bytes, job_options=job_options, key=key)
        if reused is not None:
            return reused
        job_id = self.store.enqueue(
            source_name=source_name, spool_path=str(spool_path), output_stem=output_stem, sha256=sha256,
            size_bytes=size_bytes, options=job_options, priority=job_options.get("priority", 0),
            max_attempts=self.config.jobs.max_attempts, audio_seconds=audio_seconds, dedup_key=key,
        )
        logger.info("job {} queued: {} ({} bytes, {} s of audio{})", job_id, source_name, size_bytes,
                    f"{audio_seconds:.1f}" if audio_seconds else "?",
                    f", options {job_options}" if job_options else "")
        return job_id

    def _reuse(self, spool_path: Path, *, source_name: str, output_stem: str, sha256: str, size_bytes: int,
               job_options: dict[str, Any], key: str | None) -> int | None:
        """The same audio with the same options was transcribed before: render its stored
        transcript for this file instead of transcribing again."""
        twin = self.store.done_twin(key)
        transcript = outputs.load_transcript(self.config, twin.id) if twin is not None else None
        if twin is None or transcript is None:
            return None
        transcript = transcript.replace(source=Source(name=source_name, sha256=sha256,
                                                      duration_seconds=transcript.audio_seconds))
        written = outputs.publish(self.config, output_stem=output_stem, transcript=transcript,
                                  formats=job_options.get("formats") or self.config.output.formats)
        job_id = self.store.add_reused(source_name=source_name, spool_path=str(spool_path), output_stem=output_stem,
                                       sha256=sha256, size_bytes=size_bytes, options=job_options, dedup_key=key,
                                       twin=twin, outputs=written, audio_seconds=transcript.audio_seconds,
                                       speakers=len(transcript.speakers))
        outputs.save_transcript(self.config, job_id, transcript)
        spool.archive(spool_path=spool_path, spool_root=self.config.paths.spool,
                      archive_root=self.config.paths.archive, source_name=source_name)
        logger.info("job {} done: {} is a duplicate of job {}; reused its transcript", job_id, source_name, twin.id)
        return job_id

    def _fail_early(self, spool_path: Path, source_name: str, output_stem: str, sha256: str | None,
                    size_bytes: int | None, error: SpkdError, job_options: dict[str, Any] | None = None) -> int:
        job_id = self.store.add_failed(source_name=source_name, spool_path=str(spool_path), output_stem=output_stem,
                                       sha256=sha256, size_bytes=size_bytes, kind=error.kind, message=error.message,
                                       options=job_options)
        spool.fail(spool_path=spool_path, spool_root=self.config.paths.spool, failed_root=self.config.paths.failed,
                   source_name=source_name, job_id=job_id, sha256=sha256, error_kind=error.kind,
                   error_message=error.message, attempts=0)
        logger.warning("job {} failed: {} ({}: {})", job_id, source_name, error.kind, error.message)
        return job_id

    def _output_stem(self, source_name: str) -> str:
        """`team/a.m4a` -> `team/a`; a stem another job already uses gets ` (2)`, ` (3)`, …
        so two inputs never write over each other's outputs."""
        rel = PurePosixPath(source_name)
        stem = rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()
        used = self.store.output_stems_in_use(stem)
        if stem not in used:
            return stem
        n = 2
        while f"{stem} ({n})" in used:
            n += 1
        return f"{stem} ({n})"

    # --- recovery ---------------------------------------------------------------------

    def recover_spool(self) -> list[int]:
        """Spool files without a job row (a supervisor died between move and insert).

        With several hosts sharing one spool, a file another host has just moved in
        has no row *yet*: its watcher is about to insert it. So at start a host takes
        only the orphans in its own token folders (`<time>-<host>-<random>`; its own
        watcher is not running yet, so none of them is in flight), plus those of any
        host that are older than FOREIGN_ORPHAN_SECONDS (that host died and stayed
        down). It claims each by renaming the token folder to a fresh one of its own:
        like the inbox move, only one rename succeeds, so two hosts starting together
        never both enqueue the same orphan.

        Also run after every periodic rescan (under the lock that `take` holds), so a file
        whose row could not be inserted (the database out of reach) is recorded once
        the database is back, without waiting for a restart."""
        with self._take_lock:  # none of this host's own files is in flight meanwhile
            return self._recover_spool()

    def _recover_spool(self) -> list[int]:
        spool_root = self.config.paths.spool
        spooled = spool.spooled_files(spool_root)
        known = {str(Path(p)) for p in self.store.jobs_by_spool_path(str(p) for p in spooled)}
        recovered: list[int] = []
        for path in spooled:
            if str(path) in known:
                continue
            token = spool.token_of(spool_root, path)
            if len(path.relative_to(spool_root).parts) < 2:
                continue  # not in a token folder: not ours
            if not spool.owned_by(token, self.store.host):
                created = spool.token_info(token).created
                if created is None or time.time() - created < FOREIGN_ORPHAN_SECONDS:
                    continue  # another host's file in flight (or recovered by that host when it restarts)
            source_name = spool.source_name_of(spool_root, path)
            fresh = spool.new_slot(spool_root, self.store.host)
            try:
                os.rename(spool_root / token, fresh)
            except FileNotFoundError:
                continue  # another host claimed it first
            adopted = fresh / source_name
            logger.warning("recovering spooled file without a job: {} (from {})", adopted, path)
            self._recover_sidecar(adopted, source_name)
            recovered.append(self.enqueue_spooled(adopted, source_name=source_name))
        return recovered

    def _recover_sidecar(self, spooled: Path, source_name: str) -> None:
        """A crash between moving a file and moving its sidecar leaves the sidecar in the
        inbox; bring it along unless a new file of the same name is waiting there."""
        sidecar = spool.sidecar_of(spooled)
        try:
            left = files.inside(self.inbox, source_name)
        except ValueError:
            return
        left_sidecar = spool.sidecar_of(left)
        if sidecar.exists() or left.exists() or not left_sidecar.exists():
            return
        try:
            files.move(left_sidecar, sidecar)
        except FileNotFoundError:
            pass
