"""Upper bounds of the configuration's numbers that fit the machine and the daemon's
clocks (issue 26: `workers.threads: 2147483647` made every worker boot fail inside
libgomp). daemon.config applies LIMIT_RULES with its own rules: an out-of-range value
stops start-up with the key and the value as written (exit 2)."""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from daemon.errors import ConfigError

__all__ = ["LIMIT_RULES", "THREADS_PER_CORE", "check_config", "check_hosts", "check_threads", "machine_cores"]

# More CPU threads per slot than 4 per core only slow it down, and a huge count makes
# every boot fail inside the OpenMP runtime (libgomp).
THREADS_PER_CORE = 4


def machine_cores() -> int:
    """The cores this machine has (at least 1)."""
    return max(1, os.cpu_count() or 1)


def check_threads(value: int | None) -> str | None:
    limit = machine_cores() * THREADS_PER_CORE
    if value is None or 1 <= value <= limit:
        return None
    return f"must be null or from 1 to {limit} ({THREADS_PER_CORE} x this machine's {machine_cores()} cores)"


def check_hosts(value: tuple[str, ...]) -> str | None:
    bad = [v for v in value if not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}|\[[0-9A-Fa-f:.]+\]", v)]
    return f"not host names or addresses (without a port): {bad}" if bad else None


def _shown_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _between(low: float, high: float, *, above_low: bool = False) -> Callable[[Any], str | None]:
    lo, hi = _shown_number(low), _shown_number(high)

    def rule(value: Any) -> str | None:
        if value is None or ((low < value) if above_low else (low <= value)) and value <= high:
            return None
        return f"must be more than {lo} and at most {hi}" if above_low else f"must be from {lo} to {hi}"
    return rule


DAY = 86400
LIMIT_RULES: dict[str, Callable[[Any], str | None]] = {
    "workers.threads": check_threads,
    "workers.max_rss_mb": _between(64, 2**24),
    "workers.max_boot_failures": _between(1, 1000),
    "workers.poll_seconds": _between(0, 60, above_low=True),
    "workers.boot_timeout_seconds": _between(0, DAY, above_low=True),
    "workers.restart_backoff_max_seconds": _between(0, DAY),
    "models.batch_size_s": _between(1, 3600),
    "watch.settle_seconds": _between(0, DAY),
    "watch.rescan_seconds": _between(0, DAY, above_low=True),
    "watch.incomplete_wait_seconds": _between(0, 7 * DAY),
    "jobs.max_attempts": _between(1, 100),
    "jobs.lease_seconds": _between(0, DAY, above_low=True),
    "jobs.heartbeat_seconds": _between(0, 3600, above_low=True),
    "notify.timeout_seconds": _between(0, 600, above_low=True),
    "notify.max_attempts": _between(1, 100),
    "daemon.shutdown_grace_seconds": _between(0, DAY),
    "daemon.kill_grace_seconds": _between(0, 3600),
    "daemon.reap_seconds": _between(0, 3600, above_low=True),
    "daemon.disk_check_seconds": _between(0, 3600, above_low=True),
    "daemon.wal_checkpoint_seconds": _between(0, DAY, above_low=True),
    # an INTEGER column's worth (2 PB): the tests pause claiming with 10**9
    "daemon.min_free_mb": _between(0, 2**31 - 1),
    "web.max_upload_mb": _between(1, 2**20),
    "web.allowed_hosts": check_hosts,
}


def check_config(config: Any) -> None:
    """Bounds between keys: a heartbeat must come before the lease it renews runs out."""
    if config.jobs.heartbeat_seconds >= config.jobs.lease_seconds:
        raise ConfigError(f"jobs.heartbeat_seconds: must be less than jobs.lease_seconds "
                          f"({config.jobs.lease_seconds:g}), or every running job is taken back between two "
                          f"heartbeats (got {config.jobs.heartbeat_seconds:g})")
