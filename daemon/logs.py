"""Logging: loguru to stderr (journald and launchd capture it) and to a rotating file
under the state folder. One line per event, greppable by job id, file and device."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import time
from pathlib import PurePath
from typing import Any, Callable, Hashable, Iterator

from loguru import logger

from daemon.config import Config

__all__ = ["DATABASE_TROUBLE_SECONDS", "ENGINE_CHATTER", "Throttle", "is_engine_chatter", "printed_to_log",
           "route_std_logging", "setup_logging"]

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
    route_std_logging(debug=level == "DEBUG")


# What FunASR says every time it loads a model, even from a local folder with the hub
# switched off (`download models from model hub: ms` and `trust_remote_code: False`
# through the logging module, four times per engine; its version through print()):
# none of it is news, and a warning that is always there teaches to ignore warnings.
# Each pattern must match a whole message: anything else FunASR says is kept.
ENGINE_CHATTER = (
    re.compile(r"download models from model hub: \w+"),
    re.compile(r"trust_remote_code: False"),
    re.compile(r"funasr version: [\w.+-]+?\.?"),
)


def is_engine_chatter(message: str) -> bool:
    text = message.strip()
    return any(pattern.fullmatch(text) for pattern in ENGINE_CHATTER)


class _StdToLoguru(logging.Handler):
    """Records of the logging module (FunASR, uvicorn, alembic …) as loguru lines: one
    format, one line per event, in the log file too. Warnings and worse keep their
    level; what a library says below that is spkd's DEBUG. FunASR's chatter is dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a library's bad format string must not cost the line
            message = str(record.msg)
        if is_engine_chatter(message):
            return
        level = record.levelname if record.levelno >= logging.WARNING else "DEBUG"
        if level not in ("WARNING", "ERROR", "CRITICAL", "DEBUG"):
            level = "WARNING"
        logger.opt(exception=record.exc_info).log(level, "{}: {}", _origin(record),
                                                  " ".join(message.splitlines()))


def _origin(record: logging.LogRecord) -> str:
    """The logger's name; for the root logger (FunASR logs through `logging.info`), the
    package the call came from."""
    if record.name != "root":
        return record.name
    parts = PurePath(record.pathname).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts[:-1]:
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return record.module


def route_std_logging(*, debug: bool = False) -> None:
    """Send the logging module's records to loguru (once per process). The stream
    handlers a library put on the root logger go (FunASR's import calls
    `logging.basicConfig`, which then finds a handler and does nothing). Below WARNING
    only when spkd itself logs DEBUG."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # basicConfig's; not pytest's, not a file
            root.removeHandler(handler)
    if not any(isinstance(h, _StdToLoguru) for h in root.handlers):
        root.addHandler(_StdToLoguru())
    root.setLevel(logging.INFO if debug else logging.WARNING)


class _LineLog(io.TextIOBase):
    """A text stream whose every line becomes a loguru line (chatter dropped)."""

    def __init__(self, level: str, origin: str) -> None:
        self.level, self.origin = level, origin
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def _emit(self, line: str) -> None:
        line = line.strip()
        if line and not is_engine_chatter(line):
            logger.opt(depth=2).log(self.level, "{}: {}", self.origin, line)


@contextlib.contextmanager
def printed_to_log(origin: str, *, level: str = "WARNING") -> Iterator[None]:
    """What is print()ed while the block runs becomes log lines of `level` (FunASR
    prints instead of logging, and stdout is no place for a daemon's messages): its
    chatter dropped, anything else kept, since it is unexpected."""
    stream = _LineLog(level, origin)
    try:
        with contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.finish()


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
