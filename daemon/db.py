"""The database itself: engines with spkd's connection settings, and the schema's
Alembic migrations (shipped in the package as `daemon.migrations`, the repository's
top-level `migrations/` folder).

SQLite runs in WAL mode with `busy_timeout`, `synchronous=NORMAL` and foreign keys
on, and every write transaction starts with `BEGIN IMMEDIATE`, so that a writer
waits for the lock at BEGIN instead of failing halfway. PostgreSQL needs nothing
but `pool_pre_ping` (a server restart must not leave dead connections in the pool).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

__all__ = ["current_revision", "display_url", "head_revision", "make_engine", "migrate", "migrations_dir",
           "normalize_url", "schema_problem"]

# pg_advisory_xact_lock key serialising migrations of hosts that share a database ("spkd").
MIGRATION_LOCK_KEY = 0x73706B64
# How long an SQLite writer waits for the write lock before it gives up with "database
# is locked" (spkd's workers then wait and try again; see daemon/worker.py).
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


def _sqlite_setup(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN, so a claim never fails halfway
        # with SQLITE_BUSY on lock upgrade; busy_timeout queues writers instead.
        reading = conn.get_execution_options().get("spkd_read", False)
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def make_engine(url: str, *, foreign_keys: bool = True) -> Engine:
    """An engine for `url` (`foreign_keys=False`: SQLite without foreign-key enforcement,
    for migrations that rebuild a referenced table)."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        _sqlite_setup(engine, foreign_keys=foreign_keys)
        return engine
    return create_engine(url, pool_pre_ping=True)


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
        with engine.begin() as conn:
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


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                return None
    finally:
        engine.dispose()


def schema_problem(url: str) -> str | None:
    """Why this spkd cannot read the database, or None. A database that does not exist
    yet is created (it is simply empty)."""
    current = current_revision(url)
    if current is None:
        migrate(url)
        return None
    head = head_revision()
    if current != head:
        return (f"the job database is at schema revision {current}, this spkd needs {head}: "
                "run `spkd db upgrade` (the daemon also upgrades it when it starts)")
    return None
