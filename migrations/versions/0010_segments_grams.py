"""segments: an index of every segment's character unigrams and bigrams (searches of 1-2 characters)

A trigram index cannot look up a string of one or two characters, and most Chinese
words are that short (预算, 钱). This revision adds a second index, over each segment's
distinct unigrams and bigrams of `folded_text` (daemon.store.search.grams):

* SQLite: the contentless FTS5 table `segments_grams` (`detail=none`: row ids only, no
  positions) with the trigram tokenizer over a disguise of the text in which every
  trigram stands for one gram, and one more for the speaker key
  (daemon.store.search.gram_document). SQL cannot write that disguise, so the store
  writes the table beside `segments` (daemon.store.segments), not a trigger.
* PostgreSQL: the function `spkd_grams(text) -> text[]` (the same rule in SQL) and a GIN
  index `ix_segments_grams` over `spkd_grams(folded_text)`: nothing is stored twice.

And the table `search_backfill`, whose one row says the index is not whole yet.

The rows already there: up to INLINE_ROWS segments are indexed here, in the
migration's transaction. A larger database gets a `search_backfill` row and is
indexed afterwards by `Store.backfill_search_index` (`spkd db upgrade`, with its
progress and an estimate; the daemon's start otherwise): on SQLite in batches of
about 0.2 s of the write lock each, resumed where it stopped; on PostgreSQL by
CREATE INDEX CONCURRENTLY, which never blocks writers. Until then short searches
compare every segment, as before, and say so.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Segments indexed inside the migration (a second or two at most); more are the backfill's.
INLINE_ROWS = 20_000

SQLITE_GRAMS = ("CREATE VIRTUAL TABLE segments_grams USING fts5(grams, content='', detail=none, columnsize=0, "
                "tokenize='trigram case_sensitive 1')")
# Every character and every pair of neighbours of `t` (duplicates are the index's to drop).
# plpgsql: 6x faster than the same in SQL with generate_series (11 us a row on a busy 2-core VM).
# COST: high, so that the planner looks it up in the index rather than call it row by row
# (daemon/store/segments.py looks there only for rare strings).
PG_GRAMS_FUNCTION = """
CREATE OR REPLACE FUNCTION spkd_grams(t text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 10000 AS $$
DECLARE
  chars text[] := string_to_array(t, NULL);
  grams text[] := chars;
BEGIN
  FOR i IN 1 .. cardinality(chars) - 1 LOOP
    grams := grams || (chars[i] || chars[i + 1]);
  END LOOP;
  RETURN grams;
END
$$
"""
PG_GRAMS_INDEX = "ix_segments_grams"


def upgrade() -> None:
    from daemon.store.segments import GRAMS_BACKFILL, backfill_batch

    bind = op.get_bind()
    op.create_table(
        "search_backfill",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("done_id", sa.BigInteger, nullable=False),
        sa.Column("last_id", sa.BigInteger, nullable=False),
        sa.Column("done_rows", sa.BigInteger, nullable=False),
        sa.Column("total_rows", sa.BigInteger, nullable=False),
    )
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute(PG_GRAMS_FUNCTION)
    else:
        bind.exec_driver_sql(SQLITE_GRAMS)
    count, last = bind.execute(sa.text("SELECT count(*), max(id) FROM segments")).one()
    if count and count > INLINE_ROWS:
        bind.execute(sa.text("INSERT INTO search_backfill (name, done_id, last_id, done_rows, total_rows) "
                             "VALUES (:name, -1, :last, 0, :count)"),
                     {"name": GRAMS_BACKFILL, "last": last, "count": count})
        return
    if postgres:
        op.execute(f"CREATE INDEX {PG_GRAMS_INDEX} ON segments USING gin (spkd_grams(folded_text))")
    elif count:
        bind.execute(sa.text("INSERT INTO search_backfill (name, done_id, last_id, done_rows, total_rows) "
                             "VALUES (:name, -1, :last, 0, :count)"),
                     {"name": GRAMS_BACKFILL, "last": last, "count": count})
        while backfill_batch(bind, INLINE_ROWS) is not None:
            pass


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {PG_GRAMS_INDEX}")
        op.execute("DROP FUNCTION IF EXISTS spkd_grams(text)")
    else:
        op.execute("DROP TABLE IF EXISTS segments_grams")
    op.drop_table("search_backfill")
