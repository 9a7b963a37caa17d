"""Talking to the service manager: sd_notify, and the runtime file `spkd status` reads.

sd_notify is a datagram to `$NOTIFY_SOCKET`; without systemd there is no socket
and every call is a no-op.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.files import atomic_write


def notify(*messages: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    payload = "\n".join(messages).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
        return True
    except OSError:
        return False


def runtime_path(config: Config) -> Path:
    return config.paths.state / "spkd.json"


def write_runtime(config: Config, *, pid: int) -> None:
    info = {"pid": pid, "started_at": time.time(), "config": str(config.source) if config.source else None,
            "database": config.database_url}
    atomic_write(runtime_path(config), json.dumps(info, indent=2) + "\n")


def read_runtime(config: Config) -> dict[str, Any] | None:
    try:
        info = json.loads(runtime_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info


def clear_runtime(config: Config) -> None:
    try:
        runtime_path(config).unlink()
    except FileNotFoundError:
        pass
