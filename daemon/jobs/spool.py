"""Where a job's source file lives on its way: spool -> archive (done) or failed, and
back into the spool when a job is retried (from failed/, or from archive/ for a done
job run again), or from archive/ into failed/ when a done job is removed: a job's
audio is never deleted.

Each spooled file gets its own folder `spool/<token>/<path relative to the inbox>`,
so names never collide and a start-up scan can rebuild a lost job row from the
path alone. A sidecar `<file>.spkd.json` travels in the same folder; a failed
source gets `<file>.error.json` beside it in failed/, which also records the file's
size and modification time there and its sidecar's sha256, so that a retry can tell
whether either was changed since (daemon.jobs.retry).

Every move is `files.move` (a rename, or copy + fsync + unlink), and each caller
moves the file before or after its store write in the order that a crash between the
two leaves for the supervisor's start-up (`settle_spool`) to finish: a source in the
spool whose job has ended goes where its state says.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon import files
from daemon.errors import SpkdError

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job

__all__ = ["ERROR_SUFFIX", "RETIRED_RESERVE_BYTES", "SIDECAR_SUFFIX", "TokenInfo", "archive", "bring_back",
           "error_file_of", "error_record", "fail", "failed_copy_of", "keep_in_failed", "new_slot", "owned_by",
           "remove_empty_parents", "restore", "retire_failed", "sidecar_digest", "sidecar_of", "source_name_of",
           "source_of",
           "spooled_files", "token_info", "token_of"]

SIDECAR_SUFFIX = ".spkd.json"
ERROR_SUFFIX = ".error.json"
# What is appended to a retired source's name in archive/ and failed/ (its sidecar, its
# `.error.json`): the source's name there keeps this much of the name limit free.
RETIRED_RESERVE_BYTES = max(len(SIDECAR_SUFFIX), len(ERROR_SUFFIX))

TOKEN_TIME_FORMAT = "%Y%m%dT%H%M%S"


def _host_part(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", host)[:63] or "_"


def new_slot(spool_root: Path, host: str | None = None) -> Path:
    """A fresh token folder: `<UTC time>-<host>-<random>` (`<UTC time>-<random>` without a
    host). The host names which daemon moved the file in, so that with several hosts
    sharing one spool, each recovers only its own files at start (see `token_owner`)."""
    stamp = time.strftime(TOKEN_TIME_FORMAT, time.gmtime())
    middle = f"-{_host_part(host)}" if host else ""
    return spool_root / f"{stamp}{middle}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class TokenInfo:
    host: str | None  # None: a token written before host names were recorded (or not ours to parse)
    created: float | None  # epoch seconds from the token's time stamp


def token_info(token: str) -> TokenInfo:
    stamp, _, rest = token.partition("-")
    try:
        created: float | None = calendar.timegm(time.strptime(stamp, TOKEN_TIME_FORMAT))
    except ValueError:
        created = None
    host, sep, _random = rest.rpartition("-")
    return TokenInfo(host=host if sep and host else None, created=created)


def token_of(spool_root: Path, spool_path: Path) -> str:
    return spool_path.relative_to(spool_root).parts[0]


def owned_by(token: str, host: str) -> bool:
    """Whether the token folder was made by `host` (or by a single-host spkd that did not
    record hosts)."""
    owner = token_info(token).host
    return owner is None or owner == _host_part(host)


def source_name_of(spool_root: Path, spool_path: Path) -> str:
    """The inbox-relative name of a spooled file (the part after the token folder)."""
    rel = spool_path.relative_to(spool_root)
    return Path(*rel.parts[1:]).as_posix()


def spooled_files(spool_root: Path) -> list[Path]:
    """Every spooled source file (sidecars and our own temp files excluded)."""
    found: list[Path] = []
    if not spool_root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(spool_root):
        # A "sidecar" that is a folder travels with its audio but holds no sources.
        dirnames[:] = [d for d in dirnames if not d.endswith(SIDECAR_SUFFIX)]
        for name in filenames:
            if name.endswith(SIDECAR_SUFFIX) or name.startswith("."):
                continue
            found.append(Path(dirpath) / name)
    return sorted(found)


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def error_file_of(path: Path) -> Path:
    """`<name>.error.json` beside a source in failed/."""
    return path.with_name(path.name + ERROR_SUFFIX)


def _retire(spool_path: Path, spool_root: Path, target_root: Path, source_name: str) -> Path:
    """Move a spooled file (and its sidecar) under `target_root` by its inbox name,
    never overwriting an earlier file of the same name."""
    target = files.free_name(files.inside(target_root, source_name), reserve_bytes=RETIRED_RESERVE_BYTES)
    files.move(spool_path, target)
    sidecar = sidecar_of(spool_path)
    if files.exists(sidecar):
        files.move(sidecar, files.free_name(sidecar_of(target)))
    remove_empty_parents(spool_path.parent, spool_root)
    return target


def remove_empty_parents(folder: Path, root: Path) -> int:
    """Remove `folder` and its parents up to (never including) `root` while they are
    empty; returns how many went."""
    root = root.resolve()
    folder = folder.resolve()
    removed = 0
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            return removed
        removed += 1
        folder = folder.parent
    return removed


def archive(*, spool_path: Path, spool_root: Path, archive_root: Path, source_name: str) -> Path | None:
    """Move a done job's source into archive/ (daemon.jobs.results.retire_done records
    where it went); None when it had already moved on."""
    try:
        return _retire(spool_path, spool_root, archive_root, source_name)
    except FileNotFoundError:
        return None  # already moved on (by the supervisor tidying up after a dead worker)


def fail(*, spool_path: Path, spool_root: Path, failed_root: Path, source_name: str, job_id: int,
         sha256: str | None, error_kind: str | None, error_message: str | None, attempts: int) -> Path:
    """Move a source into `failed/` with `<name>.error.json` beside it."""
    if spool_path.exists():
        target = _retire(spool_path, spool_root, failed_root, source_name)
    else:
        # The file is already gone (moved by an earlier attempt): still leave the reason.
        target = files.free_name(files.inside(failed_root, source_name), reserve_bytes=RETIRED_RESERVE_BYTES)
    failed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    info: dict[str, Any] = {"job_id": job_id, "source": source_name, "sha256": sha256, "error_kind": error_kind,
                            "error_message": error_message, "attempts": attempts, "failed_at": failed_at,
                            **_as_left(target)}
    files.atomic_write(error_file_of(target), json.dumps(info, ensure_ascii=False, indent=2, default=str) + "\n")
    return target


def _as_left(target: Path) -> dict[str, Any]:
    """The file and its sidecar as they lie in failed/ now: what a retry compares with to
    tell whether someone changed either since (a stat, not a hash, for the file; the
    sidecar is small)."""
    identity = files.file_identity(target)
    return {"size_bytes": identity[0] if identity else None, "mtime_ns": identity[1] if identity else None,
            "sidecar_sha256": sidecar_digest(target)}


def sidecar_digest(source: Path) -> str | None:
    """The sha256 of the sidecar beside `source`, or None when there is none (or it
    is not a regular file it could be read from)."""
    try:
        return files.sha256_file(sidecar_of(source))
    except (OSError, ValueError, SpkdError):
        return None


def retire_failed(config: Config, job: Job) -> Path:
    """Move a failed job's source into failed/ with its `.error.json`."""
    paths = config.paths
    return fail(spool_path=Path(job.spool_path), spool_root=paths.spool, failed_root=paths.failed,
                source_name=job.source_name, job_id=job.id, sha256=job.sha256, error_kind=job.error_kind,
                error_message=job.error_message, attempts=job.attempts)


def _read_error_file(error_file: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(error_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _error_job_id(error_file: Path) -> int | None:
    info = _read_error_file(error_file)
    return info.get("job_id") if info is not None else None


def error_record(source: Path) -> dict[str, Any] | None:
    """What the `.error.json` beside a source in failed/ says (None: there is none)."""
    return _read_error_file(error_file_of(source))


def failed_copy_of(failed_root: Path, source_name: str, job_id: int | None = None) -> Path:
    """Where job `job_id`'s source lies in failed/: under its own name, or, when that name
    was taken by another job's file (` (2)`) or shortened to fit, the file beside it
    whose `.error.json` names the job. The plain name when none is found."""
    plain = files.inside(failed_root, source_name)
    if job_id is None or (files.exists(plain) and _error_job_id(error_file_of(plain)) in (job_id, None)):
        return plain
    try:
        siblings = sorted(plain.parent.iterdir())
    except OSError:
        return plain
    for error_file in siblings:
        if error_file.name.endswith(ERROR_SUFFIX) and _error_job_id(error_file) == job_id:
            source = error_file.with_name(error_file.name[: -len(ERROR_SUFFIX)])
            if files.exists(source):
                return source
    return plain


def restore(*, spool_path: Path, failed_root: Path, source_name: str, job_id: int | None = None) -> bool:
    """Bring a failed source back from failed/ to where its job row says it is (its
    `.error.json` goes); False when it is in neither place."""
    if spool_path.exists():
        return True
    failed_copy = failed_copy_of(failed_root, source_name, job_id)
    if not files.exists(failed_copy):
        return False
    files.move(failed_copy, spool_path)
    sidecar = sidecar_of(failed_copy)
    if files.exists(sidecar):
        files.move(sidecar, sidecar_of(spool_path))
    error_file_of(failed_copy).unlink(missing_ok=True)
    return True


def source_of(config: Config, job: Job) -> Path | None:
    """Where a job's source lies now: its spool path (queued, running, or a retry or
    a crash left it there), else, for a done job, its file in archive/, for a failed or
    cancelled one its file in failed/; None when it is in none of these places."""
    spooled = Path(job.spool_path)
    if files.exists(spooled):
        return spooled
    if job.state == "done":
        archived = files.inside(config.paths.archive, job.archive_name or job.source_name)
        return archived if files.exists(archived) else None
    failed_copy = failed_copy_of(config.paths.failed, job.source_name, job.id)
    return failed_copy if files.exists(failed_copy) else None


def bring_back(config: Config, job: Job, source: Path) -> None:
    """Move a finished job's `source` (from `source_of`: in failed/ or archive/) back to
    the spool path its row names, its sidecar with it, before the job is queued again
    (daemon.jobs.retry): a worker that claims it finds it there. A failed source's
    `.error.json` goes. A crash after the move leaves a finished job whose file is in
    the spool, which the supervisor's start-up puts back where the job's state says."""
    spooled = Path(job.spool_path)
    if source == spooled:
        return
    files.move(source, spooled)
    sidecar = sidecar_of(source)
    if files.exists(sidecar):
        files.move(sidecar, sidecar_of(spooled))
    error_file_of(source).unlink(missing_ok=True)
    remove_empty_parents(source.parent, config.paths.archive if job.state == "done" else config.paths.failed)


def keep_in_failed(config: Config, job: Job, source: Path) -> Path:
    """`spkd remove` of a done job: its archived (or still spooled) `source` moves into
    failed/, never overwriting another file there, with an `.error.json` saying which
    job it was and that the job was removed: a job's audio is never deleted."""
    root = config.paths.spool if source == Path(job.spool_path) else config.paths.archive
    target = _retire(source, root, config.paths.failed, job.source_name)
    info = {"job_id": job.id, "source": job.source_name, "sha256": job.sha256, "error_kind": None,
            "error_message": f"job {job.id} was {job.state} and was removed (spkd remove); its audio is kept here",
            "removed_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat() + "Z",
            **_as_left(target)}
    files.atomic_write(error_file_of(target), json.dumps(info, ensure_ascii=False, indent=2, default=str) + "\n")
    return target
