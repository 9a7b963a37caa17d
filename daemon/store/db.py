"""The database itself: engines with spkd's connection settings, and the schema's
Alembic migrations (shipped in the package as `daemon.migrations`, the repository's
top-level `migrations/` folder).

SQLite runs in WAL mode with `busy_timeout`, `synchronous=NORMAL` and foreign keys
on, and every write transaction starts with `BEGIN IMMEDIATE`, so that a writer
waits for the lock at BEGIN instead of failing halfway. PostgreSQL needs nothing
but `pool_pre_ping` (a server restart must not leave dead connections in the pool).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

from daemon.errors import DatabaseUnavailableError, UnusableDatabaseError

__all__ = ["backend_name", "check_usable", "current_revision", "display_url", "head_revision", "make_engine",
           "migrate", "migrations_dir", "normalize_url", "ping", "schema_problem", "sqlite_path", "translate_errors",
           "translate_unusable", "unusable_database"]

# pg_advisory_xact_lock key serialising migrations of hosts that share a database ("spkd").
MIGRATION_LOCK_KEY = 0x73706B64
# How long an SQLite writer waits for the write lock before it gives up with "database
# is locked" (spkd's workers then wait and try again; see daemon/jobs/worker.py).
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


def normalize_url(url: str) -> str:
    """`postgresql://…` and `postgres://…` mean PostgreSQL through psycopg 3, the driver
    spkd depends on (SQLAlchemy's default for them would be psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def display_url(url: str) -> str:
    """The database URL without its password: for logs, the runtime file and the terminal."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported elsewhere; never echo it here
        return "(unparsable URL)"


def backend_name(url: str) -> str | None:
    """The kind of database `url` names ("sqlite", "postgresql"); None when it is not a URL."""
    try:
        return make_url(normalize_url(url)).get_backend_name()
    except Exception:  # noqa: BLE001 - not a URL: no backend
        return None


# SQLite's result codes (their low byte) that say the file itself is unusable: corrupt,
# not a database at all, or impossible to open (a folder where the file should be).
_SQLITE_READONLY = 8
_SQLITE_UNUSABLE = {11: "it is corrupt", 26: "it is not an SQLite database", 14: "it cannot be opened"}


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL; None for PostgreSQL and in-memory databases."""
    try:
        parsed = make_url(normalize_url(url))
    except Exception:  # noqa: BLE001 - not a URL: nothing to name
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _unusable(path: Path, why: str) -> UnusableDatabaseError:
    return UnusableDatabaseError(
        f"the job database {path} cannot be used: {why}. spkd never deletes or rewrites it: restore it from a "
        f"backup, or move it aside to start with a fresh, empty database (mv {path} {path}.broken, and its "
        "-wal and -shm files beside it, if any)")


def unusable_database(url: str, exc: BaseException) -> UnusableDatabaseError | None:
    """The UnusableDatabaseError that `exc` (SQLAlchemy's or sqlite3's) means, or None
    when it says something else (a lock, a full disk, a missing table)."""
    path = sqlite_path(url)
    if path is None:
        return None
    if isinstance(exc, DatabaseUnavailableError) and exc.__cause__ is not None:
        exc = exc.__cause__  # what the store raised for a file it could not open
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, sqlite3.Error):
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_READONLY:
        return UnusableDatabaseError(
            f"the job database {path} is read-only ({orig}): spkd writes to it and to the files beside it; make "
            f"the file and its folder {path.parent} writable by the user spkd runs as")
    why = _SQLITE_UNUSABLE.get(code & 0xFF) if isinstance(code, int) else None
    if why is None and "malformed" in str(orig):
        why = "it is corrupt"
    if why is None:
        return None
    if path.is_dir():
        why = "it is a folder, not a file"
    return _unusable(path, f"{why} ({orig})")


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The one place where the driver's trouble becomes spkd's: an OperationalError or
    InterfaceError (another process holds the write lock past the busy timeout, the
    server is out of reach, the disk is full) leaves the store as a
    DatabaseUnavailableError, which its callers wait out; anything else (a bug, a
    broken constraint) passes unchanged. Every transaction and read of the store, and
    every migration, runs inside it."""
    try:
        yield
    except (OperationalError, InterfaceError, sqlite3.OperationalError) as exc:
        # sqlite3's own: check_usable and the console read the file without SQLAlchemy.
        raise DatabaseUnavailableError.from_driver(exc) from exc


@contextlib.contextmanager
def translate_unusable(url: str) -> Iterator[None]:
    """translate_errors, and beyond it: an error that means the file itself is
    unusable becomes one clear UnusableDatabaseError (for start-up and commands, which
    then stop; a running daemon waits instead)."""
    try:
        with translate_errors():
            yield
    except Exception as exc:
        unusable = unusable_database(url, exc)
        if unusable is not None:
            raise unusable from None
        raise


def check_usable(url: str, *, thorough: bool = True) -> None:
    """Raise UnusableDatabaseError when the SQLite file exists but cannot be used: a
    folder, not a database, or (`thorough`: PRAGMA quick_check, which reads every page)
    corrupt anywhere. Read-only: the file is opened with `mode=ro` and never changed.
    A file that does not exist yet is fine (it is created empty); PostgreSQL checks its
    own storage."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    if not path.is_file():
        raise _unusable(path, "it is a folder, not a file" if path.is_dir() else "it is not a regular file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise unusable_database(url, exc) or _unusable(path, f"it cannot be opened ({exc})") from None
    try:
        with translate_unusable(url):
            conn.execute("PRAGMA schema_version").fetchone()  # reads the header and the schema page
            if thorough:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    # one line: a row of quick_check's report may itself hold several
                    found = "; ".join(" ".join(str(p).split()) for p in problems)
                    raise _unusable(path, f"it is corrupt (quick_check: {found[:500]})")
    finally:
        conn.close()


def check_writable(url: str) -> None:
    """Raise UnusableDatabaseError when the SQLite file cannot be written (a read-only
    file, folder or file system): a permanent problem, which `spkd run` reports at start
    instead of waiting on it. Takes the write lock for a moment and keeps nothing (one
    write, rolled back)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    with translate_unusable(url):
        conn = sqlite3.connect(str(path), timeout=SQLITE_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:  # the same value, rolled back: a write that SQLite refuses on a read-only file
                conn.execute(f"PRAGMA user_version = {int(conn.execute('PRAGMA user_version').fetchone()[0])}")
            finally:
                conn.execute("ROLLBACK")
        finally:
            conn.close()


def _sqlite_setup(engine: Engine, *, foreign_keys: bool, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if read_only:
            cursor.execute("PRAGMA query_only=ON")  # the journal mode is the writers' to set
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN, so a claim never fails halfway
        # with SQLITE_BUSY on lock upgrade; busy_timeout queues writers instead.
        reading = read_only or conn.get_execution_options().get("spkd_read", False)
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def make_engine(url: str, *, foreign_keys: bool = True, read_only: bool = False) -> Engine:
    """An engine for `url` (`foreign_keys=False`: SQLite without foreign-key enforcement,
    for migrations that rebuild a referenced table). `read_only`: every connection only
    reads (SQLite: the file opened `mode=ro`, never created; PostgreSQL: read-only
    transactions), for a reader that must not change the database it looks at."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if read_only and parsed.database and parsed.database != ":memory:":
            uri = f"{Path(parsed.database).resolve().as_uri()}?mode=ro"
            engine = create_engine("sqlite://", json_serializer=_json_text, creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_SECONDS, check_same_thread=False))
        else:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                                   json_serializer=_json_text)
        _sqlite_setup(engine, foreign_keys=foreign_keys, read_only=read_only)
        return engine
    if read_only:
        return create_engine(url, pool_pre_ping=True, json_serializer=_json_text,
                             connect_args={"options": "-c default_transaction_read_only=on"})
    return create_engine(url, pool_pre_ping=True, json_serializer=_json_text)


def _json_text(value: Any) -> str:
    """JSON columns as people read them (`spkd sql`, a LIKE '%李雷%'): no \\u escapes,
    except where a value holds a lone surrogate (a file name that is not UTF-8), which
    only an escape can carry into the database."""
    readable = json.dumps(value, ensure_ascii=False)
    try:
        readable.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return readable


def migrations_dir() -> Path:
    """The Alembic scripts, found as package data (an editable install and a wheel alike)."""
    return Path(str(importlib.resources.files("daemon.migrations")))


def _alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent), in one transaction.

    On SQLite, foreign keys are off while it runs: altering a table there means copying
    it (Alembic's batch mode), and dropping the old copy of a table other tables refer
    to would otherwise fail or cascade. `PRAGMA foreign_key_check` then proves, before
    the commit, that every reference still holds."""
    from alembic import command

    cfg = _alembic_config(url)
    engine = make_engine(url, foreign_keys=False)
    try:
        with translate_errors(), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Hosts sharing one database may start together: one migrates, the others
                # wait here (the lock ends with the transaction) and then find nothing to do.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if conn.dialect.name == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"migration left {len(broken)} broken foreign key(s), e.g. {tuple(broken[0])}; "
                                       "rolled back")
    finally:
        engine.dispose()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(url: str, *, read_only: bool = False) -> str | None:
    """The schema revision of the database; None for an empty one. A database whose file
    is unusable raises UnusableDatabaseError (it must not look empty: it would be
    migrated over). `read_only`: looked at through a read-only connection."""
    engine = make_engine(url, read_only=read_only)
    try:
        with translate_unusable(url), engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception as exc:
                if unusable_database(url, exc) is not None:
                    raise
                return None
    finally:
        engine.dispose()


def ping(url: str) -> None:
    """Connect and run `SELECT 1`: DatabaseUnavailableError when the database cannot be
    reached (the server is down, refuses the role); other errors (no driver for the URL)
    as they come."""
    engine = make_engine(url)
    try:
        with translate_errors(), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def schema_problem(url: str) -> str | None:
    """Why this spkd cannot read the database, or None. A database that does not exist
    yet is created (it is simply empty)."""
    check_usable(url)  # PRAGMA quick_check reads every page: ~0.3 s for 300 MB
    current = current_revision(url)
    if current is None:
        with translate_unusable(url):
            migrate(url)
        return None
    head = head_revision()
    if current != head:
        return (f"the job database is at schema revision {current}, this spkd needs {head}: "
                "run `spkd db upgrade` (the daemon also upgrades it when it starts)")
    return None
