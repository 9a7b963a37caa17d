"""jobs.state: a CHECK constraint allowing only the five job states

The invariant in the schema itself: no code path, and no hand-written UPDATE, can
leave a job in a state the store does not know. On SQLite a table's constraints can
only change by rebuilding it (Alembic's batch mode copies the rows, the indexes and
the foreign keys into a new table); `daemon.store.db.migrate` runs this with foreign keys
off and checks them all before it commits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The states as of this revision (daemon.store.schema.JOB_STATES may grow in a later one).
STATES = ("queued", "running", "done", "failed", "cancelled")
NAME = "ck_jobs_state"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.create_check_constraint(NAME, "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(NAME, type_="check")
