"""Serving the dashboard: `spkd web` in the foreground, or the child process `spkd run`
starts when `web.listen` is set (supervised and restarted like a worker slot).

This module imports only the standard library at import time, so the supervisor can
start and judge the child without loading the web stack; uvicorn and the app load in
the process that serves. Nothing here or in the app imports torch or funasr.

Safe by default: an address other than loopback is refused unless `web.token` is set.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from daemon.config import parse_listen
from daemon.errors import ExitCode

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["DEFAULT_LISTEN", "bind", "is_loopback", "refusal", "run_child", "serve", "url_of"]

DEFAULT_LISTEN = "127.0.0.1:8765"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: reachable from this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def refusal(config: "Config", listen: str) -> str | None:
    """Why the dashboard must not serve on `listen` with this config, or None."""
    host, _port = parse_listen(listen)
    if not is_loopback(host) and not config.web.token:
        return (f"refusing to serve the dashboard on {listen}: an address other than loopback (127.0.0.1, ::1, "
                "localhost) is reachable from other machines and needs web.token set in the config "
                "(at least 16 characters)")
    return None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def bind(listen: str) -> socket.socket:
    """A listening socket on `listen`; OSError (address in use, no such address) goes up."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host.lower().startswith("localhost"):
        host, family = "127.0.0.1", socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _server(config: "Config", sock: socket.socket, *, supervised: bool) -> Any:
    import uvicorn

    from daemon.web.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Under the supervisor a Ctrl-C in the terminal reaches the whole process
            # group; only the supervisor decides when the dashboard stops (SIGTERM).
            if supervised and sig == signal.SIGINT:
                return
            super().handle_exit(sig, frame)

    uv_config = uvicorn.Config(create_app(config), log_config=None, access_log=False, lifespan="off",
                               server_header=False, timeout_graceful_shutdown=5, proxy_headers=False)
    return Server(uv_config)


def serve(config: "Config", listen: str) -> None:
    """`spkd web`: serve in the foreground until SIGINT or SIGTERM."""
    from loguru import logger

    sock = bind(listen)
    logger.info("dashboard at {} (database and folders of {})", url_of(sock), config.source or "the defaults")
    print(f"spkd web: serving {url_of(sock)}", file=sys.stderr, flush=True)
    _server(config, sock, supervised=False).run(sockets=[sock])


def run_child(config: "Config", listen: str, ready: Any) -> None:
    """Entry point of the supervised dashboard process: bind, say so through `ready`
    (a multiprocessing Event: the supervisor counts a child that never got this far as
    a boot failure), then serve until SIGTERM, which ends it with ExitCode.OK."""
    from loguru import logger

    from daemon.logs import setup_logging

    setup_logging(config, role="web")
    # uvicorn re-raises the SIGTERM it handled once it has shut down; the default
    # action would make that look like a crash to the supervisor.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(ExitCode.OK)))
    try:
        sock = bind(listen)
    except OSError as exc:
        logger.error("dashboard cannot listen on {}: {}", listen, exc)
        raise SystemExit(int(ExitCode.BOOT_FAILED)) from None
    logger.info("dashboard at {} (pid {})", url_of(sock), os.getpid())
    ready.set()
    _server(config, sock, supervised=True).run(sockets=[sock])
    raise SystemExit(int(ExitCode.OK))
