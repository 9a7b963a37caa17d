"""What lies in the inbox and is not a job yet, and why: `spkd status` and the dashboard.

Every file in the inbox is accounted for, computed here from the folder alone (the
daemon need not run) with the watcher's own rules:

- `settling`: a file the watcher will take, once its size and mtime have held still
  for `watch.settle_seconds` (and its sidecar's too); `due_at` is when, from its mtime;
- `empty`: a file of zero bytes, waited for until it has stayed empty for
  `watch.empty_fail_seconds` from its mtime, when it fails as `empty` (`due_at`);
- `ignored`: never taken, with the reason `daemon.intake.stability.ignored_because`
  gives (hidden, a partial-download pattern, an extension not in `watch.extensions`,
  a sidecar whose audio is not there); a hidden folder, or one named like a sidecar, is
  one entry: nothing in it is taken.

A sidecar whose audio lies beside it is no entry of its own: it travels with its audio,
whose entry names it.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from daemon import files
from daemon.config import Config
from daemon.intake.stability import folder_ignored_because, ignored_because
from daemon.jobs import spool
from daemon.progress import duration_text

__all__ = ["DEFAULT_LIMIT", "InboxFile", "InboxListing", "list_inbox"]

# Entries listed at most (an inbox is small; a hidden folder counts as one).
DEFAULT_LIMIT = 200


@dataclass(frozen=True)
class InboxFile:
    name: str  # relative to the inbox, as spkd shows names; a folder ends with "/"
    state: str  # settling, empty, ignored
    size_bytes: int | None
    modified_at: float  # the file's mtime (seconds since the epoch)
    # settling: when it counts as settled (the watcher takes it at its next look from
    # then on); empty: when it fails as `empty`; ignored: None
    due_at: float | None = None
    reason: str | None = None  # ignored: why
    note: str | None = None  # anything else worth knowing (its sidecar, a link that will fail)

    def due_in(self, now: float) -> float | None:
        return None if self.due_at is None else max(0.0, self.due_at - now)

    def detail(self, now: float, *, running: bool) -> str:
        """What will happen to it, and when, in words (`spkd status`, the dashboard);
        `running`: whether a daemon watches the inbox now."""
        due_in = self.due_in(now)
        later = "at the watcher's next look" if running else "once the daemon runs"
        if self.state == "ignored":
            text = f"never taken: {self.reason}"
        elif self.state == "empty" and due_in:
            at = dt.datetime.fromtimestamp(self.due_at or now).strftime("%H:%M:%S")
            text = f"fails as `empty` in {duration_text(due_in)} (at {at}) unless it gets content"
        elif self.state == "empty":
            text = f"fails as `empty` {later}"
        else:
            text = f"taken in ~{duration_text(due_in)}" if due_in else f"settled: taken {later}"
        return text + (f"; {self.note}" if self.note else "")

    def as_json(self, now: float) -> dict[str, Any]:
        due_in = self.due_in(now)
        return {**asdict(self), "due_in_seconds": None if due_in is None else round(due_in, 1)}


@dataclass(frozen=True)
class InboxListing:
    files: list[InboxFile] = field(default_factory=list)
    more: int = 0  # entries past the limit, not listed
    problem: str | None = None  # the inbox itself cannot be read
    now: float = 0.0  # when it was looked at

    def as_json(self) -> dict[str, Any]:
        return {"files": [f.as_json(self.now) for f in self.files], "more": self.more, "problem": self.problem}


def list_inbox(config: Config, *, now: float | None = None, limit: int = DEFAULT_LIMIT) -> InboxListing:
    """Every entry of the inbox that is not a job, sorted by name (see the module's
    docstring); at most `limit`, the rest counted in `more`."""
    now = time.time() if now is None else now
    inbox = config.paths.inbox
    try:
        if not stat.S_ISDIR(inbox.stat().st_mode):
            return InboxListing(problem=f"{inbox} is not a directory", now=now)
    except FileNotFoundError:
        return InboxListing(now=now)  # nothing dropped yet: spkd run makes it
    except OSError as exc:
        return InboxListing(problem=f"{inbox} cannot be read: {exc.strerror or exc}", now=now)
    found: list[InboxFile] = []
    problems: list[str] = []

    def unreadable(exc: OSError) -> None:
        problems.append(f"{exc.filename} cannot be read: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(inbox, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            rel = _relative(inbox, here / name)
            # the watcher never looks into these: one entry says so for all they hold
            reason = folder_ignored_because(rel)
            if reason is not None:
                dirnames.remove(name)
                entry = _folder_entry(here / name, rel, reason)
                if entry is not None:
                    found.append(entry)
        names = set(filenames)
        for name in filenames:
            entry = _entry(config, here / name, _relative(inbox, here / name), names)
            if entry is not None:
                found.append(entry)
    found.sort(key=lambda f: f.name)
    return InboxListing(files=found[:limit], more=max(0, len(found) - limit),
                        problem="; ".join(problems) or None, now=now)


def _relative(inbox: Path, path: Path) -> PurePosixPath:
    return PurePosixPath(path.relative_to(inbox).as_posix())


def _shown(rel: PurePosixPath) -> str:
    return files.readable_relative(rel.as_posix())


def _folder_entry(path: Path, rel: PurePosixPath, reason: str) -> InboxFile | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return InboxFile(name=_shown(rel) + "/", state="ignored", size_bytes=None, modified_at=st.st_mtime,
                     reason=f"{reason} (a folder: nothing in it is taken)")


def _entry(config: Config, path: Path, rel: PurePosixPath, siblings: set[str]) -> InboxFile | None:
    try:
        st = path.lstat()
    except OSError:
        return None  # gone meanwhile (taken)
    size = st.st_size if stat.S_ISREG(st.st_mode) else None
    reason = ignored_because(config, rel)
    if reason is not None:
        if rel.name.endswith(spool.SIDECAR_SUFFIX):
            audio = rel.name[: -len(spool.SIDECAR_SUFFIX)]
            if audio in siblings:
                if ignored_because(config, rel.with_name(audio)) is None:
                    return None  # it travels with its audio: that entry names it
                reason = f"sidecar of {audio}, which is ignored itself"
            else:
                reason = f"sidecar without its audio: taken with {audio} once that arrives"
        return InboxFile(name=_shown(rel), state="ignored", size_bytes=size, modified_at=st.st_mtime, reason=reason)
    note = None
    settled_from = st.st_mtime
    if stat.S_ISLNK(st.st_mode):
        note = "a symbolic link: it fails as `symlink` once settled (links are never followed)"
    elif not stat.S_ISREG(st.st_mode):
        note = f"{files.describe_mode(st.st_mode)}: it fails as `not_a_file` once settled"
    sidecar = rel.name + spool.SIDECAR_SUFFIX
    if sidecar in siblings:
        note = f"with its options in {sidecar}"
        try:  # the watcher also waits until the sidecar has settled
            settled_from = max(settled_from, path.with_name(sidecar).lstat().st_mtime)
        except OSError:
            pass
    if size == 0:
        return InboxFile(name=_shown(rel), state="empty", size_bytes=0, modified_at=st.st_mtime,
                         due_at=st.st_mtime + config.watch.empty_fail_seconds, note=note)
    return InboxFile(name=_shown(rel), state="settling", size_bytes=size, modified_at=st.st_mtime,
                     due_at=settled_from + config.watch.settle_seconds, note=note)
