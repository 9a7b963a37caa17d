"""`spkd sql`: one statement against the job database, opened read-only.

SQLite: the file opened with `mode=ro` and `PRAGMA query_only`; PostgreSQL: a session
whose every transaction is read-only. Either way a statement that would write is
refused with ReadOnlyError and changes nothing. Not part of the store (which does
all of spkd's own writing): this runs the user's SQL, never spkd's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from daemon.db import normalize_url
from daemon.errors import ReadOnlyError

__all__ = ["query_readonly"]


def query_readonly(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement against the database opened read-only; a statement that would
    write raises ReadOnlyError and changes nothing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        import sqlite3

        path = Path(parsed.database or "")
        if not path.exists():
            raise ReadOnlyError(f"no database at {path} (has the daemon run yet?)")
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            conn.execute("PRAGMA query_only=ON")
            try:
                cursor = conn.execute(sql)
                rows = cursor.fetchall()
            except sqlite3.OperationalError as exc:
                if "readonly" in str(exc) or "query_only" in str(exc) or "read-only" in str(exc):
                    raise ReadOnlyError(f"refused: the job database is opened read-only ({exc})") from None
                raise ReadOnlyError(str(exc)) from None
            except sqlite3.Error as exc:
                raise ReadOnlyError(str(exc)) from None
            columns = [d[0] for d in cursor.description or ()]
            return columns, [tuple(r) for r in rows]
        finally:
            conn.close()
    if parsed.get_backend_name() != "postgresql":
        raise ReadOnlyError(f"spkd sql supports SQLite and PostgreSQL databases, not {parsed.get_backend_name()}")
    return _query_readonly_postgres(url, sql)


def _query_readonly_postgres(url: str, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every transaction of the session is read-only (default_transaction_read_only),
    and the statement is sent as one prepared statement, which PostgreSQL refuses to
    hold more than one command: so `COMMIT; DELETE …` cannot step out of the read-only
    transaction, and a lone `COMMIT` or `SET …` has nothing after it to affect."""
    from sqlalchemy.pool import NullPool

    engine = create_engine(normalize_url(url), poolclass=NullPool,
                           connect_args={"options": "-c default_transaction_read_only=on"})
    try:
        try:
            raw = engine.raw_connection()
        except Exception as exc:  # noqa: BLE001 - say why, in one line
            raise ReadOnlyError(f"cannot connect: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}") from None
        try:
            driver = raw.driver_connection
            if type(driver).__module__.split(".")[0] != "psycopg":
                raise ReadOnlyError("spkd sql needs the psycopg driver (database.url postgresql+psycopg://…)")
            cursor = driver.cursor()
            try:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(sql, prepare=True)
            except Exception as exc:  # noqa: BLE001 - psycopg.Error and friends
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if "read-only" in message:
                    raise ReadOnlyError(f"refused: the job database is opened read-only ({message})") from None
                raise ReadOnlyError(message) from None
            columns = [d.name for d in cursor.description] if cursor.description else []
            rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            driver.rollback()
            return columns, rows
        finally:
            raw.close()
    finally:
        engine.dispose()
