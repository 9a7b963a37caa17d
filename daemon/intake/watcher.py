"""The inbox watcher: finds dropped files, waits until each is stable, moves it into
the spool and records a job, in that order.

A file is *stable* once its size and mtime have not changed for `settle_seconds`,
it can be opened, and no process has it open for writing (on Linux the kernel says
so; elsewhere, and where it cannot tell, the container must look whole: an MP4's moov
index); any change restarts its clock. A WAV whose header is not final waits in any
case, until `watch.unfinished_wav_seconds` without growth (stability.unfinished_wav). Filesystem
events (watchdog) only tell us where to look; the periodic rescan and the start-up
scan catch what events miss (network shares, overflowed inotify queues), so
correctness never depends on an event arriving.

One file never stops the others: whatever goes wrong with a file (its name, its
sidecar, an exception nobody foresaw) fails that file's job with the reason and
moves it into failed/; a file that cannot even be moved stays where it is, is
logged (at most once a minute) and is looked at again once it changes.

Order matters for crash safety: hash, move into the spool, then insert the row.
A crash after the move leaves a spool file without a row, which the start-up
recovery (`recover_spool`, daemon.intake.recovery) turns into a job; nothing is ever
left half-taken in the inbox, and nothing is ever written into the inbox. Which
files are taken and when they have settled: daemon.intake.stability. A duplicate of
a finished job is done at once (daemon.jobs.results records it).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

from loguru import logger
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from daemon import files, options
from daemon.jobs import outputs, results, spool
from daemon.config import Config
from daemon.errors import (
    AudioError,
    DatabaseUnavailableError,
    EmptyFileError,
    NotRegularFileError,
    OptionsError,
    SpkdError,
    SymlinkError,
    TooShortError,
    UnreadableError,
    as_spkd_error,
)
from daemon.logs import Throttle
from daemon.intake.probe import ffprobe_available, incomplete_reason, probe
from daemon.intake.recovery import SpoolRecovery
from daemon.intake.stability import (EventHandler, StabilityTracker, folder_ignored_because, ignored_because,
                                     unfinished_wav)
from daemon.store import Store

__all__ = ["MIN_AUDIO_SECONDS", "UNREADABLE_FAIL_SECONDS", "Watcher"]

CHECK_INTERVAL_SECONDS = 0.25
# Shorter recordings fail at once: nothing useful can come out of them.
MIN_AUDIO_SECONDS = 0.5
# A file that cannot be opened (no permission yet: its owner may still fix that) fails
# as `unreadable` once it has been in the inbox this long.
UNREADABLE_FAIL_SECONDS = 60.0
# A line about one file that keeps coming back (waiting for its writer, failing again)
# is logged at most this often.
REPEAT_LOG_SECONDS = 60.0


class Watcher(SpoolRecovery):
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.inbox = config.paths.inbox
        self.tracker = StabilityTracker(config.watch.settle_seconds)
        self._stop = threading.Event()
        self._observer: Observer | PollingObserver | None = None
        self._inbox_identity: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._take_lock = threading.Lock()
        self._throttle = Throttle(REPEAT_LOG_SECONDS)
        # Files that could not even be moved out of the inbox, with their identity then:
        # left alone until they change.
        self._stuck: dict[Path, tuple[int, int] | None] = {}
        # Ignored files already logged, with (inode, reason) then: each is said once, and
        # again only when another file takes its name or its reason changes.
        self._ignored: dict[Path, tuple[int, str]] = {}
        self._ignored_lock = threading.Lock()

    def log_repeated(self, key: Any, message: str, *args: Any, level: str = "WARNING") -> None:
        """Log a line that may come back for the same `key` (a file failing at every
        look) at most once per REPEAT_LOG_SECONDS, saying how many were held back."""
        self._throttle.log(key, message, *args, level=level)

    # --- what to look at ---------------------------------------------------------------

    def ignore_reason(self, path: Path) -> str | None:
        """Why `path` is not a candidate, or None when it is one."""
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return "outside the inbox"
        return ignored_because(self.config, PurePosixPath(rel.as_posix()))

    def consider(self, path: Path) -> None:
        try:
            reason = self.ignore_reason(path)
            if reason is not None:
                self._log_ignored(path, reason)
                return
            if path in self._stuck:
                if files.file_identity(path) == self._stuck[path]:
                    return
                self._stuck.pop(path, None)
            self.tracker.touch(path)
        except Exception as exc:  # noqa: BLE001 - one odd path must not stop a scan or the observer
            self.log_repeated(("consider", path), "watcher: cannot look at {}: {}", path, exc)

    def _log_ignored(self, path: Path, reason: str) -> None:
        """One line per ignored file, not one per rescan or event. Hidden files (the
        temporary names of uploads and of rsync, .DS_Store) only at DEBUG: hiding a file
        is how one says it is not for spkd."""
        if reason == "outside the inbox":
            return
        try:
            seen = (path.lstat().st_ino, reason)
        except OSError:
            return
        with self._ignored_lock:
            if self._ignored.get(path) == seen:
                return
            self._ignored[path] = seen
        logger.log("DEBUG" if reason == "hidden" else "INFO", "ignoring {} in the inbox: {}",
                   files.readable_relative(path.relative_to(self.inbox).as_posix()), reason)

    def _forget_ignored(self, root: Path, present: set[Path]) -> None:
        """After a scan of `root`: ignored files no longer there are forgotten (one that
        comes back is said again)."""
        with self._ignored_lock:
            for path in [p for p in self._ignored if p not in present and (p == root or root in p.parents)]:
                del self._ignored[path]

    def scan(self, root: Path | None = None) -> int:
        """Walk the inbox (or a folder in it) and consider every file: the start-up scan
        and the periodic rescan."""
        root = root or self.inbox
        seen = 0
        present: set[Path] = set()

        def unreadable(exc: OSError) -> None:
            # A folder we cannot list (no permission, a path past the system's limit): its
            # files cannot be taken, so say so rather than pass over them in silence.
            if exc.filename is not None and Path(exc.filename) == self.inbox and not self.inbox.exists():
                return  # the inbox itself is gone: check_inbox says so
            self.log_repeated(("unlistable", exc.filename), "watcher: cannot look into {}: {}; its files stay "
                              "where they are", exc.filename, exc.strerror or exc)

        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
            dirnames[:] = [d for d in dirnames if folder_ignored_because(PurePosixPath(d)) is None]
            for name in filenames:
                self.consider(Path(dirpath) / name)
                present.add(Path(dirpath) / name)
                seen += 1
        self._forget_ignored(root, present)
        return seen

    # --- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        # Lets files.open_for_writing ask the kernel whether a file is still open for writing.
        files.ignore_lease_breaks()
        self._inbox_identity = _folder_identity(self.inbox)
        self._start_observer()
        self.scan()
        self._thread = threading.Thread(target=self._run, name="spkd-watcher", daemon=True)
        self._thread.start()
        logger.info("watching {} ({} observer, settle {:.1f} s)", self.inbox,
                    "polling" if self.config.watch.polling else "native", self.config.watch.settle_seconds)

    def _start_observer(self) -> None:
        observer_class = PollingObserver if self.config.watch.polling else Observer
        observer = observer_class()
        observer.schedule(EventHandler(self), str(self.inbox), recursive=True)
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._stop_observer()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_inbox()
                self.process_due()
            except Exception:  # the watcher thread must outlive any one bad file
                logger.exception("watcher: unexpected error")
            self._stop.wait(CHECK_INTERVAL_SECONDS)

    def check_inbox(self) -> None:
        """The inbox folder deleted and made again (or a share mounted over it) is a new
        folder that the observer does not watch: watch it again, and scan it. Native
        events would otherwise stop for good and only the periodic rescan would see files."""
        current = _folder_identity(self.inbox)
        if current is None:
            self.log_repeated("inbox-gone", "the inbox {} is gone; waiting for it to come back", self.inbox)
            self._inbox_identity = None
            return
        observer_alive = self._observer is not None and self._observer.is_alive()
        if current == self._inbox_identity and observer_alive:
            return
        logger.warning("the inbox {} {}; watching it again", self.inbox,
                       "is a new folder (deleted and made again)" if current != self._inbox_identity
                       else "lost its observer")
        self._stop_observer()
        self._start_observer()
        self._inbox_identity = current
        self._throttle.forget("inbox-gone")
        self.scan()

    def process_due(self) -> list[int]:
        taken: list[int] = []
        for path, age in self.tracker.due():
            try:
                job_id = self.take(path, age)
            except FileNotFoundError:
                self.tracker.forget(path)  # gone while we looked (moved away by its owner)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                job_id = self._take_failed(path, exc)
            if job_id is not None:
                taken.append(job_id)
        return taken

    def _take_failed(self, path: Path, exc: Exception) -> int | None:
        """`take` raised for a file still in the inbox: fail it with that reason. A file
        that cannot even be moved stays, logged, until it changes."""
        error = as_spkd_error(exc)
        logger.opt(exception=exc).debug("watcher: taking {} raised", path)
        self.tracker.forget(path)
        try:
            with self._take_lock:
                return self._spool_and_fail(path, self._spool_name(path), error)
        except FileNotFoundError:
            return None
        except Exception as again:  # noqa: BLE001
            try:
                self._stuck[path] = files.file_identity(path)
            except OSError:
                self._stuck[path] = None
            self.log_repeated(("stuck", path), "watcher: cannot take {} ({}: {}) nor move it into failed/ ({}); "
                              "it stays in the inbox until it changes", path, error.kind, error.message, again,
                              level="ERROR")
            return None

    def _spool_name(self, path: Path, *, with_sidecar: bool = False) -> str:
        """The inbox file's name in the spool, the database and every output
        (files.readable_relative): valid UTF-8, each component within the name limit,
        leaving room for the sidecar that travels beside it."""
        rel = path.relative_to(self.inbox).as_posix()
        return files.readable_relative(rel, reserve_bytes=len(spool.SIDECAR_SUFFIX) if with_sidecar else 0)

    # --- taking a file ---------------------------------------------------------------

    def take(self, path: Path, age_seconds: float = 0.0) -> int | None:
        """Move a stable file into the spool and record its job. Returns the job id, or
        None when the file is not ready after all (it stays under watch)."""
        with self._take_lock:
            try:
                st = path.lstat()
            except (FileNotFoundError, NotADirectoryError):
                self.tracker.forget(path)
                return None
            identity = (st.st_size, st.st_mtime_ns)
            if stat.S_ISLNK(st.st_mode):
                # Never follow a link: it may point anywhere on the machine.
                return self._spool_and_fail(path, self._spool_name(path),
                                            SymlinkError("symbolic links are not followed; drop the file itself"))
            if not stat.S_ISREG(st.st_mode):
                return self._spool_and_fail(path, self._spool_name(path), NotRegularFileError(
                    f"{files.describe_mode(st.st_mode)} is not a recording; only regular files are transcribed"))
            size = st.st_size
            if size == 0:
                # Its clock starts at its mtime, so that a restart of the daemon does not
                # start it again (`spkd status` says when it will fail from the same mtime);
                # the time it has been watched counts too, for an mtime in the future.
                empty_for = max(age_seconds, time.time() - st.st_mtime)
                # A writer that still holds the file open (a recorder buffering) is waited for.
                if empty_for >= self.config.watch.empty_fail_seconds and not files.open_for_writing(path):
                    return self._spool_and_fail(path, self._spool_name(path),
                                                EmptyFileError(f"the file stayed empty for {empty_for:.0f} s"))
                return None  # probably a copy that has not started writing yet
            sidecar = spool.sidecar_of(path)
            sidecar_identity = files.file_identity(sidecar)
            # A modification time in the future (a share's clock ahead of ours) counts as settled.
            if sidecar_identity is not None and \
                    0 <= time.time() - sidecar_identity[1] / 1e9 < self.config.watch.settle_seconds:
                return None  # the sidecar is still being written
            writing = files.open_for_writing(path)
            if writing:
                self._waiting(path, "it is still open for writing by another process")
                return None
            wav = unfinished_wav(path)
            unfinished = wav or incomplete_reason(path)
            if wav is not None:
                # Whoever has it open or not (a recorder reopens it for each burst): taken only
                # once its header is final, or after unfinished_wav_seconds without growth.
                quiet = time.time() - st.st_mtime
                quiet = quiet if quiet >= 0 else age_seconds  # an mtime in the future: the time watched
                if quiet < self.config.watch.unfinished_wav_seconds:
                    self._waiting(path, wav)
                    return None
                unfinished = f"{wav}; taken after {quiet:.0f} s without growth, with the audio it has"
            elif unfinished and writing is None and \
                    0 <= time.time() - st.st_mtime < self.config.watch.incomplete_wait_seconds:
                self._waiting(path, unfinished)
                return None  # where the kernel cannot tell, a container still missing its end is waited for
            try:
                with files.open_regular(path):
                    pass
            except SpkdError:
                raise  # replaced by a link or a FIFO meanwhile: fails as such
            except OSError as exc:
                if age_seconds >= UNREADABLE_FAIL_SECONDS:
                    return self._spool_and_fail(path, self._spool_name(path), UnreadableError(
                        f"cannot be opened for {age_seconds:.0f} s: {exc.strerror or exc}"))
                logger.debug("not yet openable: {} ({})", path, exc)
                return None
            digest = files.sha256_file(path)
            if files.file_identity(path) != identity:
                self.tracker.touch(path)  # changed while hashing: not stable after all
                return None
            self.tracker.forget(path)
            self._throttle.forget(("waiting", path))
            sidecar_problem = None
            if sidecar_identity is not None and not _is_regular(sidecar):
                sidecar_problem = OptionsError(f"{sidecar.name}: is {_describe(sidecar)}, not a sidecar file")
                sidecar_identity = None  # it stays in the inbox; the audio fails with the reason
            source_name = self._spool_name(path, with_sidecar=sidecar_identity is not None)
            target = self._move_in(path, source_name)
            try:
                if sidecar_problem is not None:
                    return self._fail_spooled(target, source_name, sidecar_problem, sha256=digest, size_bytes=size)
                if sidecar_identity is not None:
                    try:
                        files.move(sidecar, spool.sidecar_of(target))
                    except FileNotFoundError:
                        logger.warning("{}: its sidecar {} vanished before it could be taken; no options", path,
                                       sidecar.name)
                job_id = self.enqueue_spooled(target, source_name=source_name, sha256=digest, size_bytes=size)
            except DatabaseUnavailableError as exc:
                # The database is out of reach (a PostgreSQL server restarting): the file
                # waits in the spool, and the next rescan's recovery records its job.
                self.log_repeated(("unrecorded-db", source_name), "{} is in the spool but its job could not be "
                                  "recorded ({}); the next rescan will record it", source_name, exc, level="ERROR")
                return None
            except Exception as exc:  # noqa: BLE001 - the file is ours now: fail its job with the reason
                return self._fail_spooled(target, source_name, exc, sha256=digest, size_bytes=size)
            if unfinished:
                self._warn(job_id, source_name, unfinished)
            return job_id

    def _waiting(self, path: Path, why: str) -> None:
        self.log_repeated(("waiting", path), "waiting for {}: {}", path.relative_to(self.inbox).as_posix(), why,
                          level="INFO")

    def _warn(self, job_id: int, source_name: str, message: str) -> None:
        """Something about the job's file the user should know (it looked incomplete)."""
        try:
            self.store.add_event(job_id, "warning", message=message)
        except DatabaseUnavailableError:
            pass  # the warning is in the log line below
        logger.warning("job {}: {}: {}", job_id, source_name, message)

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

    def _spool_and_fail(self, path: Path, source_name: str, error: SpkdError) -> int | None:
        self.tracker.forget(path)
        target = self._move_in(path, source_name)
        return self._fail_spooled(target, source_name, error)

    def _fail_spooled(self, spool_path: Path, source_name: str, exc: BaseException, *, sha256: str | None = None,
                      size_bytes: int | None = None) -> int | None:
        """Fail the job of a file already in the spool with `exc` as its reason. When not
        even that can be recorded, the file waits in the spool: the next rescan's
        recovery tries again."""
        error = as_spkd_error(exc)
        if not isinstance(exc, SpkdError):
            logger.opt(exception=exc).debug("{}: traceback", source_name)
        try:
            return self._fail_early(spool_path, source_name, self._output_stem(source_name), sha256, size_bytes,
                                    error)
        except Exception as again:  # noqa: BLE001
            self.log_repeated(("unrecorded", spool_path), "{} is in the spool and failed ({}: {}), but that could not "
                              "be recorded ({}); the next rescan tries again", source_name, error.kind,
                              error.message, again, level="ERROR")
            return None

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
            job_options = options.read_sidecar(sidecar) if files.exists(sidecar) else {}
        except OptionsError as exc:
            return self._fail_early(spool_path, source_name, output_stem, sha256, size_bytes, exc)
        audio_seconds: float | None = None
        channels = job_options.get("channels", self.config.audio.channels)
        if ffprobe_available():
            try:
                found = probe(spool_path)
                audio_seconds = found.duration_seconds
                if audio_seconds is not None and audio_seconds < MIN_AUDIO_SECONDS:
                    raise TooShortError(f"too short: {audio_seconds:.2f} s of audio (at least {MIN_AUDIO_SECONDS} s "
                                        "needed)")
                if found.channels is not None:  # else the engine checks after decoding
                    options.check_channels(channels, found.channels, source=source_name)
            except (AudioError, OptionsError) as exc:
                return self._fail_early(spool_path, source_name, output_stem, sha256, size_bytes, exc,
                                        job_options)
        key = options.dedup_key(sha256, {"channels": channels, **job_options})
        # The same audio with the same options was transcribed before: this file takes
        # that result (done at once, never queued). A twin still queued or running is
        # not done yet: this job is queued, and the worker asks again when it claims it.
        reuse = results.reusable(self.config, self.store, key, audio_path=spool_path, source_name=source_name,
                                 sha256=sha256)
        if reuse is not None:
            job_id = results.record_reused(self.config, self.store, reuse, spool_path=spool_path,
                                           source_name=source_name, output_stem=output_stem, sha256=sha256,
                                           size_bytes=size_bytes, options=job_options, dedup_key=key)
            logger.info("job {} done: {} is a duplicate of job {}; reused its transcript", job_id, source_name,
                        reuse.twin.id)
            return job_id
        job_id = self.store.enqueue(
            source_name=source_name, spool_path=str(spool_path), output_stem=output_stem, sha256=sha256,
            size_bytes=size_bytes, options=job_options, priority=job_options.get("priority", 0),
            max_attempts=self.config.jobs.max_attempts, audio_seconds=audio_seconds, dedup_key=key,
        )
        logger.info("job {} queued: {} ({} bytes, {} s of audio{})", job_id, source_name, size_bytes,
                    f"{audio_seconds:.1f}" if audio_seconds else "?",
                    f", options {job_options}" if job_options else "")
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
        so two inputs never write over each other's outputs (`a.summary.m4a` too, whose
        `a.summary.md` would be `a.m4a`'s summary: outputs.clashing_stems)."""
        rel = PurePosixPath(source_name)
        stem = rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()
        # Each output is the stem + its format's extension (the longest: `.sentences.txt`).
        room = files.NAME_MAX_BYTES - outputs.EXTENSION_MAX_BYTES
        # Every candidate (`a`, `a (2)`, …) starts with the first, and every stem that can
        # clash with one starts with the shortest that clashes with the first.
        prefix = min(outputs.clashing_stems(files.fit_stem(stem, max_bytes=room)), key=len)
        used = self.store.output_stems_in_use(prefix)
        return files.numbered(stem, lambda name: not used.isdisjoint(outputs.clashing_stems(name)), max_bytes=room)


def _folder_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when there is none at `path`."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _describe(path: Path) -> str:
    try:
        return files.describe_mode(path.lstat().st_mode)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
