"""The voice library's rows (daemon/voices/): a voice is its samples, one embedding per
enrolled recording; a voice left without one goes."""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Sequence

from sqlalchemy import Connection, delete, exists, insert, select, update

from daemon.errors import VoiceError
from daemon.store.base import NO_PROGRESS, StoreBase
from daemon.store.rows import Job, SampleRow, VoiceSummary, utcnow
from daemon.store.schema import jobs, voice_samples, voices
from daemon.transcript import model_identity

__all__ = ["VoiceStore"]


class VoiceStore(StoreBase):
    def add_voice_sample(self, name: str, sample: Mapping[str, Any]) -> tuple[int, int]:
        """Add one embedding to voice `name` (made if new); returns (voice id, sample id).
        `sample`: embedding, model_name, model_revision, sha256, speech_seconds, origin,
        source, job_id."""
        now = utcnow()
        with self._write() as conn:
            voice_id, sample_id = _insert_sample(conn, name, sample, now)
        return voice_id, sample_id

    def complete_enrolment(self, job_id: int, *, pid: int, name: str, sample: Mapping[str, Any],
                           processing_seconds: float, device: str) -> bool:
        """Mark a held enrolment job done and add its sample, in one transaction: a crash
        between the two can neither lose the sample nor enrol the file twice."""
        now = utcnow()
        with self._write() as conn:
            result = conn.execute(update(jobs).where(self._held(job_id, pid)).values(
                state="done", finished_at=now, processing_seconds=processing_seconds,
                audio_seconds=float(sample.get("audio_seconds") or 0.0) or None, speakers=1, outputs=[],
                device=device, lease_expires_at=None, error_kind=None, error_message=None, **NO_PROGRESS))
            if result.rowcount != 1:
                return False
            voice_id, sample_id = _insert_sample(conn, name, sample, now)
            self._event(conn, job_id, "done", now, device=device, voice=name, voice_id=voice_id, sample_id=sample_id,
                        speech_seconds=round(float(sample["speech_seconds"]), 3),
                        processing_seconds=round(processing_seconds, 3))
        return True

    def voice_samples_of(self, *, names: Sequence[str] | None = None) -> list[SampleRow]:
        """Every enrolled sample (of the voices `names` only, when given), oldest first."""
        query = (select(voice_samples, voices.c.name).join(voices, voices.c.id == voice_samples.c.voice_id)
                 .order_by(voice_samples.c.id))
        if names is not None:
            query = query.where(voices.c.name.in_(list(names)))
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [SampleRow(id=r["id"], voice_id=r["voice_id"], name=r["name"],
                          embedding=tuple(float(x) for x in r["embedding"]), model_name=r["model_name"],
                          model_revision=r["model_revision"], dimension=r["dimension"], sha256=r["sha256"],
                          speech_seconds=r["speech_seconds"], origin=r["origin"], source=r["source"],
                          job_id=r["job_id"], created_at=r["created_at"]) for r in rows]

    def voice_summaries(self) -> list[VoiceSummary]:
        by_voice: dict[int, list[SampleRow]] = {}
        for sample in self.voice_samples_of():
            by_voice.setdefault(sample.voice_id, []).append(sample)
        with self._read() as conn:
            rows = conn.execute(select(voices).order_by(voices.c.name)).mappings().all()
        out = []
        for r in rows:
            samples = by_voice.get(r["id"], [])
            models = tuple(dict.fromkeys(model_identity(s.model_name, s.model_revision, s.dimension)
                                         for s in samples))
            out.append(VoiceSummary(id=r["id"], name=r["name"], created_at=r["created_at"], samples=len(samples),
                                    speech_seconds=round(sum(s.speech_seconds for s in samples), 3), models=models,
                                    origins=tuple(dict.fromkeys(s.origin for s in samples))))
        return out

    def remove_voice(self, name: str) -> int:
        """Remove voice `name` with all its samples; returns how many samples went (0: no such voice)."""
        with self._write() as conn:
            voice_id = conn.execute(select(voices.c.id).where(voices.c.name == name)).scalar()
            if voice_id is None:
                return 0
            count = conn.execute(delete(voice_samples).where(voice_samples.c.voice_id == voice_id)).rowcount
            conn.execute(delete(voices).where(voices.c.id == voice_id))
        return int(count)

    def rename_voice(self, name: str, new_name: str, *, sources: Mapping[str, str]) -> int | None:
        """Voice `name` is called `new_name` from now on, and its folder samples' recordings
        lie at `sources` (old path under paths.voices -> new), in one transaction. Returns
        the voice's id (it keeps it: stored transcripts name voices by id); None when there
        is no voice `name`. VoiceError when a voice is called `new_name` already."""
        with self._write() as conn:
            voice_id = conn.execute(select(voices.c.id).where(voices.c.name == name)).scalar()
            if voice_id is None:
                return None
            taken = conn.execute(select(voices.c.id).where(voices.c.name == new_name)).scalar()
            if taken is not None and taken != voice_id:
                raise VoiceError(f"a voice is called {new_name!r} already: remove it first, or choose another name")
            conn.execute(update(voices).where(voices.c.id == voice_id).values(name=new_name))
            for old_source, new_source in sources.items():
                conn.execute(update(voice_samples).where(voice_samples.c.voice_id == voice_id,
                                                         voice_samples.c.origin == "folder",
                                                         voice_samples.c.source == old_source)
                             .values(source=new_source))
        return int(voice_id)

    def remove_voice_samples(self, sample_ids: Sequence[int]) -> list[str]:
        """Remove these samples; voices left without one go too (their names are returned)."""
        if not sample_ids:
            return []
        with self._write() as conn:
            conn.execute(delete(voice_samples).where(voice_samples.c.id.in_(list(sample_ids))))
            return _drop_empty_voices(conn)

    def enrol_jobs(self, *, states: Sequence[str] | None = None) -> list[Job]:
        """Enrolment jobs (of the given states), oldest first."""
        query = select(*jobs.c).where(jobs.c.task == "enrol").order_by(jobs.c.id)
        if states is not None:
            query = query.where(jobs.c.state.in_(list(states)))
        with self._read() as conn:
            return [Job.from_row(r) for r in conn.execute(query).mappings()]


def _sample_values(name_id: int, now: dt.datetime, sample: Mapping[str, Any]) -> dict[str, Any]:
    embedding = [float(x) for x in sample["embedding"]]
    return {"voice_id": name_id, "embedding": embedding, "model_name": sample["model_name"],
            "model_revision": sample.get("model_revision"), "dimension": len(embedding),
            "sha256": sample.get("sha256"), "speech_seconds": float(sample["speech_seconds"]),
            "origin": sample["origin"], "source": sample.get("source"), "job_id": sample.get("job_id"),
            "created_at": now}


def _insert_sample(conn: Connection, name: str, sample: Mapping[str, Any], now: dt.datetime) -> tuple[int, int]:
    """One sample of voice `name` (made if new): (voice id, sample id)."""
    voice_id = _voice_id(conn, name, now)
    sample_id = int(conn.execute(insert(voice_samples).values(**_sample_values(voice_id, now, sample))
                                 .returning(voice_samples.c.id)).scalar_one())
    return voice_id, sample_id


def _voice_id(conn: Connection, name: str, now: dt.datetime) -> int:
    """The id of voice `name`, made if new."""
    found = conn.execute(select(voices.c.id).where(voices.c.name == name)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(insert(voices).values(name=name, created_at=now).returning(voices.c.id)).scalar_one())


def _drop_empty_voices(conn: Connection) -> list[str]:
    """Voices left without a sample go (a voice is its samples); returns their names."""
    has_sample = exists(select(voice_samples.c.id).where(voice_samples.c.voice_id == voices.c.id))
    names = list(conn.execute(select(voices.c.name).where(~has_sample)).scalars())
    if names:
        conn.execute(delete(voices).where(voices.c.name.in_(names)))
    return names
