"""The database schema (SQLAlchemy Core). Changes go through Alembic migrations in
`migrations/`; this module is what the store queries against and what the
migrations are checked against in tests.

Times are naive UTC datetimes (`daemon.store.utcnow()`), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["CORRECTION_ORIGINS", "FINISHED_STATES", "JOB_TASKS", "JOB_STATES", "SAMPLE_ORIGINS", "SUMMARY_STATES",
           "job_events", "jobs", "metadata", "search_backfill", "segments", "summaries", "transcript_versions",
           "voice_samples", "voices", "workers"]

metadata = MetaData()

# The only states a job can be in (a CHECK constraint, migration 0004); the last three are final.
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED_STATES = ("done", "failed", "cancelled")
# What a job does, `jobs.task` (a CHECK constraint, migration 0008): transcribe a recording, or enrol
# a voice from a file dropped into paths.voices/<Name>/.
JOB_TASKS = ("transcribe", "enrol")

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Path of the dropped file relative to the inbox, e.g. "team/standup.m4a".
    Column("source_name", Text, nullable=False),
    Column("spool_path", Text, nullable=False),
    # Output path relative to the outbox without extension, e.g. "team/standup".
    Column("output_stem", Text, nullable=False),
    Column("sha256", String(64)),
    Column("size_bytes", BigInteger),
    Column("state", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("not_before", DateTime),
    Column("priority", Integer, nullable=False, default=0),
    Column("options", JSON),
    Column("host", Text),
    Column("slot", Integer),
    Column("pid", Integer),
    Column("device", Text),
    Column("lease_expires_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("audio_seconds", Float),
    Column("processing_seconds", Float),
    Column("rtf", Float),
    Column("speakers", Integer),
    Column("outputs", JSON),
    Column("error_kind", String(32)),
    Column("error_message", Text),
    Column("reused_from", Integer, ForeignKey("jobs.id")),
    # sha256 + the options that change the transcript (daemon.options.dedup_key).
    Column("dedup_key", String(64)),
    # While running: the stage (daemon.progress.STAGES), the fraction of the whole job
    # done, the estimated seconds left, and when the worker said so (migration 0007).
    Column("stage", String(16)),
    Column("progress", Float),
    Column("eta_seconds", Float),
    Column("progress_at", DateTime),
    # The source's path under paths.archive once archived (relative, POSIX).
    Column("archive_name", Text),
    Column("task", String(16), nullable=False, default="transcribe", server_default="transcribe"),
    Index("ix_jobs_claim", "state", "priority", "id"),
    Index("ix_jobs_dedup_key", "dedup_key", "state"),
    Index("ix_jobs_sha256", "sha256"),
    Index("ix_jobs_spool_path", "spool_path"),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES) + ")", name="ck_jobs_state"),
    CheckConstraint("task IN (" + ", ".join(f"'{k}'" for k in JOB_TASKS) + ")", name="ck_jobs_task"),
    Index("ix_jobs_created_at", "created_at"),
    # SQLite: AUTOINCREMENT (migration 0009), so that an id is never given to a second job after
    # the newest was removed (error files, logs and voice samples name jobs by id).
    sqlite_autoincrement=True,
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", JSON),
    Index("ix_job_events_job", "job_id", "id"),
    # SQLite: AUTOINCREMENT (migration 0009): the id is a notifier's cursor (events_after), and an
    # id given again after the newest events went with their job would be skipped.
    sqlite_autoincrement=True,
)

workers = Table(
    "workers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("slot", Integer, nullable=False),
    Column("pid", Integer),
    Column("device", Text),
    # The device the slot was configured for, when it fell back to `device`.
    Column("fallback_from", Text),
    Column("state", String(16), nullable=False),
    Column("started_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("jobs_done", Integer, nullable=False, default=0),
    Column("current_job_id", Integer),
    Column("rss_mb", Float),
    Column("last_error", Text),
    UniqueConstraint("host", "slot", name="uq_workers_host_slot"),
)

# One row per transcript segment of a done job (duplicates included, pointing at their
# own job). `id` is `job_id * SEGMENT_ID_STRIDE + idx`: id order is (job, time in the
# recording), so the full-text index, which walks its matches in id order, can return
# the newest recordings first and stop at the limit, and one job's segments are one id
# range. `folded_text` is `text` as search compares it (daemon.store.search.fold: NFKC, case
# folded); the full-text index is built over it (and `speaker_key`): SQLite's FTS5 table
# `segments_fts` (trigram tokenizer, kept in step by triggers), PostgreSQL's pg_trgm GIN
# index. Both are made by the migration, not by this metadata.
SEGMENT_ID_STRIDE = 2**20

segments = Table(
    "segments",
    metadata,
    # INTEGER on SQLite, so that it is the rowid the FTS5 index refers to.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("start_seconds", Float, nullable=False),
    Column("end_seconds", Float, nullable=False),
    # The speaker as every output shows it: the label (Speaker2), or the name where named.
    Column("speaker", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("folded_text", Text, nullable=False),
    # The speaker as a search filter matches it: folded like the text, between two
    # U+001F marks, so that the trigram index holds even a 2-character name and a
    # phrase of the key matches this one speaker only (daemon.store.search.speaker_key).
    Column("speaker_key", Text, nullable=False),
    Index("ix_segments_job_id", "job_id", "idx"),
)

# The index of every segment's character unigrams and bigrams, which serves queries of 1-2
# characters (migration 0010; daemon.store.search.grams): SQLite's contentless FTS5 table
# `segments_grams` (detail=none, written by the store beside `segments`), PostgreSQL's GIN
# index `ix_segments_grams` over the function `spkd_grams(folded_text)`. While migration
# 0010's backfill of a large database has not finished, this table holds its one row: on
# SQLite the segments with `done_id < id <= last_id` are not indexed yet (every other row
# is); on PostgreSQL the index is still to be built. No row: the index is whole.
search_backfill = Table(
    "search_backfill",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("done_id", BigInteger, nullable=False),
    Column("last_id", BigInteger, nullable=False),
    Column("done_rows", BigInteger, nullable=False),
    Column("total_rows", BigInteger, nullable=False),
)

# The voice library (migration 0008): one row per person, one sample per enrolment.
SAMPLE_ORIGINS = ("cli", "folder", "rename")

voices = Table(
    "voices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("name", name="uq_voices_name"),
    # SQLite: AUTOINCREMENT (migration 0011): stored transcripts name voices by id, and an id
    # given again after the newest voice was removed would credit its jobs to another voice.
    sqlite_autoincrement=True,
)

voice_samples = Table(
    "voice_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("voice_id", Integer, ForeignKey("voices.id"), nullable=False),
    # The CAM++ centroid over one recording's speech, as a JSON list of floats.
    Column("embedding", JSON, nullable=False),
    # The model that made it: only embeddings of the same (name, revision, dimension) compare.
    Column("model_name", Text, nullable=False),
    Column("model_revision", Text),
    Column("dimension", Integer, nullable=False),
    Column("sha256", String(64)),
    Column("speech_seconds", Float, nullable=False),
    Column("origin", String(16), nullable=False),
    # The recording: for a folder sample its path under paths.voices (POSIX), else the file given.
    Column("source", Text),
    Column("job_id", Integer),
    Column("created_at", DateTime, nullable=False),
    CheckConstraint("origin IN (" + ", ".join(f"'{o}'" for o in SAMPLE_ORIGINS) + ")", name="ck_voice_samples_origin"),
    CheckConstraint("dimension > 0", name="ck_voice_samples_dimension"),
    Index("ix_voice_samples_voice", "voice_id"),
    Index("ix_voice_samples_source", "origin", "source"),
    sqlite_autoincrement=True,  # migration 0011: enrolment events name their sample by id
)

# A done job's transcript as people corrected it (migration 0012; daemon.jobs.corrections):
# one row per version from 2 on (version 1 is the transcript as the engine made it, and
# has no row). Rows are only ever added: a revert is a new version whose `overlay`
# equals the old one's. `overlay` is every correction in effect in that version, by
# segment index (Transcript.segments): {"<index>": {"text": …, "speaker": <a name>,
# "was": {"text": <the engine's>, "speaker": <its speaker number>}}}, "text" or "speaker"
# left out where that one is the engine's. The stored transcript
# (state/transcripts/<id>.json) is always the latest version's, written by the same
# re-render whose intent is recorded in the transaction that adds the row.
CORRECTION_ORIGINS = ("cli", "web")

transcript_versions = Table(
    "transcript_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("origin", String(16), nullable=False),
    # What changed, in words (`spkd history`): "segment 2: text", "reverted to version 1".
    Column("change", Text, nullable=False),
    Column("overlay", JSON, nullable=False),
    UniqueConstraint("job_id", "version", name="uq_transcript_versions_job_version"),
    CheckConstraint("version >= 2", name="ck_transcript_versions_version"),
    CheckConstraint("origin IN (" + ", ".join(f"'{o}'" for o in CORRECTION_ORIGINS) + ")",
                    name="ck_transcript_versions_origin"),
)


# A done transcription's summary (migration 0013; daemon/store/summaries.py): one row per
# job, a task of its own with claim, lease and retry, so that the transcript never waits
# for the summary server. `result` is the summary object (daemon.summaries.answer) of the
# last success, kept while a renewal is queued, running or failed; `transcript_version`
# the version of the transcript it was made from (Store.transcript_version), so a newer
# transcript shows it stale. `host` + `pid` + `lease_expires_at` name the holder while
# `running`, and only then.
SUMMARY_STATES = ("queued", "running", "done", "failed")

summaries = Table(
    "summaries",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id"), primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime),
    Column("host", Text),
    Column("pid", Integer),
    Column("lease_expires_at", DateTime),
    Column("heartbeat_at", DateTime),
    Column("error_kind", String(32)),
    Column("error_message", Text),
    Column("transcript_version", Integer),
    Column("model", Text),
    Column("result", JSON(none_as_null=True)),
    Column("requested_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in SUMMARY_STATES) + ")", name="ck_summaries_state"),
    CheckConstraint("attempts >= 0 AND max_attempts >= 1 AND attempts <= max_attempts", name="ck_summaries_attempts"),
    CheckConstraint("(state = 'running' AND host IS NOT NULL AND pid IS NOT NULL AND lease_expires_at IS NOT NULL)"
                    " OR (state <> 'running' AND pid IS NULL AND lease_expires_at IS NULL)", name="ck_summaries_lease"),
    CheckConstraint("state <> 'done' OR (result IS NOT NULL AND finished_at IS NOT NULL)", name="ck_summaries_done"),
    CheckConstraint("state <> 'failed' OR (error_kind IS NOT NULL AND finished_at IS NOT NULL)",
                    name="ck_summaries_failed"),
    CheckConstraint("(result IS NULL AND transcript_version IS NULL)"
                    " OR (result IS NOT NULL AND transcript_version >= 1)", name="ck_summaries_version"),
    Index("ix_summaries_claim", "state", "next_attempt_at"),
)
