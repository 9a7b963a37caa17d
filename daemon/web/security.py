"""Who may use the dashboard, and what a page may do in the browser.

* **Token.** With `web.token` set, every request but the login page and the static
  files must carry it: as `Authorization: Bearer <token>` (scripts, Prometheus), or as
  the session cookie the login form sets (HttpOnly, SameSite=Strict; its value is an
  HMAC of the token, so the token itself never sits in the browser, and changing the
  token logs every browser out). Without a token (loopback only, see server.refusal)
  there is nothing to log in to.
* **CSRF.** Every state change is a POST, and a POST from a browser must carry the
  CSRF token: the value of the `spkd_csrf` cookie (random, HttpOnly, SameSite=Strict)
  as the form field `csrf_token` or the header `X-CSRF-Token`; the pages embed it. A
  request authenticated by its Authorization header is a script's, which a browser
  never sends on its own, so it needs none. A POST whose Origin is another site's is
  refused regardless.
* **Host.** A request whose `Host` is none of the dashboard's own names (HostRule:
  web.listen's host, `localhost` and the loopback addresses when that is loopback, any
  address and this machine's name when it is 0.0.0.0 or ::, and web.allowed_hosts) gets
  421 before anything else: a page of another site whose name an attacker points at
  127.0.0.1 (DNS rebinding) reads nothing and changes nothing. The Origin of a POST is
  judged against the same names.
* **Guessing.** Wrong tokens (login form or bearer) are counted per client address
  (LoginThrottle): after a few, each further try waits longer, and one that comes too
  soon gets 429 without being looked at.
* **Headers.** A Content-Security-Policy that allows scripts, styles, media and
  fetches from this origin only (no inline script, no inline style), no framing, no
  referrer to other sites, no MIME sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import threading
import time
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlsplit

__all__ = ["CSP", "CSRF_COOKIE", "CSRF_FIELD", "CSRF_HEADER", "SESSION_COOKIE", "HostRule", "LoginThrottle",
           "SecurityMiddleware", "csrf_ok", "cookie_header", "session_value"]

SESSION_COOKIE = "spkd_session"
CSRF_COOKIE = "spkd_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not no-referrer: with it Chrome sends `Origin: null` on form posts, and the
    # origin check below would learn nothing.
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)
# Reachable without the token: the login page itself and the files it needs.
OPEN_PATHS = ("/login", "/static/")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an IP address, also in the spellings inet_aton takes (`0`, `0x7f.1`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _host_of(netloc: str) -> str:
    """The host of a Host header or an Origin's netloc, without port or brackets, lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    host, sep, port = netloc.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        netloc = host
    return netloc.rstrip(".")


class HostRule:
    """The names a request may give in `Host` (and a POST in `Origin`): see the module docstring."""

    def __init__(self, listen_host: str, allowed_hosts: tuple[str, ...] = ()) -> None:
        host = _host_of(listen_host)
        self.address = _address(host)
        self.loopback = host == "localhost" or bool(self.address and self.address.is_loopback)
        self.any_address = bool(self.address and self.address.is_unspecified)
        self.names = {host, *(_host_of(h) for h in allowed_hosts)}
        if self.loopback:
            self.names.add("localhost")
        if self.any_address:
            self.names.update({"localhost", socket.gethostname().lower(), socket.getfqdn().lower()})

    def allows(self, netloc: str) -> bool:
        host = _host_of(netloc)
        if host in self.names:
            return True
        address = _address(host) if host and host[0].isdigit() or ":" in host else None
        if address is None:
            return False
        # An address typed into the browser is its own origin: no name to rebind.
        return self.any_address or (self.loopback and address.is_loopback) or address == self.address


class LoginThrottle:
    """Wrong tokens per client address: the first FREE cost nothing, then each further
    try must wait twice as long as the one before (up to MAX_WAIT s); a right token
    clears the count. Thread-safe; the oldest addresses are forgotten beyond MAX_CLIENTS."""

    FREE = 5
    MAX_WAIT = 300.0
    MAX_CLIENTS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wait_seconds(self, client: str) -> float:
        """How long `client` must still wait before its next try is looked at (0: now)."""
        with self._lock:
            count, last = self._failures.get(client, (0, 0.0))
        if count < self.FREE:
            return 0.0
        return max(0.0, last + min(self.MAX_WAIT, 2.0 ** (count - self.FREE)) - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            count, _ = self._failures.pop(client, (0, 0.0))
            self._failures[client] = (count + 1, self._clock())
            if len(self._failures) > self.MAX_CLIENTS:
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"spkd-session-1", hashlib.sha256).hexdigest()


def cookie_header(name: str, value: str, *, max_age: int | None = None) -> str:
    parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def _cookies(headers: Mapping[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header counts as none
        return {}
    return {k: m.value for k, m in jar.items()}


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def csrf_ok(scope: Scope, submitted: str | None) -> bool:
    """Whether a POST carries the CSRF token (or needs none: a bearer-token script)."""
    state = scope.get("state", {})
    if state.get("auth") == "bearer":
        return True
    expected = state.get("csrf_cookie")
    return bool(expected and submitted and hmac.compare_digest(expected, submitted))


class SecurityMiddleware:
    """Pure ASGI: checks the token, sets up the CSRF cookie, adds the headers."""

    def __init__(self, app: Any, *, token: str | None, hosts: HostRule | None = None,
                 throttle: LoginThrottle | None = None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None
        self.hosts = hosts or HostRule("127.0.0.1")
        self.throttle = throttle or LoginThrottle()

    def _authenticated(self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str) -> str | None:
        """How the request proved it may come in ("bearer", "cookie", "open"), or None."""
        if self.token is None:
            return "open"
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
                self.throttle.succeeded(client)
                return "bearer"
            self.throttle.failed(client)
        if self.session and hmac.compare_digest(cookies.get(SESSION_COOKIE, "").encode(), self.session.encode()):
            return "cookie"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if "host" in headers and not self.hosts.allows(headers["host"]):
            await _plain(send, 421, "this dashboard does not serve that host name (add it to web.allowed_hosts)")
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            # No name, query or path has a NUL in it; a database may refuse one with an error.
            await _plain(send, 400, "a NUL character is not allowed in a path or query")
            return
        client = client_of(scope)
        if "authorization" in headers and self.token is not None:
            wait = self.throttle.wait_seconds(client)
            if wait > 0:
                await _plain(send, 429, f"too many wrong tokens: try again in {wait:.0f} s",
                             extra=[(b"retry-after", str(int(wait) + 1).encode())])
                return
        cookies = _cookies(headers)
        path = scope.get("path", "/")
        method = scope.get("method", "GET").upper()
        auth = self._authenticated(headers, cookies, client)
        csrf_cookie = cookies.get(CSRF_COOKIE) or None
        new_csrf = None
        if csrf_cookie is None or len(csrf_cookie) < 32:
            csrf_cookie = new_csrf = secrets.token_urlsafe(32)
            if method not in SAFE_METHODS:
                csrf_cookie = None  # a POST must bring the cookie it was given, never a fresh one
        scope.setdefault("state", {}).update(auth=auth, csrf_cookie=csrf_cookie, csrf=csrf_cookie or new_csrf,
                                             token_required=self.token is not None)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(HEADERS)
                if new_csrf is not None:
                    extra.append((b"set-cookie", cookie_header(CSRF_COOKIE, new_csrf).encode()))
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra
                                                                         if k not in present or k == b"set-cookie"]
            await send(message)

        if method not in SAFE_METHODS and not _same_origin(headers, self.hosts):
            await _plain(send_with_headers, 403, "cross-site request refused")
            return
        if auth is None and not any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS):
            if method == "GET" and "text/html" in headers.get("accept", ""):
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + ("?" + query if query else "")
                await _redirect(send_with_headers, "/login?next=" + quote(target, safe=""))
            else:
                await _plain(send_with_headers, 401, "a token is required (Authorization: Bearer, or log in)",
                             extra=[(b"www-authenticate", b'Bearer realm="spkd"')])
            return
        await self.app(scope, receive, send_with_headers)


def _same_origin(headers: Mapping[str, str], hosts: HostRule) -> bool:
    """A browser names the site a POST comes from in Origin: ours (one of the dashboard's
    own names, HostRule, and the host and port the request was sent to) passes, another's
    is refused. None, or an opaque `null` (privacy modes), tells nothing: the CSRF token
    decides alone."""
    origin = headers.get("origin")
    if not origin or origin == "null":
        return True
    netloc = urlsplit(origin).netloc.lower()
    if not hosts.allows(netloc):
        return False
    return "host" not in headers or netloc == headers["host"].lower()


async def _plain(send: Send, status: int, text: str, *, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})
