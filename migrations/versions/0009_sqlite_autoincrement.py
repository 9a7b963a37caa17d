"""jobs, job_events: ids are never given twice on SQLite (AUTOINCREMENT)

A plain INTEGER PRIMARY KEY on SQLite hands out max(id) + 1, so after `spkd remove` or
retention deleted the job with the highest id, the next job got that id again: the
`failed/<name>.error.json` files, log lines and voice samples naming the old id then
pointed at another job, and `spkd retry ID` acted on the wrong one. The same held for
`job_events`, whose id is a notifier's cursor (daemon.store.retention.events_after): an
event id given again after the newest events went with their job is at or below a
cursor that saw the old one, and the new event was never reported. AUTOINCREMENT makes
SQLite remember the highest id ever given (in `sqlite_sequence`); PostgreSQL's
sequences never go back, so there this revision does nothing.

A column can only become AUTOINCREMENT by rebuilding the table: Alembic's batch mode
copies the rows, the named CHECK constraints, the indexes and the foreign keys into a
new table (`daemon.store.db.migrate` runs with foreign keys off and checks them all
before it commits). Nothing refers to these tables by trigger (the full-text triggers
are on `segments`, which stays as it is); `job_events` and `segments` refer to `jobs`
by name, which the rebuilt table keeps. The sequence starts past every job id the
database still names anywhere (events, segments, voice samples, a worker's current
job, a reuse), not only past the ids of the rows left.

A later batch operation on `jobs` or `job_events` must pass
`table_kwargs={"sqlite_autoincrement": True}`: reflection does not see AUTOINCREMENT,
and a rebuild without it would quietly lose it (tests/unit/test_migrations.py checks the head).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Each table, with the (table, column) pairs whose values are its ids, wherever they may outlive the row.
ID_USES = {
    "jobs": (("jobs", "id"), ("jobs", "reused_from"), ("job_events", "job_id"), ("segments", "job_id"),
             ("voice_samples", "job_id"), ("workers", "current_job_id")),
    "job_events": (("job_events", "id"),),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, uses in ID_USES.items():
        floor = max(bind.exec_driver_sql(f"SELECT coalesce(max({column}), 0) FROM {used_in}").scalar_one()
                    for used_in, column in uses)
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
        # The copy of the rows set the sequence to max(id); no id at or below `floor` is given again.
        seq = bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).scalar()
        if seq is None:
            bind.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, floor))
        elif seq < floor:
            bind.exec_driver_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (floor, table))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in reversed(ID_USES):
        # Reflection does not see AUTOINCREMENT: the rebuilt table is a plain INTEGER PRIMARY KEY
        # again, and dropping the old one takes its sqlite_sequence row with it.
        with op.batch_alter_table(table, recreate="always"):
            pass
