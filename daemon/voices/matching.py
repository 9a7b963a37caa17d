"""Naming speakers after the voice library: pure decisions, no store, no files.

A *voice* is a name with one or more *samples*: the mean CAM++ embedding over the
speech of one recording of that person alone (daemon.engine.transcriber.Engine.embed_voice),
with the identity of the model that made it. A transcription keeps each speaker
cluster's centroid, made the same way (FunASR's own `spk_embedding_center`), in the
job's stored transcript; naming compares the two.

Matching is careful rather than eager (the headless tools that name every voice after
its nearest neighbour are why): a speaker is named only when the cosine similarity of
its centroid with a voice (the mean of that voice's unit-length samples) is at least
`speakers.match_threshold` *and* beats the next best voice by `speakers.match_margin`;
a voice names at most one speaker of a recording (the one it scores highest with); the
others stay `SpeakerN` (daemon.transcript.Transcript.speaker_display). Known voices also
decide the count (`speakers.refine`, on by default): speakers of one recording that
*each* pass threshold and margin for the same voice are one person split by the
clusterer and become one speaker (`merge_known_voices`); nothing is merged on a guess.
Samples of
another model (name, revision or dimension) are never compared: they are skipped with
a warning. A name a person gave (`spkd speakers`, the dashboard) is never overridden
by matching again.

Everything here takes the samples (daemon.store.SampleRow) as arguments, so the worker,
`spkd voices rematch` and the benchmark (bench/voices.py) decide the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.errors import EnrolmentError, VoiceError
from daemon.options import normal_voice_name, voice_name_problem
from daemon.transcript import SpeakerMatch, Transcript, VoicePrint, model_identity, speaker_label

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import SampleRow

__all__ = ["Candidate", "LibraryVoice", "MIN_SPEECH_SECONDS", "SpeakerScores", "check_name", "enrol_print", "library",
           "match", "name_for_job", "name_speakers", "sample_of", "scores_for", "speaker_of"]

# Less speech than this gives a centroid too noisy to name anyone by.
MIN_SPEECH_SECONDS = 10.0


# --------------------------------------------------------------------------- names


def check_name(name: Any) -> str:
    """A voice's name, normalised, or VoiceError saying why it cannot be one
    (daemon.options.voice_name_problem: the one rule, for sidecars too)."""
    problem = voice_name_problem(name)
    if problem:
        raise VoiceError(problem)
    return normal_voice_name(name)


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class LibraryVoice:
    """A voice as matching sees it: the mean of its unit-length samples of one model."""

    id: int
    name: str
    vector: tuple[float, ...]
    samples: int


@dataclass(frozen=True)
class Candidate:
    voice: int
    name: str
    score: float


@dataclass(frozen=True)
class SpeakerScores:
    """One speaker's scores against the library, best first, and what came of them."""

    speaker: int
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None
    reason: str  # why it was, or was not, named
    # its best voice when that passes threshold and margin (chosen, or lost to a speaker
    # that scores higher for the same voice)
    qualified: Candidate | None = None


def _unit(vector: Sequence[float]) -> tuple[float, ...]:
    norm = math.sqrt(sum(x * x for x in vector))
    return tuple(x / norm for x in vector) if norm > 0 else tuple(0.0 for _ in vector)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(_unit(a), _unit(b)))


def library(samples: Sequence["SampleRow"], *, model_name: str | None, model_revision: str | None,
            dimension: int | None, names: Sequence[str] | None = None,
            warn: bool = True) -> list[LibraryVoice]:
    """The voices whose samples the model (`model_name`, `model_revision`, `dimension`)
    made, each the mean of its unit-length samples; `names`: only those voices. Samples
    of another model are skipped, with one warning per voice."""
    grouped: dict[int, list["SampleRow"]] = {}
    skipped: dict[str, set[str]] = {}
    wanted = set(names) if names is not None else None
    for sample in samples:
        if wanted is not None and sample.name not in wanted:
            continue
        if (sample.model_name, sample.model_revision, sample.dimension) != (model_name, model_revision, dimension):
            skipped.setdefault(sample.name, set()).add(
                model_identity(sample.model_name, sample.model_revision, sample.dimension))
            continue
        grouped.setdefault(sample.voice_id, []).append(sample)
    if warn:
        for name, models in sorted(skipped.items()):
            logger.warning("voice {}: sample(s) of another speaker model ({}) skipped; this recording's is {}",
                           name, ", ".join(sorted(models)), model_identity(model_name, model_revision, dimension))
    voices = []
    for voice_id, rows in grouped.items():
        units = [_unit(r.embedding) for r in rows]
        mean = tuple(sum(col) / len(units) for col in zip(*units))
        voices.append(LibraryVoice(id=voice_id, name=rows[0].name, vector=mean, samples=len(rows)))
    return sorted(voices, key=lambda v: v.name)


def match(centroids: Mapping[int, Sequence[float]], voices: Sequence[LibraryVoice], *, threshold: float,
          margin: float) -> dict[int, SpeakerScores]:
    """Which voice, if any, names each speaker (speaker number -> its scores).

    A speaker qualifies for its best voice when the score is >= `threshold` and beats
    the runner-up voice by >= `margin` (a library of one voice has no runner-up). Then
    one to one: a voice that several speakers qualify for names the one with the
    highest score, and the others stay unnamed (they do not fall back to a second choice,
    which by definition they were not sure of)."""
    scores: dict[int, list[Candidate]] = {}
    for speaker, centroid in centroids.items():
        found = [Candidate(voice=v.id, name=v.name, score=round(_cosine(centroid, v.vector), 4)) for v in voices]
        scores[speaker] = sorted(found, key=lambda c: (-c.score, c.name))
    qualified: dict[int, Candidate] = {}
    reasons: dict[int, str] = {}
    for speaker, found in scores.items():
        if not found:
            reasons[speaker] = "the library has no voice of this speaker model"
            continue
        best = found[0]
        runner_up = found[1].score if len(found) > 1 else None
        if best.score < threshold:
            reasons[speaker] = f"best {best.name} {best.score:.3f} < threshold {threshold:g}"
        elif runner_up is not None and best.score - runner_up < margin:
            reasons[speaker] = (f"best {best.name} {best.score:.3f} is within the margin {margin:g} of "
                                f"{found[1].name} {runner_up:.3f}")
        else:
            qualified[speaker] = best
    result: dict[int, SpeakerScores] = {}
    for speaker, found in scores.items():
        chosen = qualified.get(speaker)
        reason = reasons.get(speaker, "")
        if chosen is not None:
            rivals = [s for s, c in qualified.items() if c.voice == chosen.voice and s != speaker]
            better = [s for s in rivals if (qualified[s].score, -s) > (chosen.score, -speaker)]
            if better:
                reason = f"{chosen.name} went to {speaker_label(better[0])}, which scores higher"
                chosen = None
            else:
                reason = f"{chosen.name} {chosen.score:.3f}"
        result[speaker] = SpeakerScores(speaker=speaker, candidates=tuple(found), chosen=chosen, reason=reason,
                                        qualified=qualified.get(speaker))
    return result


def _given_names(transcript: Transcript) -> dict[int, str]:
    """The names a person gave (a rename): matching never changes them."""
    return {s: n for s, n in transcript.speaker_names.items()
            if (transcript.speaker_matches.get(s) or SpeakerMatch()).renamed}


def scores_for(transcript: Transcript, samples: Sequence["SampleRow"], *, threshold: float, margin: float,
               expected: Sequence[str] | None = None, warn: bool = True) -> dict[int, SpeakerScores]:
    """`match` for a transcript's centroids against the samples of its own speaker model;
    `expected`: only those voices are candidates. Speakers a person named, and names they
    gave, take no part."""
    model = transcript.speaker_model
    dimensions = {len(c) for c in transcript.speaker_centroids.values()}
    if model is None or len(dimensions) != 1:
        return {}
    voices = library(samples, model_name=model.name, model_revision=model.revision, dimension=dimensions.pop(),
                     names=expected, warn=warn)
    kept = _given_names(transcript)
    voices = [v for v in voices if v.name not in kept.values()]
    centroids = {s: c for s, c in transcript.speaker_centroids.items() if s not in kept}
    return match(centroids, voices, threshold=threshold, margin=margin)


def merge_known_voices(transcript: Transcript, scored: Mapping[int, SpeakerScores]) -> Transcript:
    """Speakers of one recording that each pass threshold and margin for the same voice
    are one person: they become the speaker that scores highest for it
    (Transcript.merged). A speaker without a confident match stays as it is."""
    by_voice: dict[int, list[SpeakerScores]] = {}
    for result in scored.values():
        if result.qualified is not None:
            by_voice.setdefault(result.qualified.voice, []).append(result)
    for group in by_voice.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (-r.qualified.score, r.speaker))  # type: ignore[union-attr]
        into, others = group[0].speaker, [r.speaker for r in group[1:]]
        logger.info("speakers {} all match voice {}: one speaker", ", ".join(speaker_label(s) for s in [into, *others]),
                    group[0].qualified.name)  # type: ignore[union-attr]
        transcript = transcript.merged(into, others)
    return transcript


def name_speakers(transcript: Transcript, samples: Sequence["SampleRow"], *, threshold: float, margin: float,
                  expected: Sequence[str] | None = None, merge: bool = False) -> Transcript:
    """The transcript with its speakers named after the library (`match`):
    names matching gave before and no longer holds go, names a person gave stay. With
    `merge`, speakers that match the same voice become one first (merge_known_voices).
    A transcript without centroids (no speaker model; stereo channels, which are named
    by their channel) comes back as it is."""
    if not transcript.speaker_centroids:
        return transcript
    scored = scores_for(transcript, samples, threshold=threshold, margin=margin, expected=expected)
    if merge:
        merged = merge_known_voices(transcript, scored)
        if merged is not transcript:
            transcript = merged
            scored = scores_for(transcript, samples, threshold=threshold, margin=margin, expected=expected,
                                warn=False)
    # kept: the names a person gave, and those of speakers without a centroid (nothing to match)
    names = {**{s: n for s, n in transcript.speaker_names.items() if s not in transcript.speaker_centroids},
             **_given_names(transcript)}
    matches = {s: m for s, m in transcript.speaker_matches.items() if m.renamed}
    for speaker, result in scored.items():
        if result.chosen is not None:
            names[speaker] = result.chosen.name
            matches[speaker] = SpeakerMatch(voice=result.chosen.voice, score=result.chosen.score)
    return transcript.replace(speaker_names=names, speaker_matches=matches)


def name_for_job(config: "Config", transcript: Transcript, samples: Sequence["SampleRow"],
                 options: Mapping[str, Any]) -> Transcript:
    """`name_speakers` as a job is named, in the worker and by `spkd voices rematch`:
    the config's threshold and margin, the job's `expected_speakers` the only candidates."""
    return name_speakers(transcript, samples, threshold=config.speakers.match_threshold,
                         margin=config.speakers.match_margin, expected=options.get("expected_speakers"),
                         merge=config.speakers.refine)


# --------------------------------------------------------------------------- samples


def enrol_print(voice: VoicePrint, *, source: str) -> None:
    """EnrolmentError when a recording's voice rests on too little speech."""
    if voice.speech_seconds < MIN_SPEECH_SECONDS:
        raise EnrolmentError(f"{source}: only {voice.speech_seconds:.1f} s of speech; a voice needs at least "
                             f"{MIN_SPEECH_SECONDS:g} s of one person speaking")


def sample_of(voice: VoicePrint, *, origin: str, source: str | None, sha256: str | None,
              job_id: int | None = None) -> dict[str, Any]:
    """A store sample (daemon.store.Store.add_voice_sample) of an embedded recording."""
    return {"embedding": voice.embedding, "model_name": voice.model_name, "model_revision": voice.model_revision,
            "sha256": sha256, "speech_seconds": voice.speech_seconds, "audio_seconds": voice.audio_seconds,
            "origin": origin, "source": source, "job_id": job_id}


def speaker_of(transcript: Transcript, key: str) -> int | None:
    """The speaker a user means by `key`: how the outputs show it now (a name or a
    `SpeakerN` among the unnamed), else its label (json `label`)."""
    key = normal_voice_name(key)
    speakers = sorted({s.speaker for s in transcript.segments} | set(transcript.speaker_centroids))
    for speaker in speakers:
        if transcript.speaker_display(speaker) == key:
            return speaker
    for speaker in speakers:
        if speaker_label(speaker).lower() == key.lower():
            return speaker
    return None

