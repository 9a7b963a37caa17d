"""summaries: a done transcription's summary, a task of its own (claim, lease, retry)

One row per job (`job_id`, the primary key): its state (queued, running, done, failed),
its attempts and when the next may start, the lease holder while running (host, pid,
lease_expires_at, heartbeat_at), the last error, and the result of the last success:
the summary object (`result`, JSON), the model that wrote it and the transcript version
it was made from. The CHECK constraints are the store's invariants (daemon/store/schema.py
says which). Nothing earlier changes: jobs done before this revision have no summary
until `spkd summarize` asks for one.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SUMMARY_STATES = ("queued", "running", "done", "failed")


def upgrade() -> None:
    op.create_table(
        "summaries",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("lease_expires_at", sa.DateTime),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("error_kind", sa.String(32)),
        sa.Column("error_message", sa.Text),
        sa.Column("transcript_version", sa.Integer),
        sa.Column("model", sa.Text),
        sa.Column("result", sa.JSON(none_as_null=True)),
        sa.Column("requested_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in SUMMARY_STATES) + ")",
                           name="ck_summaries_state"),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1 AND attempts <= max_attempts",
                           name="ck_summaries_attempts"),
        sa.CheckConstraint("(state = 'running' AND host IS NOT NULL AND pid IS NOT NULL"
                           " AND lease_expires_at IS NOT NULL)"
                           " OR (state <> 'running' AND pid IS NULL AND lease_expires_at IS NULL)",
                           name="ck_summaries_lease"),
        sa.CheckConstraint("state <> 'done' OR (result IS NOT NULL AND finished_at IS NOT NULL)",
                           name="ck_summaries_done"),
        sa.CheckConstraint("state <> 'failed' OR (error_kind IS NOT NULL AND finished_at IS NOT NULL)",
                           name="ck_summaries_failed"),
        sa.CheckConstraint("(result IS NULL AND transcript_version IS NULL)"
                           " OR (result IS NOT NULL AND transcript_version >= 1)", name="ck_summaries_version"),
    )
    op.create_index("ix_summaries_claim", "summaries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_summaries_claim", "summaries")
    op.drop_table("summaries")
