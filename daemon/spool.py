"""Where a job's source file lives on its way: spool -> archive (done) or failed.

Each spooled file gets its own folder `spool/<token>/<path relative to the inbox>`,
so names never collide and a start-up scan can rebuild a lost job row from the
path alone. A sidecar `<file>.spkd.json` travels in the same folder.
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from daemon import files

SIDECAR_SUFFIX = ".spkd.json"


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
    for dirpath, _dirnames, filenames in os.walk(spool_root):
        for name in filenames:
            if name.endswith(SIDECAR_SUFFIX) or name.startswith("."):
                continue
            found.append(Path(dirpath) / name)
    return sorted(found)


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _retire(spool_path: Path, spool_root: Path, target_root: Path, source_name: str) -> Path:
    """Move a spooled file (and its sidecar) under `target_root` by its inbox name,
    never overwriting an earlier file of the same name."""
    target = files.free_name(files.inside(target_root, source_name))
    files.move(spool_path, target)
    sidecar = sidecar_of(spool_path)
    if sidecar.exists():
        files.move(sidecar, files.free_name(sidecar_of(target)))
    remove_empty_parents(spool_path.parent, spool_root)
    return target


def remove_empty_parents(folder: Path, root: Path) -> None:
    """Remove `folder` and its parents up to (not including) `root` while they are empty."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def archive(*, spool_path: Path, spool_root: Path, archive_root: Path, source_name: str) -> Path | None:
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
        target = files.free_name(files.inside(failed_root, source_name))
    failed_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    files.write_error_file(target, {"job_id": job_id, "source": source_name, "sha256": sha256,
                                    "error_kind": error_kind, "error_message": error_message,
                                    "attempts": attempts, "failed_at": failed_at})
    return target
