"""A job's results on disk: the outbox files (through the writers) and the job's
stored transcript under `state/transcripts/`, which lets a duplicate of the same
audio reuse the result, in any formats, without a second transcription."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Sequence

from daemon import files, writers
from daemon.config import Config
from daemon.transcript import Transcript


def transcript_path(config: Config, job_id: int) -> Path:
    return config.paths.state / "transcripts" / f"{job_id}.json"


def save_transcript(config: Config, job_id: int, transcript: Transcript) -> None:
    files.atomic_write(transcript_path(config, job_id), writers.render("json", transcript))


def load_transcript(config: Config, job_id: int) -> Transcript | None:
    try:
        return writers.parse_json(transcript_path(config, job_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def publish(config: Config, *, output_stem: str, transcript: Transcript, formats: Sequence[str]) -> list[str]:
    """Write the outbox files of one job; returns their paths relative to the outbox."""
    stem = PurePosixPath(output_stem)
    outbox = config.paths.outbox
    directory = files.inside(outbox, stem.parent.as_posix()) if stem.parent.parts else outbox
    written = writers.publish(transcript, directory=directory, stem=stem.name, formats=formats)
    return [p.relative_to(outbox).as_posix() for p in written]
