"""Serving the dashboard: `spkd web` in the foreground, or the child process `spkd run`
starts when `web.listen` is set (supervised and restarted like a worker slot).

This module imports only the standard library at import time, so the supervisor can
start and judge the child without loading the web stack; uvicorn and the app load in
the process that serves. Nothing here or in the app imports torch or funasr.

Safe by default: an address other than loopback is refused unless `web.token` is set.

Bounded: a connection must send a request's headers within HEADER_TIMEOUT_SECONDS (a
new one, or the next on a kept-alive one), and a body must not stall for more than
BODY_IDLE_SECONDS (408); past MAX_CONNECTIONS the oldest connection that has not sent
a whole request yet is dropped for the new one, so slow connections cannot starve real
requests. Running out of descriptors (EMFILE) and like errors are logged once per
minute, not once per event. The supervised child stops when its supervisor is gone
(as workers do), and a child started meanwhile waits for the port to come free.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from daemon.config import parse_listen
from daemon.errors import ExitCode

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["DEFAULT_LISTEN", "bind", "is_loopback", "refusal", "run_child", "serve", "url_of"]

DEFAULT_LISTEN = "127.0.0.1:8765"
HEADER_TIMEOUT_SECONDS = 10.0
BODY_IDLE_SECONDS = 60.0
MAX_CONNECTIONS = 1000
# How long a starting child waits for the port: a dashboard orphaned by a killed
# supervisor notices within PARENT_CHECK_SECONDS and lets go of it.
BIND_WAIT_SECONDS = 20.0
PARENT_CHECK_SECONDS = 1.0
# Errors that mean the process ran out of something (descriptors, buffers): logged once a minute.
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
RESOURCE_LOG_SECONDS = 60.0


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


class BodyTimeout:
    """ASGI: a request body that stalls for `seconds` between two pieces is answered 408
    (when no response has started) and the app sees the client gone. Only while the
    body is still coming: once it is all in, receive() waits for a disconnect as long
    as a response takes (a long download)."""

    def __init__(self, app: Any, seconds: float | None = None) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seconds = self.seconds if self.seconds is not None else BODY_IDLE_SECONDS
        state = {"body_done": False, "timed_out": False, "started": False}

        async def timed_receive() -> dict[str, Any]:
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), seconds)
            except asyncio.TimeoutError:
                state["timed_out"] = True
                if not state["started"]:
                    state["started"] = True
                    body = f"the request body stalled for {seconds:g} s\n".encode()
                    await send({"type": "http.response.start", "status": 408,
                                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if state["timed_out"]:
                return  # the 408 went out; the app's answer has no one to go to
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state["timed_out"]:
                raise


class _ResourceLog(logging.Filter):
    """Lets an error record about running out of descriptors (EMFILE…) through once per
    RESOURCE_LOG_SECONDS, without its traceback and with a count of those held back."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[int, float] = {}
        self.held: dict[int, int] = {}
        self.lock = threading.Lock()

    def allow(self, code: int) -> int | None:
        now = time.monotonic()
        with self.lock:
            if code in self.last and now - self.last[code] < RESOURCE_LOG_SECONDS:
                self.held[code] = self.held.get(code, 0) + 1
                return None
            self.last[code] = now
            return self.held.pop(code, 0)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = resource_errno(exc)
        if code is None:
            return True
        held = self.allow(code)
        if held is None:
            return False
        record.msg = f"{record.getMessage()}: {exc}" + (f" ({held} more like it since)" if held else "")
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


RESOURCE_LOG = _ResourceLog()


def resource_errno(exc: BaseException | None) -> int | None:
    """The errno of `exc` when it says the process ran out of something (RESOURCE_ERRNOS)."""
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        return exc.errno
    return None


def _loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: `socket.accept() out of system resource` and
    its kin once a minute in one line; anything else as asyncio would."""
    exc = context.get("exception")
    code = resource_errno(exc)
    if code is None:
        loop.default_exception_handler(context)
        return
    held = RESOURCE_LOG.allow(code)
    if held is not None:
        logging.getLogger("asyncio").error("dashboard: %s: %s%s", context.get("message", "error"), exc,
                                           f" ({held} more like it since)" if held else "")


def _protocol() -> type:
    """uvicorn's h11 protocol with a deadline for a request's headers and a cap on
    connections that drops the oldest one still waiting for its request."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: dict[Any, None] = {}  # connections without a whole request, oldest first

    class Guarded(H11Protocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_request()
            while len(self.connections) > MAX_CONNECTIONS and len(waiting) > 1:
                oldest = next(iter(waiting))
                waiting.pop(oldest, None)
                if oldest is not self:
                    oldest.transport.close()

        def _wait_for_request(self) -> None:
            waiting[self] = None
            self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._header_deadline, self.scope)

        def _header_deadline(self, scope: Any) -> None:
            if self.scope is scope and self in waiting and not self.transport.is_closing():
                waiting.pop(self, None)
                self.transport.close()  # no whole request in time

        def data_received(self, data: bytes) -> None:
            scope = self.scope
            super().data_received(data)
            if self.scope is not scope:
                waiting.pop(self, None)  # a request's headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait_for_request()

        def connection_lost(self, exc: Exception | None) -> None:
            waiting.pop(self, None)
            super().connection_lost(exc)

    return Guarded


def _server(config: "Config", sock: socket.socket, *, supervised: bool, listen: str | None = None) -> Any:
    import uvicorn

    from daemon.web.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Under the supervisor a Ctrl-C in the terminal reaches the whole process
            # group; only the supervisor decides when the dashboard stops (SIGTERM).
            if supervised and sig == signal.SIGINT:
                return
            super().handle_exit(sig, frame)

        async def serve(self, sockets: Any = None) -> None:
            asyncio.get_running_loop().set_exception_handler(_loop_errors)
            await super().serve(sockets)

    for name in ("asyncio", "uvicorn", "uvicorn.error"):
        if RESOURCE_LOG not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(RESOURCE_LOG)
    _more_descriptors()
    uv_config = uvicorn.Config(BodyTimeout(create_app(config, listen)), log_config=None, access_log=False,
                               lifespan="off", server_header=False, timeout_graceful_shutdown=5, proxy_headers=False,
                               http=_protocol(), timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)
    return Server(uv_config)


def _more_descriptors() -> None:
    """Raise this process's soft limit on open files to its hard limit (at most 65536)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        pass


def _sweep_uploads(config: "Config") -> None:
    from loguru import logger

    from daemon.web.upload import sweep_abandoned

    try:
        removed = sweep_abandoned(config)
    except OSError as exc:
        logger.warning("dashboard: cannot sweep abandoned uploads: {}", exc)
        return
    for path in removed:
        logger.info("dashboard: removed {}, left by an upload that was cut off", path)


def _watch_parent(parent: int) -> None:
    """Stop this process (SIGTERM: uvicorn's own graceful stop) once its parent is gone,
    as a worker does; a SIGKILL of `spkd run` must not leave a dashboard serving."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        from loguru import logger

        logger.warning("dashboard: the daemon (pid {}) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(15)
        os._exit(int(ExitCode.LOST_PARENT))

    threading.Thread(target=watch, name="spkd-web-parent", daemon=True).start()


def _bind_waiting(listen: str) -> socket.socket:
    """bind(), waiting up to BIND_WAIT_SECONDS while the address is in use."""
    deadline = time.monotonic() + BIND_WAIT_SECONDS
    while True:
        try:
            return bind(listen)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def serve(config: "Config", listen: str) -> None:
    """`spkd web`: serve in the foreground until SIGINT or SIGTERM."""
    from loguru import logger

    sock = bind(listen)
    _sweep_uploads(config)
    logger.info("dashboard at {} (database and folders of {})", url_of(sock), config.source or "the defaults")
    print(f"spkd web: serving {url_of(sock)}", file=sys.stderr, flush=True)
    _server(config, sock, supervised=False, listen=listen).run(sockets=[sock])


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
    _watch_parent(os.getppid())
    try:
        sock = _bind_waiting(listen)
    except OSError as exc:
        logger.error("dashboard cannot listen on {}: {}", listen, exc)
        raise SystemExit(int(ExitCode.BOOT_FAILED)) from None
    _sweep_uploads(config)
    logger.info("dashboard at {} (pid {})", url_of(sock), os.getpid())
    ready.set()
    _server(config, sock, supervised=True, listen=listen).run(sockets=[sock])
    raise SystemExit(int(ExitCode.OK))
