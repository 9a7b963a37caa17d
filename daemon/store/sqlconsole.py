"""`spkd sql`: one statement against the job database, read-only, bounded in time.

SQLite: the file opened with `mode=ro` and `PRAGMA query_only`, no database may be
attached (so `ATTACH` and `VACUUM INTO` cannot create files anywhere), and an
authorizer that allows reading and functions only: SELECT, reading tables and
views (virtual tables such as FTS5 and their shadow tables included), functions
(`highlight`, `snippet`, `bm25`, MATCH), recursive CTEs and the informational
PRAGMAs (`table_info`, `index_list`, …). The statement runs on a thread of its own:
at `timeout_seconds` or Ctrl-C the connection is interrupted (a progress handler and
Connection.interrupt), and should one step of SQLite's never look (a single `instr`
over megabytes), the command answers anyway and leaves that thread to the exit. PostgreSQL: a session whose every transaction
is read-only, with `statement_timeout`; psycopg cancels the statement at Ctrl-C.
Either way a statement that would write is refused with ReadOnlyError and changes
nothing. Not part of the store (which does all of spkd's own writing): this runs
the user's SQL, never spkd's.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from daemon.errors import DatabaseUnavailableError, ReadOnlyError
from daemon.store.db import check_usable, normalize_url, unusable_database

__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_TIMEOUT_SECONDS", "query_readonly", "readable_json", "readable_rows"]

DEFAULT_TIMEOUT_SECONDS = 30.0
# Rows fetched at most (one more tells the caller there were more): a query without
# an end, or over a huge table, must not fill the memory before its time is up.
DEFAULT_MAX_ROWS = 10_000
# The longest string or blob one value may have: `randomblob(1e9)` must not allocate a GB.
MAX_VALUE_BYTES = 16 * 2**20
# How many SQLite virtual-machine steps between two looks at the clock and at Ctrl-C.
_PROGRESS_STEPS = 10_000
# How long an interrupted statement may take to notice before it is left behind.
_INTERRUPT_GRACE_SECONDS = 1.0

# Informational PRAGMAs: they read the schema or the file's properties, whatever their argument.
_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                 "foreign_key_list", "collation_list", "function_list", "module_list", "pragma_list",
                 "compile_options", "database_list", "data_version"}
# PRAGMAs that read a setting when given no value (and would change it with one).
_SETTING_PRAGMAS = {"schema_version", "user_version", "application_id", "page_count", "page_size",
                    "freelist_count", "encoding", "journal_mode", "foreign_keys", "query_only", "busy_timeout"}


# In JSON text: an escaped backslash (kept, so that an escaped backslash before `u` stays
# text), a surrogate pair, or one \u escape.
_JSON_ESCAPE = re.compile(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})", re.IGNORECASE)


def _unescaped(match: re.Match[str]) -> str:
    if match.group(1):
        code = 0x10000 + ((int(match.group(1), 16) - 0xD800) << 10) + (int(match.group(2), 16) - 0xDC00)
    elif match.group(3):
        code = int(match.group(3), 16)
    else:
        return match.group(0)
    char = chr(code)
    # ASCII escapes (\u0022), lone surrogates and invisible characters stay escaped.
    if code < 0x80 or 0xD800 <= code <= 0xDFFF or not char.isprintable():
        return match.group(0)
    return char


def readable_json(value: Any) -> Any:
    r"""JSON text with its \u escapes of printable characters written as the characters
    (`{"voice": "\u674e\u96f7"}` -> `{"voice": "李雷"}`), the same JSON otherwise, byte
    for byte; any other value as it is. SQLAlchemy stored JSON columns (job_events.detail,
    jobs.options) with ensure_ascii on before spkd turned it off."""
    if not isinstance(value, str) or "\\u" not in value or value.lstrip()[:1] not in ("{", "[", '"'):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    readable = _JSON_ESCAPE.sub(_unescaped, value)
    try:
        return readable if json.loads(readable) == parsed else value
    except ValueError:
        return value


def readable_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`rows` with every JSON text made readable (readable_json), for showing them."""
    return [tuple(readable_json(v) for v in row) for row in rows]


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 in _READ_PRAGMAS or (arg1 in _SETTING_PRAGMAS and arg2 is None)):
        return sqlite3.SQLITE_OK
    # Connecting a virtual table (FTS5) reads its declaration through an UPDATE check on
    # the schema table; nothing can write there (mode=ro, query_only, no writable_schema).
    if action == sqlite3.SQLITE_UPDATE and arg1 in ("sqlite_master", "sqlite_schema"):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class _Stop:
    """Why a running statement must stop: its time is up, or Ctrl-C. Polled by SQLite's
    progress handler, so the statement stops within a few milliseconds."""

    def __init__(self, timeout_seconds: float | None) -> None:
        self.deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        self.interrupted = False
        self.timed_out = False

    def __call__(self) -> int:
        if self.interrupted:
            return 1
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0


def _on_sigint(stop: _Stop) -> Callable[[], None]:
    """Route Ctrl-C to `stop` while a statement runs (the default handler cannot reach
    into SQLite's C loop); returns the function that puts the old handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)

    def handler(_signum: int, _frame: Any) -> None:
        stop.interrupted = True

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def query_readonly(url: str, sql: str, *, timeout_seconds: float | None = DEFAULT_TIMEOUT_SECONDS,
                   max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement against the database opened read-only; a statement that would
    write raises ReadOnlyError and changes nothing, as does one that runs longer than
    `timeout_seconds` (None: no limit). At most `max_rows` + 1 rows come back (the
    caller says there were more). Ctrl-C stops the statement (KeyboardInterrupt)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _query_readonly_sqlite(url, Path(parsed.database or ""), sql, timeout_seconds, max_rows)
    if parsed.get_backend_name() != "postgresql":
        raise ReadOnlyError(f"spkd sql supports SQLite and PostgreSQL databases, not {parsed.get_backend_name()}")
    return _query_readonly_postgres(url, sql, timeout_seconds, max_rows)


def _query_readonly_sqlite(url: str, path: Path, sql: str, timeout_seconds: float | None,
                           max_rows: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    if not path.exists():
        raise ReadOnlyError(f"no database at {path} (has the daemon run yet?)")
    check_usable(url)
    stop = _Stop(timeout_seconds)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    except sqlite3.Error as exc:
        raise unusable_database(url, exc) or ReadOnlyError(str(exc)) from None
    restore = _on_sigint(stop)
    abandoned = False
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        conn.set_authorizer(_authorizer)
        conn.set_progress_handler(stop, _PROGRESS_STEPS)
        try:
            try:
                cursor, rows = _run_bounded(conn, sql, max_rows, stop)
            except _Abandoned:
                abandoned = True  # the thread holds the connection; closing it would wait for the step
                if stop.interrupted:
                    raise KeyboardInterrupt from None
                raise ReadOnlyError(f"stopped after {timeout_seconds:g} s (--timeout)") from None
        except sqlite3.Error as exc:
            if stop.interrupted:
                raise KeyboardInterrupt from None
            if stop.timed_out:
                raise ReadOnlyError(f"stopped after {timeout_seconds:g} s (--timeout)") from None
            unusable = unusable_database(url, exc)
            if unusable is not None:
                raise unusable from None
            message = str(exc)
            if any(word in message for word in ("readonly", "query_only", "read-only", "not authorized",
                                                "authorization denied", "too many attached")):
                raise ReadOnlyError(f"refused: the job database is opened read-only and spkd sql only reads "
                                    f"({message})") from None
            raise ReadOnlyError(message) from None
        columns = [d[0] for d in cursor.description or ()]
        return columns, [tuple(r) for r in rows]
    finally:
        restore()
        if not abandoned:
            conn.close()


class _Abandoned(Exception):
    """The statement did not stop when interrupted: its thread is left running."""


def _run_bounded(conn: sqlite3.Connection, sql: str, max_rows: int, stop: _Stop) -> tuple[Any, list[Any]]:
    """Execute `sql` and fetch up to `max_rows` + 1 rows on a thread, while this thread
    watches the clock and Ctrl-C (its signal handler runs here, between two short
    waits): when either says stop, the connection is interrupted; a statement that does
    not end within _INTERRUPT_GRACE_SECONDS after that raises _Abandoned."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            cursor = conn.execute(sql)
            outcome["value"] = (cursor, cursor.fetchmany(max_rows + 1))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="spkd-sql", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
        if thread.is_alive() and stop() == 1:
            conn.interrupt()
            thread.join(_INTERRUPT_GRACE_SECONDS)
            if thread.is_alive():
                raise _Abandoned
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _query_readonly_postgres(url: str, sql: str, timeout_seconds: float | None,
                             max_rows: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every transaction of the session is read-only (default_transaction_read_only),
    and the statement is sent as one prepared statement, which PostgreSQL refuses to
    hold more than one command: so `COMMIT; DELETE …` cannot step out of the read-only
    transaction, and a lone `COMMIT` or `SET …` has nothing after it to affect.
    `statement_timeout` bounds it in time; psycopg cancels it on the server at Ctrl-C."""
    from sqlalchemy.pool import NullPool

    options = "-c default_transaction_read_only=on"
    if timeout_seconds:
        options += f" -c statement_timeout={max(1, int(timeout_seconds * 1000))}"
    engine = create_engine(normalize_url(url), poolclass=NullPool, connect_args={"options": options})
    try:
        try:
            raw = engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 - say why, in one line
            raise ReadOnlyError(f"cannot connect: {DatabaseUnavailableError.summary(exc)}") from None
        try:
            driver = raw.driver_connection
            if type(driver).__module__.split(".")[0] != "psycopg":
                raise ReadOnlyError("spkd sql needs the psycopg driver (database.url postgresql+psycopg://…)")
            cursor = driver.cursor()
            try:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(sql, prepare=True)
                rows = [tuple(r) for r in cursor.fetchmany(max_rows + 1)] if cursor.description else []
            except Exception as exc:  # noqa: BLE001 - psycopg.Error and friends
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if getattr(exc, "sqlstate", None) == "57014" and "statement timeout" in message:
                    raise ReadOnlyError(f"stopped after {timeout_seconds:g} s (--timeout)") from None
                if "read-only" in message:
                    raise ReadOnlyError(f"refused: the job database is opened read-only ({message})") from None
                raise ReadOnlyError(message) from None
            columns = [d.name for d in cursor.description] if cursor.description else []
            driver.rollback()
            return columns, rows
        finally:
            raw.close()
    finally:
        engine.dispose()
