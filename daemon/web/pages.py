"""What the dashboard's pages show, as plain values the templates render: a job's
own files (found from its row, never from a request path), its speakers and where each
name came from (the transcript itself: the view daemon.web.transcript_routes places), the voice library, the overview.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from daemon import files, writers
from daemon.intake import voice_folder
from daemon.intake.listing import InboxListing, list_inbox
from daemon.jobs import diskguard
from daemon.jobs import outputs
from daemon.service import manager as service
from daemon.store.db import display_url
from daemon.transcript import Speaker, Transcript
from daemon.voices import library

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import EventRow, Job, Store, VoiceSummary, WorkerRow

__all__ = ["AUDIO_TYPES", "OUTPUT_TYPES", "Enrolment", "JobView", "Overview", "VoicesView", "archived_source",
           "job_view", "name_source", "output_file", "overview", "voices_view"]

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

def archived_source(config: "Config", row: "Job") -> Path | None:
    """The job's source in paths.archive: the path its row recorded when it was archived.
    A job archived before rows recorded it is matched by name, and only when the file
    there has the job's size. None when there is none (not done yet, failed, swept by
    retention, or a symbolic link)."""
    if row.state != "done":
        return None
    if row.archive_name:
        return files.regular_file_inside(config.paths.archive, row.archive_name)
    candidate = files.regular_file_inside(config.paths.archive, row.source_name)
    if candidate is not None and row.size_bytes is not None and candidate.stat().st_size == row.size_bytes:
        return candidate
    return None


def output_file(config: "Config", row: "Job", fmt: str) -> Path | None:
    """The job's output file of format `fmt`, from its row's outputs list, in the outbox."""
    if fmt not in outputs.formats_written(row):
        return None
    return files.regular_file_inside(config.paths.outbox, row.output_stem + writers.extension(fmt))


# --- the job page ------------------------------------------------------------------------

@dataclass(frozen=True)
class SpeakerRow:
    speaker: int
    label: str  # the cluster's own label (Speaker.label): what a rename names
    shown: str  # how every output shows it: its name, else SpeakerN among the unnamed
    name: str | None  # its name, when it has one
    source: str  # where the name came from: "renamed", "voice …", "channel", "" (unnamed)
    score: float | None  # the library voice's score, when matching named it
    talk_seconds: float
    segments: int


@dataclass(frozen=True)
class JobView:
    row: "Job"
    events: list["EventRow"]
    transcript: Transcript | None
    speakers: tuple[SpeakerRow, ...] = ()
    formats: tuple[str, ...] = ()
    has_audio: bool = False
    audio_type: str = "application/octet-stream"

    @property
    def can_rename(self) -> bool:
        """What daemon.jobs.rename.rename_speakers accepts: a done transcription with its stored transcript."""
        return (self.transcript is not None and bool(self.speakers) and self.row.state == "done"
                and self.row.task == "transcribe")


def name_source(speaker: Speaker, voice_names: Mapping[int, str]) -> str:
    """Where a speaker's name came from, in words: a person's rename (and whether its
    voice was enrolled with it), the library voice that matched, or a stereo channel."""
    match = speaker.match
    if match is not None and match.renamed:
        return "renamed, and enrolled as a voice" if match.voice is not None else "renamed"
    if match is not None and match.voice is not None:
        voice = voice_names.get(match.voice)
        return f"voice {voice}" if voice is not None else f"voice #{match.voice} (removed from the library since)"
    return "channel" if speaker.name else ""


def job_view(config: "Config", store: "Store", job_id: int) -> JobView | None:
    row = store.job(job_id)
    if row is None:
        return None
    events = store.events(job_id)
    transcript = outputs.load_transcript(config, job_id) if row.state == "done" else None
    source = archived_source(config, row)
    suffix = Path(row.source_name).suffix.lower().lstrip(".")
    view = JobView(row=row, events=events, transcript=transcript, formats=tuple(outputs.formats_written(row)),
                   has_audio=source is not None, audio_type=AUDIO_TYPES.get(suffix, "application/octet-stream"))
    if transcript is None:
        return view
    infos = transcript.speakers
    # The library's names only when a speaker was named by it (a page load reads no voices otherwise).
    voice_names = ({v.id: v.name for v in library.list_voices(config, store)}
                   if any(i.match and i.match.voice is not None for i in infos) else {})
    speakers = []
    for info in infos:
        score = info.match.score if info.match is not None and not info.match.renamed else None
        speakers.append(SpeakerRow(speaker=info.speaker, label=info.label, shown=info.display, name=info.name,
                                   source=name_source(info, voice_names), score=score,
                                   talk_seconds=info.talk_seconds, segments=info.segments))
    return JobView(row=row, events=events, transcript=transcript, speakers=tuple(speakers),
                   formats=view.formats, has_audio=view.has_audio, audio_type=view.audio_type)


# --- the voice library ------------------------------------------------------------------

@dataclass(frozen=True)
class Enrolment:
    """A recording on its way into the library, or one that did not make it."""

    voice: str
    file: str  # its path under paths.voices
    state: str  # waiting (for the folder scan), queued, running, failed
    job_id: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class VoicesView:
    voices: list["VoiceSummary"]
    pending: list[Enrolment]
    failed: list[Enrolment]
    daemon_running: bool
    rescan_seconds: float


def voices_view(config: "Config", store: "Store") -> VoicesView:
    """The library (daemon.voices.library.list_voices), and the enrolments the folder has in
    hand: files the daemon's folder scan has not taken yet, enrolment jobs queued or
    running, and the failed ones whose file is still in the folder (the scan tries such a
    file again only once it changes)."""
    pending = [Enrolment(voice=folder, file=f"{folder}/{name}", state="waiting")
               for folder, name in voice_folder.waiting_files(config, store)]
    pending += [Enrolment(voice=str(j.options.get("voice") or ""), file=library.folder_source(j.source_name),
                          state=j.state, job_id=j.id)
                for j in store.enrol_jobs(states=("queued", "running"))]
    latest: dict[str, Job] = {}
    for job in store.enrol_jobs():  # oldest first: the last one of a file is its latest
        latest[job.source_name] = job
    failed = [Enrolment(voice=str(j.options.get("voice") or ""), file=library.folder_source(j.source_name),
                        state=j.state, job_id=j.id, error=f"{j.error_kind}: {j.error_message}")
              for j in latest.values() if j.state == "failed"
              and files.regular_file_inside(config.paths.voices, library.folder_source(j.source_name)) is not None]
    return VoicesView(voices=library.list_voices(config, store), pending=pending, failed=failed,
                      daemon_running=service.running_daemon(config) is not None,
                      rescan_seconds=config.watch.rescan_seconds)


# --- the overview ----------------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    running: bool
    pid: int | None
    uptime_seconds: float | None
    host: str
    database: str
    counts: dict[str, int]
    workers: list["WorkerRow"]
    running_jobs: list["Job"]
    failures: list["Job"]
    paused: str | None
    free_mb: dict[str, float] = field(default_factory=dict)
    # Files lying in the inbox that are not jobs yet: settling, empty, ignored and why.
    inbox: InboxListing = field(default_factory=InboxListing)


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
        inbox=list_inbox(config),
    )


def age_seconds(moment: dt.datetime | None) -> float | None:
    if moment is None:
        return None
    return (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - moment).total_seconds()
