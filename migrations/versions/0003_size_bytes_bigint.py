"""jobs.size_bytes: 64-bit, for recordings over 2 GiB on PostgreSQL

SQLite's INTEGER is 64-bit already, so only PostgreSQL (whose INTEGER is 32-bit)
changes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("jobs", "size_bytes", type_=sa.BigInteger, existing_type=sa.Integer)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("jobs", "size_bytes", type_=sa.Integer, existing_type=sa.BigInteger)
