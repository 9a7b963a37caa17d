"""A job's results on disk, read side: where its stored transcript lives
(`state/transcripts/<id>.json`, which lets a duplicate of the same audio reuse the
result, in any formats, without a second transcription), reading it back, and which
outbox formats a job has. Writing any of them is daemon.jobs.results's alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from daemon import writers
from daemon.config import Config
from daemon.transcript import Transcript

if TYPE_CHECKING:
    from daemon.store import Job

__all__ = ["EXTENSION_MAX_BYTES", "SUMMARY_SUFFIX", "clashing_stems", "formats_for", "formats_written",
           "load_transcript", "summary_path", "transcript_path"]

# A job's summary beside its transcript's formats: NAME.summary.md (daemon/jobs/summarize.py).
SUMMARY_SUFFIX = ".summary.md"

# The longest extension a format adds to an output stem (`.sentences.txt`): a stem
# leaves this much of the file system's name limit free (daemon.files.numbered).
EXTENSION_MAX_BYTES = max(len(writers.extension(fmt).encode()) for fmt in writers.FORMATS)


# What a stem's outputs append to it. Where one ending ends with another, two stems share
# a name: `X.sentences` + `.txt` is `X` + `.sentences.txt`, `X.summary` + `.md` is `X` +
# `.summary.md`. Those middles (`.sentences`, `.summary`) make stems clash.
_ENDINGS = {writers.extension(fmt) for fmt in writers.FORMATS} | {SUMMARY_SUFFIX}
_STEM_MIDDLES = tuple(sorted({longer[:-len(shorter)] for longer in _ENDINGS for shorter in _ENDINGS
                              if longer != shorter and longer.endswith(shorter)}))


def clashing_stems(stem: str) -> set[str]:
    """The output stems whose outputs (in any format, or a summary) could have the same
    name as one of `stem`'s: itself, itself with a middle (`X.summary` for `X`), and
    itself without one (`X` for `X.summary`). A new job's stem avoids all of them."""
    return ({stem} | {stem + middle for middle in _STEM_MIDDLES}
            | {stem[:-len(middle)] for middle in _STEM_MIDDLES if stem.endswith(middle) and len(stem) > len(middle)})


def transcript_path(config: Config, job_id: int) -> Path:
    return config.paths.state / "transcripts" / f"{job_id}.json"


def load_transcript(config: Config, job_id: int) -> Transcript | None:
    try:
        return writers.parse_json(transcript_path(config, job_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def formats_for(config: Config, options: Mapping[str, Any]) -> Sequence[str]:
    """A job's output formats: its sidecar's `formats`, else the config's."""
    return options.get("formats") or config.output.formats


def formats_written(job: "Job") -> list[str]:
    """The formats among a job's recorded outputs (`jobs.outputs`), in writers.FORMATS order."""
    recorded = set(job.outputs or ())
    return [fmt for fmt in writers.FORMATS if job.output_stem + writers.extension(fmt) in recorded]


def summary_path(config: Config, output_stem: str) -> Path:
    """Where a job's summary goes: `outbox/NAME.summary.md`."""
    from daemon import files

    return files.inside(config.paths.outbox, output_stem + SUMMARY_SUFFIX)
