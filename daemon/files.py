"""Moving and writing files so that a crash at any instant leaves either the old or the
new state on disk, never a half-written or vanished file.

Used by the watcher (inbox -> spool), the worker (spool -> archive / failed) and the
supervisor (spool -> failed, for jobs whose worker died once too often).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Callable

__all__ = ["HASH_CHUNK_BYTES", "atomic_write", "file_identity", "free_name", "fsync_dir", "inside", "move",
           "nearest_existing", "numbered", "safe_relative", "sha256_file"]

HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem; the rename itself still happened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, sync_dir: bool = True) -> None:
    """Write to a temp name beside `path`, fsync, rename into place, fsync the folder
    (callers writing several files into one folder sync it once themselves)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # Mode 0o666 minus the umask: the same permissions as a plain open().
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def move(src: Path, dst: Path) -> Path:
    """Move a file, by rename where possible, else copy + fsync + unlink (across
    filesystems: the source is removed only once the copy is durable)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.partial")
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, HASH_CHUNK_BYTES)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
        try:
            os.unlink(src)
        except FileNotFoundError:
            # Someone else (another host sharing the inbox) moved the source meanwhile:
            # theirs is the one that counts, so ours goes, and the caller sees the file gone.
            dst.unlink(missing_ok=True)
            raise
    fsync_dir(dst.parent)
    return dst


def numbered(stem: str, taken: Callable[[str], bool], suffix: str = "") -> str:
    """`stem + suffix`, else `stem (2)suffix`, `stem (3)suffix`, …: the first name not `taken`.

    The one rule for names that must not collide: a source moved into archive/ or
    failed/, a job's outputs in the outbox, the outputs of one `spkd transcribe` run."""
    name, n = stem + suffix, 2
    while taken(name):
        name, n = f"{stem} ({n}){suffix}", n + 1
    return name


def free_name(path: Path) -> Path:
    """`path`, or `name (2).ext`, `name (3).ext`, … : the first that does not exist yet."""
    stem, suffix = _split_name(path.name)
    return path.with_name(numbered(stem, lambda name: path.with_name(name).exists(), suffix))


def _split_name(name: str) -> tuple[str, str]:
    suffix = "".join(PurePosixPath(name).suffixes[-1:])
    return name[: len(name) - len(suffix)] if suffix else name, suffix


def safe_relative(name: str) -> PurePosixPath:
    """A relative path that cannot climb out of the folder it is joined to."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or not rel.parts:
        raise ValueError(f"unsafe relative path: {name!r}")
    return rel


def inside(root: Path, name: str) -> Path:
    """`root / name`, refusing any name that would land outside `root`."""
    target = (root / safe_relative(name)).resolve()
    root_resolved = root.resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise ValueError(f"{name!r} would land outside {root}")
    return target


def nearest_existing(path: Path) -> Path:
    """`path` itself, or its nearest existing parent: where a folder not created yet will
    live (its filesystem, its permissions)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def file_identity(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the file is gone. A symlink is described by
    itself, never by its target."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_size, st.st_mtime_ns
