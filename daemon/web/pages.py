"""What the dashboard's pages show, as plain values the templates render: a job's
own files (found from its row, never from a request path), its transcript by turns,
the speaker timeline, the overview.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from daemon import diskguard, files, outputs, service, writers
from daemon.db import display_url
from daemon.transcript import Transcript, speaker_label

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["AUDIO_TYPES", "OUTPUT_TYPES", "JobView", "Overview", "archived_source", "job_view", "output_file",
           "output_formats", "overview"]

# What the browser is told each format and each source is (an unknown source: octet-stream).
OUTPUT_TYPES = {
    "json": "application/json", "txt": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8", "sentences": "text/plain; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8", "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
AUDIO_TYPES = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "m4a": "audio/mp4", "aac": "audio/aac", "flac": "audio/flac",
    "ogg": "audio/ogg", "opus": "audio/ogg", "webm": "audio/webm", "mp4": "video/mp4", "mov": "video/quicktime",
    "mkv": "video/x-matroska", "wma": "audio/x-ms-wma", "amr": "audio/amr",
}
FAILURES_SHOWN = 10


# --- a job's own files -----------------------------------------------------------------

def archived_source(config: "Config", row: Mapping[str, Any]) -> Path | None:
    """The job's source in paths.archive: the path its row recorded when it was archived.
    A job archived before rows recorded it is matched by name, and only when the file
    there has the job's size. None when there is none (not done yet, failed, swept by
    retention, or a symbolic link)."""
    if row.get("state") != "done":
        return None
    if row.get("archive_name"):
        return files.regular_file_inside(config.paths.archive, row["archive_name"])
    candidate = files.regular_file_inside(config.paths.archive, row["source_name"])
    if candidate is not None and row.get("size_bytes") is not None and candidate.stat().st_size == row["size_bytes"]:
        return candidate
    return None


def output_file(config: "Config", row: Mapping[str, Any], fmt: str) -> Path | None:
    """The job's output file of format `fmt`, from its row's outputs list, in the outbox."""
    if fmt not in outputs.formats_written(row):
        return None
    return files.regular_file_inside(config.paths.outbox, row["output_stem"] + writers.extension(fmt))


# --- the job page ------------------------------------------------------------------------

@dataclass(frozen=True)
class Sentence:
    index: int
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Turn:
    speaker: int
    label: str
    name: str | None
    start: float
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class SpeakerRow:
    speaker: int
    label: str
    name: str | None
    score: float | None
    talk_seconds: float
    segments: int
    # (sentence index, x, width) in per mille of the recording, for the timeline
    bars: tuple[tuple[int, float, float], ...]


@dataclass(frozen=True)
class JobView:
    row: dict[str, Any]
    events: list[dict[str, Any]]
    transcript: Transcript | None
    turns: tuple[Turn, ...] = ()
    speakers: tuple[SpeakerRow, ...] = ()
    formats: tuple[str, ...] = ()
    has_audio: bool = False
    audio_type: str = "application/octet-stream"


def _speaker_name(transcript: Transcript, speaker: int) -> tuple[str | None, float | None]:
    """A speaker's name and match score, where the transcript carries them."""
    for info in transcript.speakers:
        if info.speaker == speaker:
            return getattr(info, "name", None), getattr(info, "score", None)
    return None, None


def job_view(config: "Config", store: "Store", job_id: int) -> JobView | None:
    row = store.job(job_id)
    if row is None:
        return None
    events = store.events(job_id)
    transcript = outputs.load_transcript(config, job_id) if row["state"] == "done" else None
    source = archived_source(config, row)
    suffix = Path(row["source_name"]).suffix.lower().lstrip(".")
    view = JobView(row=row, events=events, transcript=transcript, formats=tuple(outputs.formats_written(row)),
                   has_audio=source is not None, audio_type=AUDIO_TYPES.get(suffix, "application/octet-stream"))
    if transcript is None:
        return view
    turns: list[Turn] = []
    for index, seg in enumerate(transcript.segments):
        sentence = Sentence(index=index, start=seg.start, end=seg.end, text=seg.text)
        if turns and turns[-1].speaker == seg.speaker:
            last = turns[-1]
            turns[-1] = Turn(last.speaker, last.label, last.name, last.start, last.sentences + (sentence,))
        else:
            name, _score = _speaker_name(transcript, seg.speaker)
            turns.append(Turn(seg.speaker, speaker_label(seg.speaker), name, seg.start, (sentence,)))
    length = max(transcript.audio_seconds, max((s.end for s in transcript.segments), default=0.0), 0.001)
    speakers = []
    for info in transcript.speakers:
        bars = tuple((i, round(1000 * s.start / length, 2), round(max(1000 * s.duration / length, 1.0), 2))
                     for i, s in enumerate(transcript.segments) if s.speaker == info.speaker)
        name, score = _speaker_name(transcript, info.speaker)
        speakers.append(SpeakerRow(speaker=info.speaker, label=info.label, name=name, score=score,
                                   talk_seconds=info.talk_seconds, segments=info.segments, bars=bars))
    return JobView(row=row, events=events, transcript=transcript, turns=tuple(turns), speakers=tuple(speakers),
                   formats=view.formats, has_audio=view.has_audio, audio_type=view.audio_type)


# --- the overview ----------------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    running: bool
    pid: int | None
    uptime_seconds: float | None
    host: str
    database: str
    counts: dict[str, int]
    workers: list[dict[str, Any]]
    running_jobs: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    paused: str | None
    free_mb: dict[str, float] = field(default_factory=dict)


def _free_mb(config: "Config") -> dict[str, float]:
    import shutil

    found: dict[str, float] = {}
    for name in ("outbox", "state"):
        try:
            found[name] = round(shutil.disk_usage(files.nearest_existing(getattr(config.paths, name))).free / 2**20)
        except OSError:
            continue
    return found


def overview(config: "Config", store: "Store") -> Overview:
    runtime = service.running_daemon(config)
    return Overview(
        running=runtime is not None,
        pid=int(runtime["pid"]) if runtime else None,
        uptime_seconds=round(time.time() - float(runtime["started_at"]), 1) if runtime else None,
        host=config.host,
        database=display_url(config.database_url),
        counts=store.counts(),
        workers=store.worker_rows(),
        running_jobs=store.jobs(limit=50, state="running"),
        failures=store.jobs(limit=FAILURES_SHOWN, state="failed"),
        paused=diskguard.paused_reason(config),
        free_mb=_free_mb(config),
    )


def age_seconds(moment: dt.datetime | None) -> float | None:
    if moment is None:
        return None
    return (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - moment).total_seconds()
