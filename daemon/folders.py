"""Whether every folder the configuration names can be used, checked in one place.

`spkd run` makes the folders it needs (`prepare_folders`) and `spkd doctor` only looks
(`folder_problems`); both ask the same questions, so what doctor calls ready is what
run can start with. A folder is usable when it is a directory (or can be made one:
no regular file on its way, permission to create it, a writable file system) that
spkd's user may write into. The inbox counts as written to: taking a file out of it
is a rename, which needs write permission on the folder.

These are configuration errors, not crashes: each problem names the key, the path and
the reason on one line, and `prepare_folders` raises ConfigError (exit status 2).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path

from daemon.config import Config, PathsConfig
from daemon.errors import ConfigError

__all__ = ["FolderProblem", "configured_folders", "folder_problem", "folder_problems", "prepare_folders"]


@dataclass(frozen=True)
class FolderProblem:
    key: str  # the configuration key: paths.inbox, models.dir, database.url
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.path} {self.reason}"


def configured_folders(config: Config) -> list[tuple[str, Path, bool]]:
    """(key, folder, whether spkd makes it and writes into it) for every folder the configuration names: the
    paths section (the default SQLite database lives under paths.state) and the models
    folder, which the daemon only reads (`spkd models fetch` or `make-tiny` fill it)."""
    found = [(f"paths.{f.name}", getattr(config.paths, f.name), True) for f in fields(PathsConfig)]
    found.append(("models.dir", config.models.dir, False))
    return found


def folder_problems(config: Config, *, create: bool = False) -> list[FolderProblem]:
    """Every configured folder that cannot be used, with the reason. `create`: make the
    missing folders that `spkd run` needs (and report those that cannot be made);
    otherwise only look, changing nothing (`spkd doctor`)."""
    problems = []
    for key, path, written in configured_folders(config):
        reason = folder_problem(path, create=create and written, writable=written)
        if reason is not None:
            problems.append(FolderProblem(key, path, reason))
    return problems


def prepare_folders(config: Config) -> None:
    """Make the folders `spkd run` writes into; raise ConfigError naming each folder that
    is not, and cannot become, a writable directory (one line). Nothing is made unless
    every folder can be."""
    problems = folder_problems(config) or folder_problems(config, create=True)
    if problems:
        raise ConfigError("; ".join(map(str, problems)))


def folder_problem(path: Path, *, create: bool = False, writable: bool = True) -> str | None:
    """Why `path` cannot be the folder spkd needs there, or None: a directory, which
    spkd's user may write into when `writable`. A missing folder is fine when it could be
    made (`create`: it is made now); one only read (models.dir) is then said missing by
    the check of what should be in it."""
    try:
        st = path.stat()  # a link to a folder is a folder
    except FileNotFoundError:
        if path.is_symlink():
            return "is a symbolic link to nothing"
        st = None
    except NotADirectoryError:
        st = None  # a file on its way: said below
    except OSError as exc:
        return f"cannot be looked at: {_strerror(exc)}"
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            return "is not a directory (a file is in its place)"
        if writable and not os.access(path, os.W_OK | os.X_OK):
            return f"is not writable by this user ({_writable_why(path)})"
        return None
    ancestor = _nearest_existing(path)
    if ancestor is not None and not ancestor.is_dir():
        return f"cannot be created: {ancestor} is a file, not a directory"
    if writable and ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {ancestor} is not writable by this user ({_writable_why(ancestor)})"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot be created: {_strerror(exc)}"
    return None


def _nearest_existing(path: Path) -> Path | None:
    """The nearest of `path`'s parents that exists (as anything: a file too)."""
    for parent in path.parents:
        try:
            parent.lstat()
        except OSError:
            continue
        return parent
    return None


def _writable_why(path: Path) -> str:
    """A read-only file system, or the folder's permissions."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "a read-only file system"
    except OSError:
        pass
    return "its permissions"


def _strerror(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "a read-only file system"
    return exc.strerror.lower() if exc.strerror else str(exc)
