"""The `json` format (`spkd.transcript/1`) and its inverse, `parse_json`.

    {
      "schema": "spkd.transcript/1",
      "source": {"name": "meeting.m4a", "sha256": "…", "duration_seconds": 3723.5,
                 "modified_at": "2025-03-04T09:15:00+08:00" | null} | null,
      "audio_seconds": 3723.5,
      "engine": {"funasr_version": "1.3.1", "device": "cuda:0",
                 "models": [{"role": "asr", "name": "…", "revision": "v2.0.4"}, …]} | null,
      "timing": {"load_seconds": 12.1, "transcribe_seconds": 40.2, "rtf": 0.010796},
      "speakers": [{"id": 1, "label": "Speaker1", "name": "王总" | null, "display": "王总",
                    "voice": 3 | null, "score": 0.8123 | null, "renamed": false,
                    "talk_seconds": 1800.25, "segments": 120}, …],
      "text": "all sentences joined",
      "segments": [{"start": 3.48, "end": 5.08, "speaker": 1, "speaker_label": "Speaker1",
                    "speaker_name": "客服", "text": "…"}, …]
    }

Once the job has a summary (daemon/jobs/summarize.py), the outbox copy ends with
`"summary": {…}`, the summary object documented in daemon/summaries/answer.py; the
stored copy never holds it, and `parse_json` ignores it.

Seconds are rounded to milliseconds; anything unknown is null. `source.modified_at`
is the audio file's modification time (ISO 8601 with its UTC offset), the date that
the md and docx files show. A speaker's `label` is its cluster's, stable (FunASR's
numbering by first appearance); `name` is set where the speaker has one (a voice of
the library, a rename, a named stereo channel); `voice` is the library voice's id and
`score` the cosine similarity that named it (daemon.voices), `renamed` says a person
named it. `display` (and a segment's `speaker_name`) is how every other format shows
the speaker: the name, else `SpeakerN` (clusters numbered among the unnamed ones,
channels by their channel). `text`,
`timing.rtf`, `display` and the talk times are derived from the rest and ignored by
`parse_json`. A model's local `path` is not written: it describes the machine, not the
transcript. The job's stored copy under `state/transcripts/` (daemon.jobs.outputs) also
keeps each speaker's `centroid` (the mean CAM++ embedding of its cluster), so that
matching and renaming need no new transcription; the outbox copy leaves it out.
Additive changes keep the schema name; anything that breaks readers bumps it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

from ..transcript import SCHEMA, EngineInfo, ModelInfo, Segment, Source, SpeakerMatch, Timing, Transcript
from .common import ms, seconds


def _sec(value: float | None) -> float | None:
    return None if value is None else seconds(ms(value))


def _speaker_entry(t: Transcript, s: Any, centroids: bool) -> dict[str, Any]:
    match = s.match or SpeakerMatch()
    entry = {"id": s.speaker, "label": s.label, "name": s.name, "display": s.display, "voice": match.voice,
             "score": None if match.score is None else round(match.score, 4), "renamed": match.renamed,
             "talk_seconds": _sec(s.talk_seconds), "segments": s.segments}
    if centroids and s.speaker in t.speaker_centroids:
        entry["centroid"] = [round(float(x), 6) for x in t.speaker_centroids[s.speaker]]
    return entry


def to_dict(t: Transcript, *, centroids: bool = False, summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    rtf = t.rtf
    doc = {
        "schema": SCHEMA,
        "source": None
        if t.source is None
        else {
            "name": t.source.name,
            "sha256": t.source.sha256,
            "duration_seconds": _sec(t.source.duration_seconds),
            "modified_at": None if t.source.modified_at is None else t.source.modified_at.isoformat(),
        },
        "audio_seconds": _sec(t.audio_seconds),
        "engine": None
        if t.engine is None
        else {
            "funasr_version": t.engine.funasr_version,
            "device": t.engine.device,
            "models": [{"role": m.role, "name": m.name, "revision": m.revision} for m in t.engine.models],
        },
        "timing": {
            "load_seconds": _sec(t.timing.load_seconds),
            "transcribe_seconds": _sec(t.timing.transcribe_seconds),
            "rtf": None if rtf is None else round(rtf, 6),
        },
        "speakers": [_speaker_entry(t, s, centroids) for s in t.speakers],
        "text": t.text,
        "segments": [
            {
                "start": _sec(s.start),
                "end": _sec(s.end),
                "speaker": s.speaker,
                "speaker_label": s.speaker_label,
                "speaker_name": t.speaker_display(s.speaker),
                "text": s.text,
            }
            for s in t.segments
        ],
    }
    if summary is not None:
        doc["summary"] = dict(summary)
    return doc


def render_json(t: Transcript, *, centroids: bool = False, summary: Mapping[str, Any] | None = None) -> str:
    """The json format; `centroids`: with each speaker's centroid (the stored copy);
    `summary`: the job's summary object, last (the outbox copy, once it has one)."""
    return json.dumps(to_dict(t, centroids=centroids, summary=summary), ensure_ascii=False, indent=2) + "\n"


def parse_json(text: str) -> Transcript:
    """Read a `spkd.transcript/1` document back into a Transcript (ValueError if it is not one)."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"not a {SCHEMA} document (schema: {found!r})")
    src, eng, tim = doc.get("source"), doc.get("engine"), doc.get("timing") or {}
    speakers = [s for s in doc.get("speakers") or () if isinstance(s, dict) and "id" in s]
    return Transcript(
        segments=tuple(
            Segment(start=float(s["start"]), end=float(s["end"]), speaker=int(s["speaker"]), text=s["text"])
            for s in doc.get("segments") or ()
        ),
        audio_seconds=float(doc.get("audio_seconds") or 0.0),
        source=None
        if src is None
        else Source(
            name=src["name"],
            sha256=src.get("sha256"),
            duration_seconds=src.get("duration_seconds"),
            modified_at=None if src.get("modified_at") is None else datetime.fromisoformat(src["modified_at"]),
        ),
        engine=None
        if eng is None
        else EngineInfo(
            funasr_version=eng.get("funasr_version"),
            device=eng.get("device"),
            models=tuple(
                ModelInfo(role=m["role"], name=m["name"], revision=m.get("revision")) for m in eng.get("models") or ()
            ),
        ),
        timing=Timing(load_seconds=tim.get("load_seconds"), transcribe_seconds=tim.get("transcribe_seconds")),
        speaker_names={int(s["id"]): str(s["name"]) for s in speakers if s.get("name")},
        speaker_matches={
            int(s["id"]): SpeakerMatch(voice=s.get("voice"), score=s.get("score"), renamed=bool(s.get("renamed")))
            for s in speakers if s.get("voice") is not None or s.get("score") is not None or s.get("renamed")
        },
        speaker_centroids={int(s["id"]): tuple(float(x) for x in s["centroid"]) for s in speakers
                           if isinstance(s.get("centroid"), list) and s["centroid"]},
    )
