"""The database schema (SQLAlchemy Core). Changes go through Alembic migrations in
`migrations/`; this module is what the store queries against and what the
migrations are checked against in tests.

Times are naive UTC datetimes (`daemon.store.utcnow()`), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["FINISHED_STATES", "JOB_STATES", "job_events", "jobs", "metadata", "workers"]

metadata = MetaData()

# The only states a job can be in (a CHECK constraint, migration 0004); the last three are final.
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED_STATES = ("done", "failed", "cancelled")

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Path of the dropped file relative to the inbox, e.g. "team/standup.m4a".
    Column("source_name", Text, nullable=False),
    Column("spool_path", Text, nullable=False),
    # Output path relative to the outbox without extension, e.g. "team/standup".
    Column("output_stem", Text, nullable=False),
    Column("sha256", String(64)),
    Column("size_bytes", BigInteger),
    Column("state", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("not_before", DateTime),
    Column("priority", Integer, nullable=False, default=0),
    Column("options", JSON),
    Column("host", Text),
    Column("slot", Integer),
    Column("pid", Integer),
    Column("device", Text),
    Column("lease_expires_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("audio_seconds", Float),
    Column("processing_seconds", Float),
    Column("rtf", Float),
    Column("speakers", Integer),
    Column("outputs", JSON),
    Column("error_kind", String(32)),
    Column("error_message", Text),
    Column("reused_from", Integer, ForeignKey("jobs.id")),
    # sha256 + the options that change the transcript (daemon.options.dedup_key).
    Column("dedup_key", String(64)),
    Index("ix_jobs_claim", "state", "priority", "id"),
    Index("ix_jobs_dedup_key", "dedup_key", "state"),
    Index("ix_jobs_sha256", "sha256"),
    Index("ix_jobs_spool_path", "spool_path"),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES) + ")", name="ck_jobs_state"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", JSON),
    Index("ix_job_events_job", "job_id", "id"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("pid", Integer),
    Column("device", Text),
    # The device the slot was configured for, when it fell back to `device`.
    Column("fallback_from", Text),
    Column("state", String(16), nullable=False),
    Column("started_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("jobs_done", Integer, nullable=False, default=0),
    Column("current_job_id", Integer),
    Column("rss_mb", Float),
    Column("last_error", Text),
    UniqueConstraint("host", "slot", name="uq_workers_host_slot"),
)
