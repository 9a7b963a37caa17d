"""Retention: delete archived sources after `retention.archive_days`, failed sources
(with their `.error.json` and sidecar) after `retention.failed_days`, and optionally
finished job rows after `retention.job_rows_days`. The supervisor runs `sweep` every
`retention.sweep_seconds`.

A file's age is counted from the later of its mtime and ctime. Moving a file keeps
its mtime (a two-year-old recording keeps its date in `archive/`), but a rename sets
the ctime, so this is when the file arrived here, not when it was recorded.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from daemon.config import Config
from daemon.jobs.spool import ERROR_SUFFIX, SIDECAR_SUFFIX, remove_empty_parents
from daemon.store import Store, utcnow

__all__ = ["SweepResult", "sweep"]

# Files that belong to a source `<name>` and go with it.
COMPANION_SUFFIXES = (ERROR_SUFFIX, SIDECAR_SUFFIX)
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class SweepResult:
    archive_files: int = 0
    failed_files: int = 0
    bytes_freed: int = 0
    folders_removed: int = 0
    job_rows: int = 0
    errors: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.archive_files or self.failed_files or self.folders_removed or self.job_rows)


@dataclass
class _Tally:
    files: int = 0
    bytes: int = 0
    folders: int = 0
    errors: int = 0


def sweep(config: Config, store: Store | None, *, now: dt.datetime | None = None) -> SweepResult:
    """One retention pass. `now` (naive UTC, like the database, or aware) is for tests."""
    now_utc = _naive_utc(now or utcnow())
    now_ts = now_utc.replace(tzinfo=dt.timezone.utc).timestamp()
    r = config.retention
    archive = _sweep_tree(config.paths.archive, r.archive_days, now_ts)
    failed = _sweep_tree(config.paths.failed, r.failed_days, now_ts)
    rows, row_errors = 0, 0
    if r.job_rows_days is not None and store is not None:
        try:
            rows = store.delete_finished_jobs_before(now_utc - dt.timedelta(days=r.job_rows_days))
        except Exception as exc:  # noqa: BLE001 - a busy or unreachable database: try next time
            logger.warning("retention: deleting old job rows failed: {}", exc)
            row_errors = 1
    result = SweepResult(archive_files=archive.files, failed_files=failed.files,
                         bytes_freed=archive.bytes + failed.bytes, folders_removed=archive.folders + failed.folders,
                         job_rows=rows, errors=archive.errors + failed.errors + row_errors)
    if result.changed:
        logger.info("retention: removed {} archived and {} failed file(s) ({:.1f} MB), {} empty folder(s), "
                    "{} job row(s)", result.archive_files, result.failed_files, result.bytes_freed / 2**20,
                    result.folders_removed, result.job_rows)
    return result


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _age_stamp(st: os.stat_result) -> float:
    return max(st.st_mtime, st.st_ctime)


def _groups(filenames: list[str]) -> dict[str, list[str]]:
    """`a.wav`, `a.wav.error.json`, `a.wav.spkd.json` -> {"a.wav": [all three]}; a
    companion whose source is gone is a group of its own."""
    names = set(filenames)
    groups: dict[str, list[str]] = {}
    for name in sorted(filenames):
        key = name
        for suffix in COMPANION_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in names:
                key = name[: -len(suffix)]
                break
        groups.setdefault(key, []).append(name)
    return groups


def _sweep_tree(root: Path, days: float | None, now_ts: float) -> _Tally:
    tally = _Tally()
    if days is None or not root.is_dir():
        return tally
    cutoff = now_ts - days * DAY_SECONDS
    touched: set[Path] = set()
    # Bottom-up, without following links out of the tree.
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        folder = Path(dirpath)
        for members in _groups(filenames).values():
            stats = {}
            for name in members:
                try:
                    stats[name] = os.lstat(folder / name)
                except FileNotFoundError:
                    continue
            if not stats or max(_age_stamp(st) for st in stats.values()) >= cutoff:
                continue
            for name, st in stats.items():
                try:
                    (folder / name).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("retention: cannot delete {}: {}", folder / name, exc)
                    tally.errors += 1
                    continue
                logger.debug("retention: deleted {}", folder / name)
                tally.files += 1
                tally.bytes += st.st_size
                touched.add(folder)
    for folder in sorted(touched, key=lambda p: len(p.parts), reverse=True):
        tally.folders += remove_empty_parents(folder, root)
    return tally
