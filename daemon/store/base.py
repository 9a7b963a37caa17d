"""What every part of the store shares: the engine, the two ways into the database
(a read, a write transaction) and the events every state change appends.

Both ways in run inside `translate_errors` (daemon/store/db.py), so that no
SQLAlchemy error leaves the store as one: a database that cannot be used now (locked
past the busy timeout, out of reach, its disk full) is a DatabaseUnavailableError.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Iterator

from sqlalchemy import Connection, and_, insert

from daemon.store.db import make_engine, translate_errors
from daemon.store.rows import hostname
from daemon.store.schema import job_events, jobs

__all__ = ["NO_PROGRESS", "StoreBase"]

# A job that leaves `running` keeps no stage, fraction or estimate.
NO_PROGRESS: dict[str, Any] = {"stage": None, "progress": None, "eta_seconds": None, "progress_at": None}


class StoreBase:
    def __init__(self, url: str, *, host: str | None = None, read_only: bool = False) -> None:
        self.url = url
        self.host = host or hostname()
        self.engine = make_engine(url, read_only=read_only)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self._claim: Any = None
        self._trigram_cjk: bool | None = None
        self._grams_whole = False  # the index of grams (short searches) is whole: daemon/store/segments.py

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reading: a plain (deferred) BEGIN, so readers never queue
        behind writers for the write lock."""
        with translate_errors(), self.engine.connect().execution_options(spkd_read=True) as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite: daemon/store/db.py),
        committed when the block ends, rolled back when it raises."""
        with translate_errors(), self.engine.begin() as conn:
            yield conn

    def _event(self, conn: Connection, job_id: int, kind: str, now: dt.datetime, /, **detail: Any) -> None:
        conn.execute(insert(job_events).values(job_id=job_id, at=now, kind=kind,
                                               detail={k: v for k, v in detail.items() if v is not None}))

    def _held(self, job_id: int, pid: int) -> Any:
        """The condition that a job is still held by worker `pid` of this host."""
        return and_(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.pid == pid, jobs.c.host == self.host)

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file so it does not grow for months."""
        if self.engine.dialect.name != "sqlite":
            return
        with translate_errors():
            raw = self.engine.raw_connection()
        try:
            # Outside any transaction: a checkpoint inside one would find the table locked.
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()
