"""jobs.dedup_key: content + transcript-changing options, for duplicate detection

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("dedup_key", sa.String(64)))
    op.create_index("ix_jobs_dedup_key", "jobs", ["dedup_key", "state"])


def downgrade() -> None:
    op.drop_index("ix_jobs_dedup_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("dedup_key")
