"""segments: every done job's transcript segments, with a full-text index over them

SQLite: an FTS5 table `segments_fts` with the trigram tokenizer (substring search of
3+ characters, which works for Chinese where a word tokenizer cannot), external
content (it indexes `segments.folded_text` without a second copy of it), kept in step
by triggers; it indexes `segments.speaker_key` as well. PostgreSQL: the pg_trgm
extension, a GIN trigram index on `segments.folded_text` and a b-tree on `speaker_key`.
Also an index on `jobs.created_at` (searches by date).

The rows of jobs finished before this revision are filled in afterwards from the
stored transcripts (daemon.jobs.results.backfill_segments, run by `spkd db upgrade` and at
daemon start): a migration does not know where the state folder is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from alembic import op
import sqlalchemy as sa

from daemon.errors import DatabaseExtensionError

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SQLITE_FTS = (
    # case_sensitive 1: folded_text is case folded already (daemon.store.search.fold); the
    # tokenizer's own folding would only be a second, different rule.
    # speaker_key is indexed too, so that a search for one speaker is an intersection
    # inside the index rather than a lookup of every matching row.
    "CREATE VIRTUAL TABLE segments_fts USING fts5(folded_text, speaker_key, content='segments', "
    "content_rowid='id', tokenize='trigram case_sensitive 1')",
    "CREATE TRIGGER segments_fts_insert AFTER INSERT ON segments BEGIN "
    "INSERT INTO segments_fts(rowid, folded_text, speaker_key) VALUES (new.id, new.folded_text, new.speaker_key); "
    "END",
    "CREATE TRIGGER segments_fts_delete AFTER DELETE ON segments BEGIN "
    "INSERT INTO segments_fts(segments_fts, rowid, folded_text, speaker_key) "
    "VALUES ('delete', old.id, old.folded_text, old.speaker_key); END",
    "CREATE TRIGGER segments_fts_update AFTER UPDATE OF id, folded_text, speaker_key ON segments BEGIN "
    "INSERT INTO segments_fts(segments_fts, rowid, folded_text, speaker_key) "
    "VALUES ('delete', old.id, old.folded_text, old.speaker_key); "
    "INSERT INTO segments_fts(rowid, folded_text, speaker_key) VALUES (new.id, new.folded_text, new.speaker_key); "
    "END",
)
PG_TRGM_INDEX = "ix_segments_folded_text_trgm"
# PostgreSQL combines it with the trigram index (a bitmap AND) for one speaker's hits.
PG_SPEAKER_INDEX = "ix_segments_speaker_key"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _create_pg_trgm(bind)
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("start_seconds", sa.Float, nullable=False),
        sa.Column("end_seconds", sa.Float, nullable=False),
        sa.Column("speaker", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("folded_text", sa.Text, nullable=False),
        sa.Column("speaker_key", sa.Text, nullable=False),
    )
    op.create_index("ix_segments_job_id", "segments", ["job_id", "idx"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    if bind.dialect.name == "sqlite":
        _create_sqlite_fts(bind)
    elif bind.dialect.name == "postgresql":
        op.execute(f"CREATE INDEX {PG_TRGM_INDEX} ON segments USING gin (folded_text gin_trgm_ops)")
        op.create_index(PG_SPEAKER_INDEX, "segments", ["speaker_key", "id"])


def _create_pg_trgm(bind: sa.Connection) -> None:
    """CREATE EXTENSION in a savepoint, so that a role that may not create it gets a
    message naming the fix instead of a bare permission error."""
    savepoint = bind.begin_nested()
    try:
        bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        sqlstate = getattr(exc.orig, "sqlstate", None)
        role, database = bind.execute(sa.text("SELECT current_user, current_database()")).one()
        detail = str(exc.orig).strip().splitlines()[0]
        if sqlstate == "42501":  # insufficient_privilege
            raise DatabaseExtensionError(
                f"full-text search needs the PostgreSQL extension pg_trgm, and the role {role!r} may not create "
                f"it in database {database!r} ({detail}). As a superuser run `psql -d {database} -c 'CREATE "
                f"EXTENSION pg_trgm'` once (or `GRANT CREATE ON DATABASE \"{database}\" TO \"{role}\"`), then "
                "run `spkd db upgrade` or start spkd again") from None
        raise DatabaseExtensionError(
            f"full-text search needs the PostgreSQL extension pg_trgm, which this server cannot create ({detail}): "
            "install PostgreSQL's contrib modules on the database server (Debian and Ubuntu ship them in the "
            "postgresql package, RHEL in postgresqlNN-contrib), then run `spkd db upgrade` again") from None
    savepoint.commit()


def _create_sqlite_fts(bind: sa.Connection) -> None:
    try:
        bind.exec_driver_sql(SQLITE_FTS[0])
    except sa.exc.OperationalError as exc:
        version = bind.exec_driver_sql("SELECT sqlite_version()").scalar()
        raise DatabaseExtensionError(
            f"full-text search needs SQLite's FTS5 with the trigram tokenizer (SQLite 3.34 or newer); this "
            f"Python's SQLite {version} says: {exc.orig}. Use a Python built with a newer SQLite") from None
    for statement in SQLITE_FTS[1:]:
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("segments_fts_update", "segments_fts_delete", "segments_fts_insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS segments_fts")
    elif bind.dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {PG_SPEAKER_INDEX}")
        op.execute(f"DROP INDEX IF EXISTS {PG_TRGM_INDEX}")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_segments_job_id", table_name="segments")
    op.drop_table("segments")
    # pg_trgm stays: other tables of the database may use it.
