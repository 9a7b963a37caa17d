"""Logging: loguru to stderr (journald and launchd capture it) and to a rotating file
under the state folder. One line per event, greppable by job id, file and device."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Hashable

from loguru import logger

from daemon.config import Config

__all__ = ["DATABASE_TROUBLE_SECONDS", "Throttle", "setup_logging"]

# How often one kind of database trouble (a write lock held past the busy timeout, a
# server out of reach; daemon.errors.DatabaseUnavailableError) is logged by whatever
# waits for it: it lasts seconds to minutes, and every retry would say it again.
DATABASE_TROUBLE_SECONDS = 60.0

LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<7} | {extra[role]:<10} | {message}"


def setup_logging(config: Config | None, *, role: str = "main", to_file: bool = True) -> None:
    logger.remove()
    logger.configure(extra={"role": role})
    level = config.daemon.log_level.upper() if config else "INFO"
    logger.add(sys.stderr, level=level, format=LOG_FORMAT, colorize=False, backtrace=False, diagnose=False)
    if config is not None and to_file:
        log_dir = config.paths.state / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        # One file per process: loguru's rotation is not safe with several writers.
        name = "spkd.log" if role == "main" else f"{role}.log"
        # A file name that is not UTF-8 must not cost its log line ("surrogates not allowed").
        logger.add(log_dir / name, level=level, format=LOG_FORMAT, rotation="10 MB", retention=10,
                   encoding="utf-8", errors="backslashreplace", backtrace=False, diagnose=False)


class Throttle:
    """Rate limit for a log line that repeats (one file failing at every look, a
    database that stays locked): `allow(key)` says whether the line for `key` may be
    written now, the first time at once and then at most once per `every_seconds`,
    and how many were held back since the last one (to say so in the line).
    Thread-safe; the oldest keys are forgotten beyond `max_keys`."""

    def __init__(self, every_seconds: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.every_seconds = every_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._last: dict[Hashable, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> int | None:
        """None: stay quiet; else the number of lines held back since the last one."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every_seconds:
                self._last[key] = (last[0], last[1] + 1)
                return None
            self._last.pop(key, None)
            self._last[key] = (now, 0)
            if len(self._last) > self._max_keys:
                self._last.pop(next(iter(self._last)))
            return last[1] if last is not None else 0

    def log(self, key: Hashable, message: str, *args: Any, level: str = "WARNING") -> None:
        """Log `message` (loguru's `{}` format, with `args`) at `level` when `allow(key)`
        lets it, saying how many like it were held back since the last one."""
        held_back = self.allow(key)
        if held_back is None:
            return
        suffix = f" ({held_back} more like it in the last {self.every_seconds:.0f} s)" if held_back else ""
        logger.opt(depth=1).log(level, message + suffix, *args)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._last.pop(key, None)
