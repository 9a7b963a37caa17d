"""Corrections of done jobs' transcripts, as the store keeps them: one `transcript_versions`
row per version from 2 on (version 1, the transcript as the engine made it, has no row).

A version is added only inside the transaction that records its re-render as intended
(daemon.store.rerenders.begin_rerenders, called by daemon.jobs.results.rerender_jobs), so
the row exists exactly when the re-render that writes its transcript is sure to finish.
It is added only on top of the version it was made from (`NewVersion.base`): two edits
made at once from the same version cannot both land; the second is refused with
VersionConflictError and made again from the first's result (daemon.jobs.corrections).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from sqlalchemy import Connection, delete, func, insert, select

from daemon.errors import VersionConflictError
from daemon.store.base import StoreBase
from daemon.store.rows import TranscriptVersion
from daemon.store.schema import CORRECTION_ORIGINS, transcript_versions

__all__ = ["CorrectionStore", "NewVersion", "add_version", "copy_latest_version", "delete_versions"]


@dataclass(frozen=True)
class NewVersion:
    """A version to add to a job's transcript: made from version `base` (refused when the
    job's latest is another by now), with every correction in effect (`overlay`)."""

    base: int
    origin: str  # one of CORRECTION_ORIGINS
    change: str
    overlay: Mapping[str, Any] = field(default_factory=dict)


def _latest(conn: Connection, job_id: int) -> int:
    return int(conn.execute(select(func.coalesce(func.max(transcript_versions.c.version), 1))
                            .where(transcript_versions.c.job_id == job_id)).scalar_one())


def add_version(conn: Connection, job_id: int, new: NewVersion, now: dt.datetime) -> int:
    """Add `new` as job `job_id`'s next version in `conn`'s transaction (whose caller holds
    the job's row: BEGIN IMMEDIATE on SQLite, FOR UPDATE on PostgreSQL). Returns its number;
    VersionConflictError when the latest version is no longer `new.base`."""
    if new.origin not in CORRECTION_ORIGINS:
        raise ValueError(f"a correction comes from one of {CORRECTION_ORIGINS}, not {new.origin!r}")
    latest = _latest(conn, job_id)
    if latest != new.base:
        raise VersionConflictError(f"job {job_id}'s transcript changed meanwhile (version {latest} now, "
                                   f"this change was made from version {new.base})")
    conn.execute(insert(transcript_versions).values(job_id=job_id, version=latest + 1, created_at=now,
                                                    origin=new.origin, change=new.change, overlay=dict(new.overlay)))
    return latest + 1


def copy_latest_version(conn: Connection, twin_id: int, job_id: int, now: dt.datetime) -> None:
    """A duplicate taking `twin_id`'s stored transcript takes its corrections too: the
    twin's latest version becomes the duplicate's version 2 (nothing when it has none),
    so that its history says where its words came from and a revert to 1 finds the
    engine's words."""
    row = conn.execute(select(transcript_versions).where(transcript_versions.c.job_id == twin_id)
                       .order_by(transcript_versions.c.version.desc()).limit(1)).mappings().first()
    if row is None or not row["overlay"]:
        return
    conn.execute(insert(transcript_versions).values(
        job_id=job_id, version=2, created_at=now, origin=row["origin"], overlay=dict(row["overlay"]),
        change=f"the corrections of job {twin_id} (its version {row['version']}), with its transcript"))


def delete_versions(conn: Connection, job_ids: list[int] | tuple[int, ...]) -> None:
    """The jobs' versions go with their result (`spkd retry --force`) or their row."""
    if job_ids:
        conn.execute(delete(transcript_versions).where(transcript_versions.c.job_id.in_(list(job_ids))))


class CorrectionStore(StoreBase):
    def transcript_version(self, job_id: int) -> int:
        """The number of job `job_id`'s current version: 1 (as the engine made it) until a
        correction adds one."""
        with self._read() as conn:
            return _latest(conn, job_id)

    def transcript_versions(self, job_id: int) -> list[TranscriptVersion]:
        """Job `job_id`'s versions from 2 on, oldest first (version 1 has no row)."""
        with self._read() as conn:
            return [TranscriptVersion.from_row(r) for r in conn.execute(
                select(transcript_versions).where(transcript_versions.c.job_id == job_id)
                .order_by(transcript_versions.c.version)).mappings()]
