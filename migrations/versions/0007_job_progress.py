"""jobs: a running job's stage, fraction done and time left; where its source was archived

`stage`, `progress` (0..1 of the whole job) and `eta_seconds` are written by the worker
while it runs a job (at most every couple of seconds, beside its heartbeat) and cleared
when the job leaves `running`; `progress_at` says when. `archive_name` is the job's
source under paths.archive once it was archived (a name another file already had there
gets " (2)"), so the dashboard serves the job's own file and no other.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("stage", "progress", "eta_seconds", "progress_at", "archive_name")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stage", sa.String(16)))
        batch.add_column(sa.Column("progress", sa.Float))
        batch.add_column(sa.Column("eta_seconds", sa.Float))
        batch.add_column(sa.Column("progress_at", sa.DateTime))
        batch.add_column(sa.Column("archive_name", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
