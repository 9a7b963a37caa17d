"""jobs, job_events and workers

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_name", sa.Text, nullable=False),
        sa.Column("spool_path", sa.Text, nullable=False),
        sa.Column("output_stem", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("size_bytes", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("not_before", sa.DateTime),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("options", sa.JSON),
        sa.Column("host", sa.Text),
        sa.Column("slot", sa.Integer),
        sa.Column("pid", sa.Integer),
        sa.Column("device", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("audio_seconds", sa.Float),
        sa.Column("processing_seconds", sa.Float),
        sa.Column("rtf", sa.Float),
        sa.Column("speakers", sa.Integer),
        sa.Column("outputs", sa.JSON),
        sa.Column("error_kind", sa.String(32)),
        sa.Column("error_message", sa.Text),
        sa.Column("reused_from", sa.Integer, sa.ForeignKey("jobs.id")),
    )
    op.create_index("ix_jobs_claim", "jobs", ["state", "priority", "id"])
    op.create_index("ix_jobs_sha256", "jobs", ["sha256"])
    op.create_index("ix_jobs_spool_path", "jobs", ["spool_path"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id", "id"])
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("device", sa.Text),
        sa.Column("fallback_from", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("jobs_done", sa.Integer, nullable=False),
        sa.Column("current_job_id", sa.Integer),
        sa.Column("rss_mb", sa.Float),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("host", "slot", name="uq_workers_host_slot"),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("ix_job_events_job", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index("ix_jobs_spool_path", table_name="jobs")
    op.drop_index("ix_jobs_sha256", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
