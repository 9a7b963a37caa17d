"""The Transcript value: what the engine produces and every writer consumes.

Only the engine knows FunASR's result shape; everything downstream of it sees
this module's types, so that all output formats agree with each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["SCHEMA", "EngineInfo", "ModelInfo", "Segment", "Source", "Speaker", "Timing", "Transcript", "join_text",
           "number_speakers", "speaker_label"]

SCHEMA = "spkd.transcript/1"


def speaker_label(speaker: int) -> str:
    """`Speaker1`, `Speaker2`, ... (speakers are numbered from 1): a speaker's stable label,
    also its display name until it has a name (`Transcript.speaker_display`)."""
    return f"Speaker{speaker}"


@dataclass(frozen=True)
class Segment:
    """One sentence: times in seconds, `speaker` numbered from 1 by first appearance."""

    start: float
    end: float
    speaker: int
    text: str

    @property
    def speaker_label(self) -> str:
        return speaker_label(self.speaker)

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True)
class Speaker:
    speaker: int
    talk_seconds: float
    segments: int
    name: str | None = None  # e.g. a stereo channel's name; None: known only by its label

    @property
    def label(self) -> str:
        return speaker_label(self.speaker)

    @property
    def display(self) -> str:
        return self.name or self.label


@dataclass(frozen=True)
class Source:
    name: str
    sha256: str | None = None
    duration_seconds: float | None = None
    # The audio file's modification time: the closest thing to a recording date that we
    # have (a recorder writes the file as the recording ends). Whole seconds, in the local
    # time zone of the machine that transcribed it, with its UTC offset.
    modified_at: datetime | None = None


def describe_source(path: Path, *, name: str, sha256: str | None = None,
                    duration_seconds: float | None = None) -> Source:
    """The Source of the audio file at `path` (spool moves keep its mtime); `name` is
    what the user called it. No date when the file cannot be read."""
    try:
        mtime = int(Path(path).stat().st_mtime)
    except OSError:
        modified_at = None
    else:
        modified_at = datetime.fromtimestamp(mtime, timezone.utc).astimezone()
    return Source(name=name, sha256=sha256, duration_seconds=duration_seconds, modified_at=modified_at)


@dataclass(frozen=True)
class ModelInfo:
    role: str  # asr, vad, punc, spk
    name: str
    revision: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class EngineInfo:
    funasr_version: str
    device: str
    models: tuple[ModelInfo, ...] = ()


@dataclass(frozen=True)
class Timing:
    load_seconds: float | None = None
    transcribe_seconds: float | None = None

    def rtf(self, audio_seconds: float) -> float | None:
        if self.transcribe_seconds is None or audio_seconds <= 0:
            return None
        return self.transcribe_seconds / audio_seconds


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    audio_seconds: float
    source: Source | None = None
    engine: EngineInfo | None = None
    timing: Timing = field(default_factory=Timing)
    # speaker number -> name; a speaker without one is shown by its label
    speaker_names: dict[int, str] = field(default_factory=dict)

    def speaker_display(self, speaker: int) -> str:
        """How every format shows a speaker: its name, else `SpeakerN`."""
        return self.speaker_names.get(speaker) or speaker_label(speaker)

    @property
    def text(self) -> str:
        return join_text(s.text for s in self.segments)

    @property
    def speakers(self) -> tuple[Speaker, ...]:
        talk: dict[int, float] = {}
        count: dict[int, int] = {}
        for seg in self.segments:
            talk[seg.speaker] = talk.get(seg.speaker, 0.0) + seg.duration
            count[seg.speaker] = count.get(seg.speaker, 0) + 1
        return tuple(
            Speaker(speaker=s, talk_seconds=round(talk[s], 3), segments=count[s], name=self.speaker_names.get(s))
            for s in sorted(talk)
        )

    @property
    def rtf(self) -> float | None:
        return self.timing.rtf(self.audio_seconds)

    def turns(self) -> tuple[Segment, ...]:
        """Consecutive sentences of one speaker merged into one turn."""
        merged: list[Segment] = []
        for seg in self.segments:
            if merged and merged[-1].speaker == seg.speaker:
                last = merged[-1]
                merged[-1] = Segment(
                    start=last.start,
                    end=max(last.end, seg.end),
                    speaker=last.speaker,
                    text=join_text((last.text, seg.text)),
                )
            else:
                merged.append(seg)
        return tuple(merged)

    def replace(self, **changes: Any) -> "Transcript":
        return dataclasses.replace(self, **changes)

    def for_source(self, path: Path, *, name: str, sha256: str | None) -> "Transcript":
        """This transcript as the one of the audio file at `path`, which the user called
        `name` (describe_source); a reused transcript keeps the duration of the audio it
        was made from."""
        return self.replace(source=describe_source(path, name=name, sha256=sha256,
                                                   duration_seconds=self.audio_seconds))


def join_text(parts: Iterable[str]) -> str:
    """Join sentence texts: no space between CJK sentences, one between Latin ones."""
    out = ""
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if out and _needs_space(out[-1], part[0]):
            out += " "
        out += part
    return out


def _needs_space(left: str, right: str) -> bool:
    return left.isascii() and right.isascii() and not left.isspace()


def number_speakers(raw: Sequence[tuple[float, float, int | None, str]]) -> tuple[Segment, ...]:
    """Turn (start, end, raw speaker id, text) rows into segments whose speakers are
    numbered 1, 2, ... by first appearance, closing gaps in the raw ids.

    Rows are sorted by start time first; a missing raw id (no speaker model) is speaker 1.
    """
    mapping: dict[int, int] = {}
    segments: list[Segment] = []
    for start, end, raw_speaker, text in sorted(raw, key=lambda r: (r[0], r[1])):
        key = -1 if raw_speaker is None else int(raw_speaker)
        if key not in mapping:
            mapping[key] = len(mapping) + 1
        segments.append(
            Segment(start=round(float(start), 3), end=round(float(end), 3), speaker=mapping[key], text=text.strip())
        )
    return tuple(segments)
