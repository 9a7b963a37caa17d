"""Corrections of a done transcript, with every version kept: `spkd edit`, `spkd history`,
`spkd revert` and the dashboard's edit and history panel.

Version 1 is the transcript as the engine made it. Each edit or revert adds a version
(history only grows: a revert is a new version whose corrections equal the old one's),
kept in the store as the overlay of every correction in effect then
(daemon.store.corrections; daemon/store/schema.py says its shape): by segment index, the
words and/or the speaker a person gave, and what the engine had there (`was`), so that
any version can be made again from the current transcript.

The stored transcript (`state/transcripts/<id>.json`) is always the current version's:
every reader (the dashboard, downloads, search, a duplicate taking the result) sees the
corrected words with no more work, and a later rename, rematch or voice naming, which
start from the stored transcript, keep them. Every change goes through
daemon.jobs.results.rerender_jobs (the one place that records a result): every output
re-rendered atomically, the segment and search rows replaced with a `corrected` or
`reverted` event, and the version added in the transaction that records the re-render as
intended, so that a process killed at any point leaves the old version or (once
finished: at start, by the next change, by `spkd doctor`) the new one, whole. The job's
duplicates (jobs that reused its transcript) get the same change, each as a version of
its own.

Segments are numbered as the srt numbers its cues, from 1 (daemon.writers.build_cues:
sentences by start time, those without text left out). A sentence too long for one cue
is cut into several; it is numbered by its first cue, and the numbers of its later cues
are refused with the one to use (`numbering`, `segment_index`).

A re-attribution (`speaker`) names a speaker of the transcript (as the outputs show it)
or a new one (the one rule for names, daemon.names); it may not take a speaker's last
sentence (its voice, the centroid, would be lost from the transcript: rename the speaker
instead, `spkd speakers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files, writers
from daemon.errors import (
    BadTextError,
    CorrectionError,
    EmptyTextError,
    NoSuchJobError,
    NoSuchSegmentError,
    NoSuchVersionError,
    VersionConflictError,
)
from daemon.jobs import outputs, results
from daemon.names import name_problem, normal_name, text_problem
from daemon.store.corrections import NewVersion
from daemon.store.rows import TranscriptVersion
from daemon.store.schema import CORRECTION_ORIGINS
from daemon.transcript import SpeakerMatch, Transcript

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Job, Store

__all__ = ["MAX_TEXT_CHARS", "ORIGINS", "Numbered", "apply_overlay", "edit_segment", "history", "numbering",
           "revert", "segment_index", "segment_number"]

ORIGINS = CORRECTION_ORIGINS  # where a correction was made: cli, web
MAX_TEXT_CHARS = 5000  # one sentence's words; more is a paste gone wrong, not a correction
# Tries of one change when another correction of the job lands first (each starts afresh from it).
ATTEMPTS = 3
_SHOWN_CHARS = 40  # how much of a text `spkd history` shows of each side of a change
# Held (under paths.state) while a correction is made: the CLI and the dashboard of one host
# then never write a job's `<id>.next.json` at once (daemon.jobs.results.rerender_jobs).
LOCK_FILE = "corrections.lock"

Overlay = dict[str, dict[str, Any]]
# What a change makes of the current transcript and overlay: the new overlay and the change in
# words, or None when nothing would change.
Target = Callable[[Transcript, Overlay], "tuple[Overlay, str] | None"]


@dataclass(frozen=True)
class Numbered:
    """A sentence as `spkd edit --segment` numbers it: the srt number of its first cue."""

    number: int
    index: int  # in Transcript.segments
    cues: int  # how many cues the srt cuts it into


def numbering(transcript: Transcript) -> list[Numbered]:
    """Every sentence with text, in srt order, with its number (that of its first cue)."""
    found: dict[int, Numbered] = {}
    for number, cue in enumerate(writers.build_cues(transcript.segments, transcript.speaker_display), start=1):
        seen = found.get(cue.segment)
        found[cue.segment] = (Numbered(number, cue.segment, 1) if seen is None
                              else dataclasses.replace(seen, cues=seen.cues + 1))
    return sorted(found.values(), key=lambda n: n.number)


def segment_index(transcript: Transcript, number: int) -> int:
    """The index in `transcript.segments` of the sentence numbered `number`, or
    NoSuchSegmentError (saying which number to use for a later cue of a long sentence)."""
    numbered = numbering(transcript)
    for item in numbered:
        if item.number == number:
            return item.index
        if item.number < number < item.number + item.cues:
            raise NoSuchSegmentError(
                f"cue {number} is part {number - item.number + 1} of {item.cues} of one sentence, numbered "
                f"{item.number}: give --segment {item.number} with the whole sentence's text")
    last = numbered[-1].number + numbered[-1].cues - 1 if numbered else 0
    raise NoSuchSegmentError(f"no segment {number}: the transcript's are numbered 1 to {last}, as its srt numbers "
                             "its cues" if last else f"no segment {number}: the transcript has no text")


def segment_number(transcript: Transcript, index: int) -> int | None:
    """The number of the sentence at `index` of `transcript.segments` (None: no text, no number)."""
    return next((n.number for n in numbering(transcript) if n.index == index), None)


# --------------------------------------------------------------------------- the overlay


def _speaker_numbers(transcript: Transcript) -> set[int]:
    return ({s.speaker for s in transcript.segments} | set(transcript.speaker_names)
            | set(transcript.speaker_centroids))


def apply_overlay(transcript: Transcript, current: Mapping[str, Any], target: Mapping[str, Any]) -> Transcript:
    """`transcript`, which has the corrections `current`, with those of `target` instead:
    each segment either has (by index) goes to `target`'s words and speaker, else back to
    the engine's (`was`). Speakers a correction made are given again where missing."""
    segments = list(transcript.segments)
    names = dict(transcript.speaker_names)
    matches = dict(transcript.speaker_matches)
    known = _speaker_numbers(transcript)
    for key in sorted(set(current) | set(target), key=int):
        index = int(key)
        if not 0 <= index < len(segments):
            continue
        entry = target.get(key) or {}
        was = entry.get("was") or (current.get(key) or {}).get("was") or {}
        text = str(entry.get("text", was.get("text", segments[index].text)))
        speaker = int(entry.get("speaker", was.get("speaker", segments[index].speaker)))
        if speaker not in known and entry.get("speaker_name"):  # a person's new speaker, gone since
            names[speaker] = str(entry["speaker_name"])
            matches[speaker] = SpeakerMatch(renamed=True)
            known.add(speaker)
        segments[index] = dataclasses.replace(segments[index], text=text, speaker=speaker)
    return transcript.replace(segments=tuple(segments), speaker_names=names, speaker_matches=matches)


def _short(text: str) -> str:
    return f'"{text[:_SHOWN_CHARS]}…"' if len(text) > _SHOWN_CHARS else f'"{text}"'


def _clean_text(text: str) -> str:
    cleaned = normal_name(text)  # one line: NFC, blanks (newlines too) as one space
    bad = text_problem(cleaned, what="a corrected text")
    if bad is not None:
        raise BadTextError(bad)
    if not cleaned:
        raise EmptyTextError("a corrected text must not be empty (the segment keeps words)")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise BadTextError(f"a corrected text has at most {MAX_TEXT_CHARS} characters (this one has {len(cleaned)})")
    return cleaned


def _speaker_for(transcript: Transcript, name: str) -> tuple[int, str | None]:
    """The speaker `name` names: one of the transcript's, as the outputs show it (its
    name, or its SpeakerN), else a new one (its number and name)."""
    cleaned = normal_name(name)
    for speaker in transcript.speakers:
        if cleaned in (speaker.display, speaker.name):
            return speaker.speaker, None
    problem = name_problem(name, what="a speaker's name", folder=False)
    if problem is not None:
        raise BadTextError(problem)
    return max(_speaker_numbers(transcript) | {0}) + 1, cleaned


# --------------------------------------------------------------------------- the changes


def _done_transcription(store: "Store", job_id: int) -> "Job":
    row = store.job(job_id)
    if row is None:
        raise NoSuchJobError(f"no job {job_id}")
    if row.state != "done" or row.task != "transcribe":
        what = "an enrolment" if row.task != "transcribe" else row.state
        raise CorrectionError(f"job {job_id} is {what}: only a done transcription's transcript can be corrected")
    return row


def _current(config: "Config", store: "Store", job_id: int) -> tuple[Transcript, int, Overlay]:
    """Job `job_id`'s stored transcript, its version and that version's overlay."""
    transcript = outputs.load_transcript(config, job_id)
    if transcript is None:
        raise CorrectionError(f"job {job_id}: its stored transcript is gone (state/transcripts/{job_id}.json)")
    versions = store.transcript_versions(job_id)
    if not versions:
        return transcript, 1, {}
    return transcript, versions[-1].version, {k: dict(v) for k, v in versions[-1].overlay.items()}


@contextlib.contextmanager
def _one_at_a_time(config: "Config") -> Iterator[None]:
    with files.exclusive_lock(config.paths.state / LOCK_FILE):
        yield


def _change_all(config: "Config", store: "Store", job_id: int, *, origin: str, event: str, target_of: Target,
                **detail: Any) -> int:
    """The one way a correction lands: `target_of(transcript, overlay)` gives job
    `job_id`'s new overlay and the change in words (None: nothing changes); the job and its duplicates are
    re-rendered with it (a duplicate gets the segments that changed, over its own
    corrections). Returns the job's version after it. One at a time on this host; made
    again from the new version when another correction (another host's) landed first."""
    if origin not in ORIGINS:
        raise ValueError(f"a correction comes from one of {ORIGINS}, not {origin!r}")
    _done_transcription(store, job_id)
    with _one_at_a_time(config):
        return _change_all_held(config, store, job_id, origin=origin, event=event, target_of=target_of, **detail)


def _change_all_held(config: "Config", store: "Store", job_id: int, *, origin: str, event: str, target_of: Target,
                     **detail: Any) -> int:
    for attempt in range(1, ATTEMPTS + 1):
        targets = [job_id, *store.duplicates_of(job_id)]
        results.finish_rerenders(config, store, job_ids=targets)  # an interrupted change first: this starts from it
        transcript, version, overlay = _current(config, store, job_id)
        made = target_of(transcript, overlay)
        if made is None or made[0] == overlay:
            return version
        target, change = made
        touched = {k for k in set(overlay) | set(target) if overlay.get(k) != target.get(k)}
        changes = [results.Change(job_id, apply_overlay(transcript, overlay, target), event,
                                  {**detail, "version": version + 1, "origin": origin},
                                  NewVersion(base=version, origin=origin, change=change, overlay=target))]
        for twin in targets[1:]:
            try:
                theirs, their_version, their_overlay = _current(config, store, twin)
            except CorrectionError:
                continue  # a duplicate without its stored transcript (a crash as it was made) is passed by
            new = {k: v for k, v in their_overlay.items() if k not in touched}
            new.update({k: target[k] for k in touched if k in target})
            changes.append(results.Change(twin, apply_overlay(theirs, their_overlay, new), event,
                                          {**detail, "version": their_version + 1, "origin": origin, "via": job_id},
                                          NewVersion(base=their_version, origin=origin,
                                                     change=f"{change} (of job {job_id})", overlay=new)))
        try:
            done = results.rerender_jobs(config, store, changes)
        except VersionConflictError:
            if attempt == ATTEMPTS:
                raise
            continue
        if job_id not in done:
            raise CorrectionError(f"job {job_id} is no longer done: nothing was changed")
        logger.info("job {}: transcript version {} ({}, from the {}){}", job_id, version + 1, change, origin,
                    f"; with its duplicate(s) {', '.join(map(str, done[1:]))}" if len(done) > 1 else "")
        return version + 1
    raise AssertionError("unreachable")  # the loop returns or raises


def edit_segment(config: "Config", store: "Store", job_id: int, number: int, *, text: str | None = None,
                 speaker: str | None = None, origin: str) -> int:
    """`spkd edit JOB --segment N --text T [--speaker NAME]`: segment `number` (numbered
    as the srt numbers its cues) of done job `job_id` says `text` and/or is `speaker`'s.
    Returns the transcript's version after it (the same one when nothing changes).
    NoSuchJobError, CorrectionError (not a done transcription), NoSuchSegmentError,
    BadTextError / EmptyTextError (the text or the name) when refused; nothing changes then."""
    if text is None and speaker is None:
        raise CorrectionError("say what the segment becomes: its text, its speaker, or both")
    cleaned = _clean_text(text) if text is not None else None

    def target_of(transcript: Transcript, overlay: Overlay) -> tuple[Overlay, str] | None:
        index = segment_index(transcript, number)
        seg = transcript.segments[index]
        key = str(index)
        entry = dict(overlay.get(key) or {"was": {"text": seg.text, "speaker": seg.speaker}})
        was = entry["was"]
        said: list[str] = []
        if cleaned is not None and cleaned != seg.text:
            said.append(f"text {_short(seg.text)} -> {_short(cleaned)}")
            entry.pop("text", None)
            if cleaned != was["text"]:
                entry["text"] = cleaned
        if speaker is not None:
            number_to, new_name = _speaker_for(transcript, speaker)
            if number_to != seg.speaker:
                if sum(1 for s in transcript.segments if s.speaker == seg.speaker) == 1 \
                        and seg.speaker in transcript.speaker_centroids:
                    raise CorrectionError(
                        f"segment {number} is {transcript.speaker_display(seg.speaker)}'s only sentence: its voice "
                        f"would be lost; rename the speaker instead (`spkd speakers {job_id} "
                        f"{transcript.speaker_display(seg.speaker)}=NAME`)")
                shown = new_name or transcript.speaker_display(number_to)
                said.append(f"speaker {transcript.speaker_display(seg.speaker)} -> {shown}")
                entry.pop("speaker", None)
                entry.pop("speaker_name", None)
                if number_to != was["speaker"]:
                    entry["speaker"] = number_to
                    if new_name is not None:
                        entry["speaker_name"] = new_name
        if not said:
            return None
        new = dict(overlay)
        if set(entry) - {"was"}:
            new[key] = entry
        else:
            new.pop(key, None)
        return new, f"segment {number}: " + "; ".join(said)

    return _change_all(config, store, job_id, origin=origin, event="corrected", target_of=target_of,
                       segment=number)


def revert(config: "Config", store: "Store", job_id: int, version: int, *, origin: str) -> int:
    """`spkd revert JOB VERSION`: done job `job_id`'s transcript as it was in `version`
    (1: as the engine made it), as a new version (history only grows). Returns the
    version after it (the same one when the transcript already is so).
    NoSuchJobError, CorrectionError, NoSuchVersionError when refused."""

    def target_of(transcript: Transcript, overlay: Overlay) -> tuple[Overlay, str] | None:
        if version == 1:
            old: Overlay = {}
        else:
            found = next((v for v in store.transcript_versions(job_id) if v.version == version), None)
            if found is None:
                latest = store.transcript_version(job_id)
                raise NoSuchVersionError(f"job {job_id} has no version {version}: its versions are 1 to {latest} "
                                         f"(`spkd history {job_id}`)")
            old = {k: dict(v) for k, v in found.overlay.items()}
        return None if old == overlay else (old, f"reverted to version {version}")

    return _change_all(config, store, job_id, origin=origin, event="reverted", target_of=target_of, to=version)


def history(store: "Store", job_id: int) -> list[TranscriptVersion]:
    """`spkd history JOB`: every version of done job `job_id`'s transcript, oldest first,
    version 1 (as the engine made it) included. NoSuchJobError, CorrectionError."""
    row = _done_transcription(store, job_id)
    first = TranscriptVersion(job_id=job_id, version=1, created_at=row.finished_at, origin="engine",
                              change="as transcribed", overlay={})
    return [first, *store.transcript_versions(job_id)]
