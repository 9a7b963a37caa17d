"""voices, voice_samples: ids are never given twice on SQLite (AUTOINCREMENT)

Stored transcripts name the voice that named each speaker by its id (`voice` in the
speakers of `state/transcripts/<id>.json` and the outbox's json), and the dashboard
shows that voice's name. A plain INTEGER PRIMARY KEY on SQLite hands out max(id) + 1,
so after `spkd voices remove` took the voice with the highest id, the next voice
enrolled got that id again, and every job the removed voice had named was shown as
named by the new one. AUTOINCREMENT makes SQLite remember the highest id ever given;
the same holds for samples (enrolment events name their sample). PostgreSQL's
sequences never go back, so there this revision does nothing.

The rebuild is 0009's (batch mode with `sqlite_autoincrement`); the sequence starts
past every id the database still names: the rows' ids, `voice_samples.voice_id`, and
the `voice_id` / `sample_id` of enrolment events (`job_events.detail`). Ids named only
by stored transcripts of voices removed before this revision cannot be seen from here.

A later batch operation on `voices` or `voice_samples` must pass
`table_kwargs={"sqlite_autoincrement": True}`, as for 0009's tables.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Each table, with the SQL expressions that give the ids it has given, wherever they may outlive the row.
ID_USES = {
    "voices": ("SELECT coalesce(max(id), 0) FROM voices",
               "SELECT coalesce(max(voice_id), 0) FROM voice_samples",
               "SELECT coalesce(max(CAST(json_extract(detail, '$.voice_id') AS INTEGER)), 0) FROM job_events"
               " WHERE json_valid(detail)"),
    "voice_samples": ("SELECT coalesce(max(id), 0) FROM voice_samples",
                      "SELECT coalesce(max(CAST(json_extract(detail, '$.sample_id') AS INTEGER)), 0) FROM job_events"
                      " WHERE json_valid(detail)"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, uses in ID_USES.items():
        floor = max(int(bind.exec_driver_sql(sql).scalar_one() or 0) for sql in uses)
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
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
        with op.batch_alter_table(table, recreate="always"):
            pass
