"""Whether every folder the configuration names can be used, checked in one place.

`spkd run` makes the folders it needs (`prepare_folders`) and `spkd doctor` asks the
same questions (`folder_problems` with `try_create`), so what doctor calls ready is
what run can start with. Some answers only an attempt gives (a file system that
refuses a new folder to root, as /sys does): doctor really makes each missing folder
and removes what it made again, leaving no trace; run, when a later folder cannot be
made, removes the (empty) folders it made itself in that call, so that nothing is made
unless every folder can be. A folder is usable when it is a directory (or can be made one:
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


def folder_problems(config: Config, *, try_create: bool = False) -> list[FolderProblem]:
    """Every configured folder that cannot be used, with the reason. `try_create`
    (`spkd doctor`): each missing folder that `spkd run` would make is made, to see
    that it can be, and everything made is removed again before this returns;
    otherwise only look."""
    made: list[Path] = []
    try:
        return _problems(config, create=try_create, made=made)
    finally:
        _unmake(made)


def prepare_folders(config: Config) -> None:
    """Make the folders `spkd run` writes into; raise ConfigError naming each folder that
    is not, and cannot become, a writable directory (one line). Nothing is made unless
    every folder can be: what this call made is removed again when a later one fails."""
    problems = folder_problems(config)
    if not problems:
        made: list[Path] = []
        problems = _problems(config, create=True, made=made)
        if problems:
            _unmake(made)
    if problems:
        raise ConfigError("; ".join(map(str, problems)))


def _problems(config: Config, *, create: bool, made: list[Path]) -> list[FolderProblem]:
    problems = []
    for key, path, written in configured_folders(config):
        reason = folder_problem(path, create=create and written, writable=written, made=made)
        if reason is not None:
            problems.append(FolderProblem(key, path, reason))
    return problems


def _unmake(made: list[Path]) -> None:
    """Remove the folders in `made` (made by this process, parents before children),
    deepest first; one that is no longer empty, or gone, stays as it is."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            pass
    made.clear()


def folder_problem(path: Path, *, create: bool = False, writable: bool = True,
                   made: list[Path] | None = None) -> str | None:
    """Why `path` cannot be the folder spkd needs there, or None: a directory, which
    spkd's user may write into when `writable`. A missing folder is fine when it could be
    made (`create`: it is made now, with its missing parents, each appended to `made`);
    one only read (models.dir) is then said missing by the check of what should be in it."""
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
        made = [] if made is None else made
        # the parents below the nearest one there, outermost first
        missing = [p for p in reversed(path.parents) if ancestor is None or len(p.parts) > len(ancestor.parts)]
        for folder in [*missing, path]:
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    return f"cannot be created: {folder} is a file, not a directory"
                continue
            except OSError as exc:
                return f"cannot be created: {_strerror(exc)}"
            made.append(folder)
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
