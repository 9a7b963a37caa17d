"""Moving and writing files so that a crash at any instant leaves either the old or the
new state on disk, never a half-written or vanished file.

Used by the watcher (inbox -> spool), the worker (spool -> archive / failed) and the
supervisor (spool -> failed, for jobs whose worker died once too often).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator

from daemon.errors import NotRegularFileError, SymlinkError

__all__ = ["HASH_CHUNK_BYTES", "NAME_MAX_BYTES", "atomic_write", "describe_mode", "exclusive_lock", "exists", "file_identity", "fit_stem", "free_name",
           "fsync_dir", "ignore_lease_breaks", "inside", "lease_checks_enabled", "move", "name_bytes", "nearest_existing", "numbered", "open_for_writing", "open_regular",
           "readable_relative", "regular_file_inside", "safe_file_name", "safe_relative", "sha256_file", "shorten"]

HASH_CHUNK_BYTES = 1 << 20

# The longest file name (one path component) Linux, macOS and Windows file systems
# take, in bytes as the file system stores it.
NAME_MAX_BYTES = 255
# A shortened name ends in `~` + the first 8 hex digits of the whole name's sha256, so
# two long names that share their beginning stay two names.
_HASH_MARK_CHARS = 8
# Room `numbered` keeps for its " (n)" up to " (99999)", so that every number of one
# stem is cut the same way.
_NUMBER_BYTES = len(" (99999)")
# What a file name may carry as its suffix when it is shortened (`.wav`, `.m4a`); a
# longer "suffix" is just part of the name.
_MAX_SUFFIX_BYTES = 16
# Characters that break a line of the log or of a listing: C0 controls, DEL and C1
# controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def describe_mode(mode: int) -> str:
    """What kind of file system object a `st_mode` is, in words ("a FIFO")."""
    for test, words in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return words
    return "not a file"


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, as a regular file only: it never follows a symbolic
    link (SymlinkError) and never blocks on a FIFO, and a FIFO, a device, a socket or a
    folder raises NotRegularFileError; anything else the file system says is OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():
            raise SymlinkError(f"{path.name} is a symbolic link (links are never followed)") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(f"{path.name} is {describe_mode(mode)}, not a file spkd can read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def lease_checks_enabled() -> bool:
    """Whether `open_for_writing` may take its test lease in this process: only where
    lease-break signals (SIGIO) are ignored, since a writer opening the file in that
    instant would otherwise kill the process. `ignore_lease_breaks` turns it on."""
    import signal

    sigio = getattr(signal, "SIGIO", None)
    return sigio is not None and signal.getsignal(sigio) == signal.SIG_IGN


def ignore_lease_breaks() -> bool:
    """Ignore SIGIO (the lease-break signal) in this process, so `open_for_writing` can
    use leases; only possible from the main thread. Returns whether leases are usable."""
    import signal
    import threading

    sigio = getattr(signal, "SIGIO", None)
    if sigio is not None and threading.current_thread() is threading.main_thread():
        signal.signal(sigio, signal.SIG_IGN)
    return lease_checks_enabled()


# Linux's fcntl commands (fcntl.F_SETLEASE where Python has it).
_F_SETLEASE = 1024


def open_for_writing(path: Path) -> bool | None:
    """Whether another process has `path` open for writing now: True or False where
    the kernel can tell, None where it cannot.

    On Linux a read lease (fcntl F_SETLEASE, F_RDLCK) is refused with EAGAIN while any
    process has the file open for writing, so a recorder between two bursts, or a copy
    that pauses, still shows as open; the lease is given back at once. It needs a
    local file system (ext4, xfs, btrfs, tmpfs, overlayfs) and a file this process owns
    or CAP_LEASE (root has it): anywhere else, and on other systems, None."""
    import sys

    if not sys.platform.startswith("linux") or not lease_checks_enabled():
        return None
    import fcntl

    setlease = getattr(fcntl, "F_SETLEASE", _F_SETLEASE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
        except OSError as exc:
            return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
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
        # `.` + name + `.` + 8 hex digits + `.tmp` must fit the name limit like the name itself.
        tmp = path.with_name(f".{shorten(path.name, NAME_MAX_BYTES - 14)}.{secrets.token_hex(4)}.tmp")
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
        tmp = dst.with_name(f".{shorten(dst.name, NAME_MAX_BYTES - len('..partial'))}.partial")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, HASH_CHUNK_BYTES)
                fout.flush()
                os.fsync(fout.fileno())
            shutil.copystat(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk must not keep half a copy; the source is still whole
            raise
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


def name_bytes(name: str) -> int:
    """The length of a file name as the file system stores it (UTF-8; a name read from
    the disk that is not UTF-8 comes back as its own bytes)."""
    return len(os.fsencode(name))


def shorten(name: str, max_bytes: int) -> str:
    """`name` when it fits in `max_bytes`, else its beginning, cut at a character
    boundary, + `~` + 8 hex digits of the sha256 of the whole name: deterministic, and
    two long names that share their beginning stay distinct."""
    raw = os.fsencode(name)
    if len(raw) <= max_bytes:
        return name
    mark = "~" + hashlib.sha256(raw).hexdigest()[:_HASH_MARK_CHARS]
    end = max(0, max_bytes - len(mark))
    while 0 < end < len(raw) and raw[end] & 0xC0 == 0x80:
        end -= 1  # inside a character of several bytes: cut before it
    return os.fsdecode(raw[:end]) + mark


def fit_stem(stem: str, suffix: str = "", max_bytes: int = NAME_MAX_BYTES) -> str:
    """The stem `numbered` counts from: `stem` itself, or, when its last component with
    " (99999)" and `suffix` would not fit in `max_bytes`, that component shortened
    (`shorten`) so that every numbered name of it fits."""
    head, sep, last = stem.rpartition("/")
    room = max_bytes - name_bytes(suffix) - _NUMBER_BYTES
    return head + sep + shorten(last, room)


def numbered(stem: str, taken: Callable[[str], bool], suffix: str = "", *, max_bytes: int = NAME_MAX_BYTES) -> str:
    """`stem + suffix`, else `stem (2)suffix`, `stem (3)suffix`, …: the first name not `taken`.

    The one rule for names that must not collide: a source moved into archive/ or
    failed/, a job's outputs in the outbox, the outputs of one `spkd transcribe` run.
    The last component of every name it gives fits in `max_bytes` (the file system's
    limit less what the caller still appends): a stem too long for that is shortened
    first (`fit_stem`)."""
    stem = fit_stem(stem, suffix, max_bytes)
    name, n = stem + suffix, 2
    while taken(name):
        name, n = f"{stem} ({n}){suffix}", n + 1
    return name


def free_name(path: Path, *, reserve_bytes: int = 0) -> Path:
    """`path`, or `name (2).ext`, `name (3).ext`, … : the first that does not exist yet,
    leaving `reserve_bytes` of the name limit for what the caller appends to it (a
    `.error.json` beside a failed source)."""
    stem, suffix = _split_name(path.name)
    return path.with_name(numbered(stem, lambda name: exists(path.with_name(name)), suffix,
                                   max_bytes=NAME_MAX_BYTES - reserve_bytes))


def _split_name(name: str) -> tuple[str, str]:
    suffix = "".join(PurePosixPath(name).suffixes[-1:])
    if not suffix or name_bytes(suffix) > _MAX_SUFFIX_BYTES:
        return name, ""
    return name[: len(name) - len(suffix)], suffix


def _readable_component(name: str, max_bytes: int) -> str:
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if name_bytes(text) <= max_bytes:
        return text
    stem, suffix = _split_name(text)
    return shorten(stem, max_bytes - name_bytes(suffix)) + suffix


def readable_relative(name: str, *, reserve_bytes: int = 0) -> str:
    """An inbox-relative name (`team/a.wav`) as spkd records, shows and writes it: UTF-8
    text, every byte that is not UTF-8 (a name from an old SMB or Windows client)
    written as `\\xff`, control characters (a newline) as `\\x0a`, and each component
    that grew past the file system's limit shortened (`shorten`, keeping its suffix).
    The last component keeps `reserve_bytes` free for what is appended to it. A name
    that is valid UTF-8 without control characters comes back unchanged."""
    parts = PurePosixPath(name).parts
    out = [_readable_component(part, NAME_MAX_BYTES) for part in parts[:-1]]
    out.append(_readable_component(parts[-1], NAME_MAX_BYTES - reserve_bytes))
    return "/".join(out)


def safe_file_name(name: str, *, reserve_bytes: int = 0, default: str = "upload") -> str:
    """A name someone else chose (an upload's file name) as one plain file name: the
    last component of any path in it (`/` or `\\`), without the leading dots that would
    hide it, then as spkd writes every name (`readable_relative`: control characters
    as text, shortened to the file system's limit less `reserve_bytes`); `default`
    when nothing is left."""
    base = re.split(r"[/\\]", name)[-1].strip().lstrip(".").strip()
    return readable_relative(base, reserve_bytes=reserve_bytes) if base else default


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


def regular_file_inside(root: Path, name: str) -> Path | None:
    """The regular file `root / name` (resolved) when it exists under `root` and
    neither it nor any folder on the way below `root` is a symbolic link; None
    otherwise, also for a name that would climb out (`..`, absolute). For serving a
    file that a database row names: a link planted in a folder never leads elsewhere."""
    try:
        rel = safe_relative(name)
    except ValueError:
        return None
    candidate = root.resolve() / rel
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real != candidate or not real.is_file():
        return None
    return real


def nearest_existing(path: Path) -> Path:
    """`path` itself, or its nearest existing parent: where a folder not created yet will
    live (its filesystem, its permissions)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def file_identity(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns), or None when the file is gone (or its name cannot exist: too
    long for the file system). A symlink is described by itself, never by its target."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise
    return st.st_size, st.st_mtime_ns


def exists(path: Path) -> bool:
    """Whether anything (a symlink included, never followed) is at `path`; a name too
    long for the file system names nothing."""
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made, with its folder, when missing) for the
    block: one process at a time, on this machine. The kernel drops it when the holder
    dies, so a crash never leaves it held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
