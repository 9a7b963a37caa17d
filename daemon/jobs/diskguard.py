"""Disk guard: claiming pauses while the outbox's or the state folder's filesystem runs
low, so a full disk fails no job halfway (a transcript half written, a database that
cannot commit); queued jobs simply wait until space comes back.

The supervisor checks every `daemon.disk_check_seconds` and writes or removes the
pause file `<paths.state>/claims.paused` (its text is the reason, for `spkd status`).
Workers look for that file before each claim and, since a disk can fill up between
two checks (and then the pause file itself cannot be written), measure the free
space themselves too: two statvfs calls, microseconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loguru import logger

from daemon.config import Config
from daemon.files import atomic_write, nearest_existing

__all__ = ["check", "claim_blocker", "pause_path", "paused_reason", "set_paused", "update"]

PAUSE_FILE = "claims.paused"
MB = 2**20
# Pauses this process announced but could not write down (the disk was full already),
# by pause file: so that the pause is logged once, and its end too.
_unwritten: dict[Path, str] = {}


def pause_path(config: Config) -> Path:
    return config.paths.state / PAUSE_FILE


def check(config: Config) -> str | None:
    """A reason to pause when free space under paths.outbox or paths.state is below
    daemon.min_free_mb; None when there is enough (or the guard is off: 0)."""
    limit = config.daemon.min_free_mb
    if limit <= 0:
        return None
    for name in ("outbox", "state"):
        folder: Path = getattr(config.paths, name)
        free_mb = shutil.disk_usage(nearest_existing(folder)).free / MB
        if free_mb < limit:
            return (f"low disk space: {free_mb:.0f} MB free under paths.{name} ({folder}), "
                    f"below daemon.min_free_mb = {limit}")
    return None


def paused_reason(config: Config) -> str | None:
    """Why claiming is paused, or None. Cheap enough to call before every claim."""
    try:
        text = pause_path(config).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:  # unreadable: still paused, say why we can't tell more
        return f"paused ({pause_path(config)}: {exc})"
    return text or "paused"


def claim_blocker(config: Config) -> str | None:
    """Why a worker must not claim now, or None: the supervisor's pause file, else the
    free space measured right now (a folder that cannot be measured does not block)."""
    reason = paused_reason(config)
    if reason is not None:
        return reason
    try:
        return check(config)
    except OSError:
        return None


def set_paused(config: Config, reason: str | None) -> bool:
    """Write (reason) or remove (None) the pause file; logs only when the paused state
    changes. Returns True on a change."""
    path = pause_path(config)
    current = paused_reason(config) or _unwritten.get(path)
    if reason is None:
        _unwritten.pop(path, None)
        if current is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        logger.info("claiming resumed (was paused: {})", current)
        return True
    if current != reason:
        try:
            atomic_write(path, reason + "\n")  # the reason's numbers change while paused: keep the file current
            _unwritten.pop(path, None)
        except OSError as exc:
            # The disk is full already: workers measure the free space themselves (claim_blocker).
            _unwritten[path] = reason
            if current is None:
                logger.warning("claiming paused: {} (the pause file cannot be written: {})", reason, exc)
            return current is None
    if current is None:
        logger.warning("claiming paused: {}", reason)
        return True
    return False


def update(config: Config) -> str | None:
    """check() then set_paused(): the supervisor's scheduled job. A failed check
    (the folder vanished, a stale mount) leaves the pause state as it was."""
    try:
        reason = check(config)
    except OSError as exc:
        logger.warning("disk guard: cannot read free space: {}", exc)
        return paused_reason(config)
    set_paused(config, reason)
    return reason
