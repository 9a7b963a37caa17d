"""Which inbox files the watcher takes, and when each has settled.

`ignored_because` is the one rule for what is left alone (the watcher, the dashboard's
upload, and the voices folder follow it). A file is *settled* once its size and mtime
have not changed for `settle_seconds` (`StabilityTracker`); any change restarts its
clock. A WAV whose header is not final yet (`unfinished_wav`: placeholder sizes, or
sizes that disagree with the file) is still being written, whoever has it open or
not (a recorder may reopen the file for each burst): it settles only after
`watch.unfinished_wav_seconds` without a change (the watcher, daemon.intake.watcher). Filesystem events (watchdog, `EventHandler`) only tell the watcher where to
look: the periodic rescan and the start-up scan catch what events miss, so
correctness never depends on an event arriving.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from daemon import files
from daemon.config import Config
from daemon.intake.probe import incomplete_reason
from daemon.jobs import spool

if TYPE_CHECKING:
    from daemon.intake.watcher import Watcher

__all__ = ["EventHandler", "StabilityTracker", "folder_ignored_because", "ignored_because", "unfinished_wav"]


@dataclass
class _Pending:
    identity: tuple[int, int]
    since: float
    first_seen: float


def folder_ignored_because(rel: PurePosixPath) -> str | None:
    """Why the watcher never looks into the inbox folder at `rel` (relative to the
    inbox), or None: the rule for folders, part of `ignored_because`."""
    if any(part.startswith(".") for part in rel.parts):
        return "hidden"
    if any(part.endswith(spool.SIDECAR_SUFFIX) for part in rel.parts):
        return "named like a sidecar"
    return None


def ignored_because(config: Config, rel: PurePosixPath) -> str | None:
    """Why the watcher leaves the inbox file at `rel` (relative to the inbox) alone, or
    None when it takes it: the one rule, for the watcher, uploads, the voices folder and
    the inbox listing (daemon.intake.listing)."""
    name = rel.name
    if name.startswith("."):
        return "hidden"
    folder = folder_ignored_because(rel.parent)
    if folder is not None:
        return "hidden" if folder == "hidden" else f"inside a folder {folder}"
    if name.endswith(spool.SIDECAR_SUFFIX):
        return "sidecar"
    for pattern in config.watch.ignore:
        if fnmatch.fnmatchcase(name, pattern):
            return f"matches ignore pattern {pattern!r}"
    extensions = {e.lower().lstrip(".") for e in config.watch.extensions}
    suffix = PurePosixPath(name).suffix.lower()
    if suffix.lstrip(".") not in extensions:
        return f"extension not in watch.extensions ({suffix or 'none'})"
    return None


def unfinished_wav(path: Path) -> str | None:
    """Why a WAV file's header says it is not finished yet, or None (final, or not a
    RIFF/WAVE file): sizes a writer puts there until it knows the real ones (0,
    0xFFFFFFFF), sizes that promise more than the file holds, or a RIFF size that
    leaves more of the file outside it than a pad byte (audio appended since the header
    was written)."""
    import struct

    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
        size = path.stat().st_size
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    reason = incomplete_reason(path)
    if reason is not None:
        return reason
    riff_end = struct.unpack("<I", head[4:8])[0] + 8
    if riff_end < size - 1:
        return f"the WAV header gives {riff_end} bytes, the file has {size} (still being written)"
    return None


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


class EventHandler(FileSystemEventHandler):
    """Filesystem events, handed to the watcher: where to look, never what to take."""

    def __init__(self, watcher: "Watcher") -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception as exc:  # noqa: BLE001 - an exception here would end the observer's thread
            self.watcher.log_repeated(("event", event.src_path), "watcher: cannot handle {} of {}: {}",
                                      event.event_type, event.src_path, exc)

    def _dispatch(self, event: FileSystemEvent) -> None:
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
