"""Where a job's source file lives on its way: spool -> archive (done) or failed, and
back from failed into the spool when a failed job is retried.

Each spooled file gets its own folder `spool/<token>/<path relative to the inbox>`,
so names never collide and a start-up scan can rebuild a lost job row from the
path alone. A sidecar `<file>.spkd.json` travels in the same folder; a failed
source gets `<file>.error.json` beside it in failed/.
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
from typing import TYPE_CHECKING, Any, Iterable

from daemon import files

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["ERROR_SUFFIX", "RETIRED_RESERVE_BYTES", "SIDECAR_SUFFIX", "TokenInfo", "archive", "error_file_of", "fail",
           "failed_copy_of", "new_slot", "owned_by", "remove_empty_parents", "requeue_failed", "restore",
           "retire_failed", "sidecar_of", "source_name_of", "spooled_files", "token_info", "token_of"]

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
                            "error_message": error_message, "attempts": attempts, "failed_at": failed_at}
    files.atomic_write(error_file_of(target), json.dumps(info, ensure_ascii=False, indent=2, default=str) + "\n")
    return target


def retire_failed(config: Config, job: Job) -> Path:
    """Move a failed job's source into failed/ with its `.error.json`."""
    paths = config.paths
    return fail(spool_path=Path(job.spool_path), spool_root=paths.spool, failed_root=paths.failed,
                source_name=job.source_name, job_id=job.id, sha256=job.sha256, error_kind=job.error_kind,
                error_message=job.error_message, attempts=job.attempts)


def _error_job_id(error_file: Path) -> int | None:
    try:
        info = json.loads(error_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info.get("job_id") if isinstance(info, dict) else None


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


def requeue_failed(config: Config, store: Store, *, job_ids: Iterable[int] = (), all_failed: bool = False) -> list[int]:
    """`spkd retry`: requeue failed (or cancelled) jobs with fresh attempts and bring
    their sources back into the spool, so the worker finds each where its row says;
    a source that is gone is recorded as a `retry_missing_source` event. Returns the
    ids requeued."""
    requeued = store.retry(job_ids=job_ids, all_failed=all_failed)
    for job_id in requeued:
        row = store.job(job_id)
        if row is None:
            continue
        if not restore(spool_path=Path(row.spool_path), failed_root=config.paths.failed,
                       source_name=row.source_name, job_id=job_id):
            store.add_event(job_id, "retry_missing_source",
                            path=str(files.inside(config.paths.failed, row.source_name)))
    return requeued
