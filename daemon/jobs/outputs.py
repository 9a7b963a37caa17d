"""A job's results on disk: the outbox files (through the writers) and the job's
stored transcript under `state/transcripts/`, which lets a duplicate of the same
audio reuse the result, in any formats, without a second transcription."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from daemon import files, writers
from daemon.config import Config
from daemon.transcript import Transcript

__all__ = ["EXTENSION_MAX_BYTES", "formats_for", "formats_written", "load_transcript", "publish", "reused_transcript",
           "save_transcript", "transcript_path"]

# The longest extension a format adds to an output stem (`.sentences.txt`): a stem
# leaves this much of the file system's name limit free (daemon.files.numbered).
EXTENSION_MAX_BYTES = max(len(writers.extension(fmt).encode()) for fmt in writers.FORMATS)


def transcript_path(config: Config, job_id: int) -> Path:
    return config.paths.state / "transcripts" / f"{job_id}.json"


def save_transcript(config: Config, job_id: int, transcript: Transcript) -> None:
    """The job's own copy of its transcript, with the speakers' centroids (for naming later)."""
    from daemon.writers.json_format import render_json

    files.atomic_write(transcript_path(config, job_id), render_json(transcript, centroids=True))


def load_transcript(config: Config, job_id: int) -> Transcript | None:
    try:
        return writers.parse_json(transcript_path(config, job_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def reused_transcript(config: Config, twin_id: int | None, *, audio_path: Path, source_name: str,
                      sha256: str | None) -> Transcript | None:
    """The stored transcript of job `twin_id` (an earlier job with the same audio and the
    same transcript options) as the transcript of the file at `audio_path`; None when
    there is no twin or its transcript is gone (then the file is transcribed after all)."""
    if twin_id is None:
        return None
    transcript = load_transcript(config, twin_id)
    return transcript.for_source(audio_path, name=source_name, sha256=sha256) if transcript is not None else None


def formats_for(config: Config, options: Mapping[str, Any]) -> Sequence[str]:
    """A job's output formats: its sidecar's `formats`, else the config's."""
    return options.get("formats") or config.output.formats


def formats_written(row: Mapping[str, Any]) -> list[str]:
    """The formats among a job's recorded outputs (`jobs.outputs`), in writers.FORMATS order."""
    recorded = set(row.get("outputs") or ())
    return [fmt for fmt in writers.FORMATS if row["output_stem"] + writers.extension(fmt) in recorded]


def publish(config: Config, *, output_stem: str, transcript: Transcript, formats: Sequence[str]) -> list[str]:
    """Write the outbox files of one job; returns their paths relative to the outbox."""
    stem = PurePosixPath(output_stem)
    outbox = config.paths.outbox
    directory = files.inside(outbox, stem.parent.as_posix()) if stem.parent.parts else outbox
    written = writers.publish(transcript, directory=directory, stem=stem.name, formats=formats)
    return [p.relative_to(outbox).as_posix() for p in written]
