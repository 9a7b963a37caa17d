"""Where a job's source file lives on its way: spool -> archive (done) or failed.

Each spooled file gets its own folder `spool/<token>/<path relative to the inbox>`,
so names never collide and a start-up scan can rebuild a lost job row from the
path alone. A sidecar `<file>.spkd.json` travels in the same folder.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

from daemon import files

SIDECAR_SUFFIX = ".spkd.json"


def new_slot(spool_root: Path) -> Path:
    token = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
    return spool_root / token


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


def fail(*, spool_path: Path, spool_root: Path, failed_root: Path, source_name: str,
         info: Mapping[str, Any]) -> Path:
    """Move a source into `failed/` with `<name>.error.json` beside it."""
    if spool_path.exists():
        target = _retire(spool_path, spool_root, failed_root, source_name)
    else:
        # The file is already gone (moved by an earlier attempt): still leave the reason.
        target = files.free_name(files.inside(failed_root, source_name))
    files.write_error_file(target, info)
    return target
