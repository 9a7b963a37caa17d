"""Logging: loguru to stderr (journald and launchd capture it) and to a rotating file
under the state folder. One line per event, greppable by job id, file and device."""

from __future__ import annotations

import sys

from loguru import logger

from daemon.config import Config

__all__ = ["setup_logging"]

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
        logger.add(log_dir / name, level=level, format=LOG_FORMAT, rotation="10 MB", retention=10,
                   encoding="utf-8", backtrace=False, diagnose=False)
