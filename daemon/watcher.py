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
from typing import Callable

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from daemon import files, spool
from daemon.config import Config
from daemon.errors import AudioError
from daemon.probe import ffprobe_available, probe
from daemon.store import Store

CHECK_INTERVAL_SECONDS = 0.25


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
        self._rejected: dict[Path, tuple[int, int] | None] = {}

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
        for path, _age in self.tracker.due():
            job_id = self.take(path)
            if job_id is not None:
                taken.append(job_id)
        return taken

    # --- taking a file ---------------------------------------------------------------

    def take(self, path: Path) -> int | None:
        """Move a stable file into the spool and record its job. Returns the job id."""
        with self._take_lock:
            self.tracker.forget(path)
            identity = files.file_identity(path)
            if identity is None:
                return None
            if path.is_symlink():
                return self._reject(path, identity, "symbolic links are not followed")
            size, _mtime = identity
            if size == 0:
                # Probably a copy that has not started writing: look again later.
                self.tracker.touch(path)
                return None
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                logger.debug("not yet openable: {} ({})", path, exc)
                self.tracker.touch(path)
                return None
            source_name = path.relative_to(self.inbox).as_posix()
            digest = files.sha256_file(path)
            if files.file_identity(path) != identity:
                self.tracker.touch(path)  # changed while hashing: not stable after all
                return None
            target = spool.new_slot(self.config.paths.spool) / source_name
            files.move(path, target)
            return self.enqueue_spooled(target, source_name=source_name, sha256=digest, size_bytes=size)

    def _reject(self, path: Path, identity: tuple[int, int] | None, reason: str) -> None:
        if self._rejected.get(path) != identity:
            self._rejected[path] = identity
            logger.warning("ignored {}: {}", path, reason)
        return None

    def enqueue_spooled(self, spool_path: Path, *, source_name: str, sha256: str | None = None,
                        size_bytes: int | None = None) -> int:
        """Record a job for a file already in the spool (fresh, or found by recovery)."""
        if sha256 is None:
            sha256 = files.sha256_file(spool_path)
        if size_bytes is None:
            size_bytes = spool_path.stat().st_size
        output_stem = self._output_stem(source_name)
        audio_seconds: float | None = None
        if ffprobe_available():
            try:
                audio_seconds = probe(spool_path).duration_seconds
            except AudioError as exc:
                return self._fail_early(spool_path, source_name, output_stem, sha256, size_bytes, exc)
        job_id = self.store.enqueue(
            source_name=source_name, spool_path=str(spool_path), output_stem=output_stem, sha256=sha256,
            size_bytes=size_bytes, max_attempts=self.config.jobs.max_attempts, audio_seconds=audio_seconds,
        )
        logger.info("job {} queued: {} ({} bytes, {} s of audio)", job_id, source_name, size_bytes,
                    f"{audio_seconds:.1f}" if audio_seconds else "?")
        return job_id

    def _fail_early(self, spool_path: Path, source_name: str, output_stem: str, sha256: str, size_bytes: int,
                    error: AudioError) -> int:
        job_id = self.store.add_failed(source_name=source_name, spool_path=str(spool_path), output_stem=output_stem,
                                       sha256=sha256, size_bytes=size_bytes, kind=error.kind, message=error.message)
        spool.fail(spool_path=spool_path, spool_root=self.config.paths.spool, failed_root=self.config.paths.failed,
                   source_name=source_name,
                   info={"job_id": job_id, "source": source_name, "error_kind": error.kind,
                         "error_message": error.message, "attempts": 0})
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
        """Spool files without a job row (the supervisor died between move and insert)."""
        known = {str(Path(p)) for p in self.store.known_spool_paths()}
        recovered: list[int] = []
        for path in spool.spooled_files(self.config.paths.spool):
            if str(path) in known:
                continue
            source_name = spool.source_name_of(self.config.paths.spool, path)
            logger.warning("recovering spooled file without a job: {}", path)
            recovered.append(self.enqueue_spooled(path, source_name=source_name))
        return recovered
