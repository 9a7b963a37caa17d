"""The Transcript value: what the engine produces and every writer consumes.

Only the engine knows FunASR's result shape; everything downstream of it sees
this module's types, so that all output formats agree with each other.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["SCHEMA", "EngineInfo", "ModelInfo", "Segment", "Source", "Speaker", "SpeakerMatch", "Timing", "Transcript",
           "VoicePrint", "join_text", "model_identity", "number_speakers", "raw_speaker_numbers", "speaker_label"]

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
class VoicePrint:
    """One person's voice in one recording (daemon.engine.transcriber.Engine.embed_voice): the mean
    speaker embedding of its speech and the model that made it."""

    embedding: tuple[float, ...]
    speech_seconds: float
    audio_seconds: float
    model_name: str
    model_revision: str | None = None


@dataclass(frozen=True)
class SpeakerMatch:
    """Where a speaker's name came from: the voice library (`voice`: the voice's id,
    `score`: the cosine of the speaker's centroid with it), or a person (`renamed`: a
    rename, which matching again never overrides; `voice` set when it was enrolled)."""

    voice: int | None = None
    score: float | None = None
    renamed: bool = False


@dataclass(frozen=True)
class Speaker:
    speaker: int
    talk_seconds: float
    segments: int
    name: str | None = None  # a voice's or a stereo channel's name; None: known by its label
    display: str = ""  # how every format shows it (Transcript.speaker_display)
    match: SpeakerMatch | None = None

    @property
    def label(self) -> str:
        return speaker_label(self.speaker)


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


def model_identity(name: str | None, revision: str | None, dimension: int | None) -> str:
    """`cam++@v2.0.2/192`: the speaker model that made an embedding, as messages and
    listings show it (only embeddings of one identity are ever compared)."""
    return f"{name}@{revision or '-'}/{dimension}"


@dataclass(frozen=True)
class EngineInfo:
    funasr_version: str
    device: str
    models: tuple[ModelInfo, ...] = ()

    @property
    def speaker_model(self) -> ModelInfo | None:
        """The speaker model (its name and revision), when there is one."""
        return next((m for m in self.models if m.role == "spk"), None)


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
    # speaker number -> name; a speaker without one is shown as `SpeakerN`
    speaker_names: dict[int, str] = field(default_factory=dict)
    # speaker number -> where its name came from (daemon.voices)
    speaker_matches: dict[int, SpeakerMatch] = field(default_factory=dict)
    # speaker number -> the mean CAM++ embedding of its cluster (FunASR's own centroid),
    # kept in the stored transcript so that naming and renaming need no new transcription
    speaker_centroids: dict[int, tuple[float, ...]] = field(default_factory=dict)

    def speaker_display(self, speaker: int) -> str:
        """How every format shows a speaker: its name, else `SpeakerN`. Speakers found by
        clustering (the transcript keeps their centroids) are numbered 1, 2, ... by first
        appearance among the unnamed ones (a recording whose Speaker1 was named 王总 shows
        the other voice as Speaker1); channels of a split recording keep their channel's
        number (channel 3 without a name is Speaker3)."""
        return self.speaker_names.get(speaker) or self._unnamed_labels.get(speaker) or speaker_label(speaker)

    @functools.cached_property
    def _unnamed_labels(self) -> dict[int, str]:
        if not self.speaker_names or not self.speaker_centroids:
            return {}
        unnamed = sorted({s.speaker for s in self.segments} - {k for k, v in self.speaker_names.items() if v})
        return {speaker: speaker_label(rank) for rank, speaker in enumerate(unnamed, start=1)}

    @property
    def speaker_model(self) -> ModelInfo | None:
        """The speaker model that made the centroids (its name and revision)."""
        return self.engine.speaker_model if self.engine is not None else None

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
            Speaker(speaker=s, talk_seconds=round(talk[s], 3), segments=count[s], name=self.speaker_names.get(s),
                    display=self.speaker_display(s), match=self.speaker_matches.get(s))
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
        return dataclasses.replace(self, **changes)  # a new value: its cached labels start afresh

    def merged(self, into: int, others: Iterable[int]) -> "Transcript":
        """The speakers `others` become speaker `into`: their segments are its, its
        centroid is the talk-weighted mean of theirs (each at unit length), and their
        names and matches go (`into` keeps its own). Other speakers keep their numbers."""
        gone = set(others) - {into}
        if not gone:
            return self
        talk = {s.speaker: s.talk_seconds for s in self.speakers}
        segments = tuple(dataclasses.replace(seg, speaker=into) if seg.speaker in gone else seg
                         for seg in self.segments)
        centroids = {k: v for k, v in self.speaker_centroids.items() if k not in gone}
        parts = [(talk.get(k, 0.0) or 1e-3, self.speaker_centroids[k]) for k in (into, *sorted(gone))
                 if k in self.speaker_centroids]
        if parts:
            total = [0.0] * len(parts[0][1])
            for weight, vector in parts:
                norm = sum(x * x for x in vector) ** 0.5 or 1.0
                total = [t + weight * x / norm for t, x in zip(total, vector)]
            centroids[into] = tuple(round(x / sum(w for w, _ in parts), 6) for x in total)
        return self.replace(segments=segments, speaker_centroids=centroids,
                            speaker_names={k: v for k, v in self.speaker_names.items() if k not in gone},
                            speaker_matches={k: v for k, v in self.speaker_matches.items() if k not in gone})

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


def raw_speaker_numbers(raw: Sequence[tuple[float, float, int | None, str]]) -> dict[int, int]:
    """The speaker number (1, 2, ... by first appearance, gaps in the raw ids closed) of
    each raw speaker id of (start, end, raw speaker id, text) rows; -1 stands for a
    missing id (no speaker model)."""
    mapping: dict[int, int] = {}
    for _start, _end, raw_speaker, _text in sorted(raw, key=lambda r: (r[0], r[1])):
        key = -1 if raw_speaker is None else int(raw_speaker)
        if key not in mapping:
            mapping[key] = len(mapping) + 1
    return mapping


def number_speakers(raw: Sequence[tuple[float, float, int | None, str]]) -> tuple[Segment, ...]:
    """Turn (start, end, raw speaker id, text) rows into segments whose speakers are
    numbered by raw_speaker_numbers. Rows are sorted by start time first; a missing raw
    id (no speaker model) is speaker 1."""
    mapping = raw_speaker_numbers(raw)
    return tuple(
        Segment(start=round(float(start), 3), end=round(float(end), 3),
                speaker=mapping[-1 if raw_speaker is None else int(raw_speaker)], text=text.strip())
        for start, end, raw_speaker, text in sorted(raw, key=lambda r: (r[0], r[1]))
    )
