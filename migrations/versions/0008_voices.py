"""voices: the voice library (names, enrolled embeddings); jobs.task (transcribe or enrol)

`voices` holds one row per person (a unique name); `voice_samples` one row per
enrolment: the CAM++ centroid over the speech of one recording (JSON list of floats),
the identity of the model that made it (model directory name, revision, dimension:
embeddings of another model are never compared), the recording's sha256, the seconds
of speech used, where it came from (`origin`: cli, folder, rename; `source`: the
file, for a folder sample its path under paths.voices) and the enrolment job, if any.

`jobs.task` tells a transcription (`transcribe`, every job before this revision) from
an enrolment of a file dropped into paths.voices/<Name>/ (`enrol`), which goes through
the same queue, leases and recovery as any job.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JOB_TASKS = ("transcribe", "enrol")


def upgrade() -> None:
    op.create_table(
        "voices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("name", name="uq_voices_name"),
    )
    op.create_table(
        "voice_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("voice_id", sa.Integer, sa.ForeignKey("voices.id"), nullable=False),
        sa.Column("embedding", sa.JSON, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_revision", sa.Text),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("speech_seconds", sa.Float, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("job_id", sa.Integer),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.CheckConstraint("origin IN ('cli', 'folder', 'rename')", name="ck_voice_samples_origin"),
        sa.CheckConstraint("dimension > 0", name="ck_voice_samples_dimension"),
    )
    op.create_index("ix_voice_samples_voice", "voice_samples", ["voice_id"])
    op.create_index("ix_voice_samples_source", "voice_samples", ["origin", "source"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("task", sa.String(16), nullable=False, server_default="transcribe"))
        batch.create_check_constraint("ck_jobs_task", "task IN (" + ", ".join(f"'{k}'" for k in JOB_TASKS) + ")")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_task", type_="check")
        batch.drop_column("task")
    op.drop_index("ix_voice_samples_source", "voice_samples")
    op.drop_index("ix_voice_samples_voice", "voice_samples")
    op.drop_table("voice_samples")
    op.drop_table("voices")
