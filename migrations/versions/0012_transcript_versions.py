"""transcript_versions: corrections of a done job's transcript, every version kept

`spkd edit`, `spkd revert` and the dashboard's edit and history (daemon.jobs.corrections)
add one row per version from 2 on; version 1, the transcript as the engine made it, has
no row. A row is never changed or deleted but with its job (`spkd remove`, retention,
`spkd retry --force`). `overlay` holds every correction in effect in that version (see
daemon/store/schema.py); `origin` says where it was made (cli, web).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

CORRECTION_ORIGINS = ("cli", "web")


def upgrade() -> None:
    op.create_table(
        "transcript_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("overlay", sa.JSON, nullable=False),
        sa.UniqueConstraint("job_id", "version", name="uq_transcript_versions_job_version"),
        sa.CheckConstraint("version >= 2", name="ck_transcript_versions_version"),
        sa.CheckConstraint("origin IN (" + ", ".join(f"'{o}'" for o in CORRECTION_ORIGINS) + ")",
                           name="ck_transcript_versions_origin"),
    )


def downgrade() -> None:
    op.drop_table("transcript_versions")
