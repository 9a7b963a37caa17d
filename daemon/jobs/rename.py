"""Naming the speakers of finished jobs: `spkd speakers` / the dashboard's rename, and
`spkd voices rematch`. Both decide here (daemon.voices.matching does the matching)
and re-render through daemon.jobs.results.rerender_jobs, from each job's stored transcript.

A rename reaches the job's duplicates (jobs that reused its transcript) too; with
`--enrol`, a renamed speaker's centroid becomes a sample of that voice
(daemon.voices.library). A name a person gave is never changed by a rematch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from daemon.errors import VoiceError
from daemon.jobs import outputs, results
from daemon.transcript import SpeakerMatch, VoicePrint, speaker_label
from daemon.voices.matching import check_name, name_for_job, sample_of, speaker_of

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["Rename", "rematch", "rename_speakers"]

# A rematch records this many jobs' re-renders as intended at a time (each is finished
# alone if interrupted; the jobs of one batch are written after one transaction).
REMATCH_BATCH = 100


@dataclass(frozen=True)
class Rename:
    job_id: int
    renamed: dict[str, str]  # label -> new name
    jobs: tuple[int, ...]  # the job and its duplicates, re-rendered
    enrolled: tuple[str, ...] = ()


def rename_speakers(config: "Config", store: "Store", job_id: int, names: Mapping[str, str], *,
                    enrol_voices: bool = False) -> Rename:
    """`spkd speakers JOB LABEL=NAME…`: name speakers of a done job (and of the jobs that
    reused its transcript), re-render every output from the stored transcript, record a
    `renamed` event; `enrol_voices`: each renamed speaker's centroid becomes a sample of
    that voice, so the next recording of them is named. VoiceError when refused."""
    row = store.job(job_id)
    if row is None or row.state != "done" or row.task != "transcribe":
        raise VoiceError(f"job {job_id} is not a done transcription")
    targets = [job_id, *store.duplicates_of(job_id)]
    # An earlier rename of these jobs that was interrupted is finished first: this one
    # starts from the names it gave.
    results.finish_rerenders(config, store, job_ids=targets)
    transcript = outputs.load_transcript(config, job_id)
    if transcript is None:
        raise VoiceError(f"job {job_id}: its stored transcript is gone (state/transcripts/{job_id}.json)")
    if not names:
        raise VoiceError("say which speaker gets which name: LABEL=NAME")
    chosen: dict[int, str] = {}
    for key, new_name in names.items():
        speaker = speaker_of(transcript, key)
        if speaker is None:
            shown = ", ".join(transcript.speaker_display(s.speaker) for s in transcript.speakers) or "none"
            raise VoiceError(f"job {job_id} has no speaker {key!r} (its speakers: {shown})")
        chosen[speaker] = check_name(new_name)
    if len(set(chosen.values())) != len(chosen):
        raise VoiceError("two speakers cannot get the same name")
    kept = {s: n for s, n in transcript.speaker_names.items() if s not in chosen}
    clash = [n for n in chosen.values() if n in kept.values()]
    if clash:
        raise VoiceError(f"job {job_id} already has a speaker named {clash[0]!r}; rename that one too")
    enrolled: list[str] = []
    voice_ids: dict[int, int] = {}
    if enrol_voices:
        model = transcript.speaker_model
        for speaker, new_name in chosen.items():
            centroid = transcript.speaker_centroids.get(speaker)
            if centroid is None or model is None:
                raise VoiceError(f"job {job_id}: {speaker_label(speaker)} has no stored centroid to enrol "
                                 "(transcribed without a speaker model, or by split channels)")
            talk = next((s.talk_seconds for s in transcript.speakers if s.speaker == speaker), 0.0)
            voice = VoicePrint(embedding=centroid, speech_seconds=talk, audio_seconds=transcript.audio_seconds,
                               model_name=model.name, model_revision=model.revision)
            voice_ids[speaker], _sample = store.add_voice_sample(
                new_name, sample_of(voice, origin="rename", source=f"job {job_id} {speaker_label(speaker)}",
                                    sha256=row.sha256, job_id=job_id))
            enrolled.append(new_name)
    labels = {speaker_label(s): n for s, n in chosen.items()}
    changes = []
    for target in targets:
        current = transcript if target == job_id else outputs.load_transcript(config, target)
        if current is None:
            continue
        new_names = {**current.speaker_names, **chosen}
        new_matches = {**current.speaker_matches,
                       **{s: SpeakerMatch(voice=voice_ids.get(s), renamed=True) for s in chosen}}
        changes.append(results.Change(target, current.replace(speaker_names=new_names, speaker_matches=new_matches),
                                      "renamed", {"names": labels, "enrolled": enrolled or None,
                                                  "via": job_id if target != job_id else None}))
    # The job and its duplicates together: all recorded as intended before any changes,
    # so that a rename stopped half-way is finished for all of them (results.rerender_jobs).
    touched = results.rerender_jobs(config, store, changes)
    logger.info("job {}: speakers renamed ({}){}", job_id, ", ".join(f"{k}={v}" for k, v in labels.items()),
                f"; enrolled {', '.join(enrolled)}" if enrolled else "")
    return Rename(job_id=job_id, renamed=labels, jobs=tuple(touched), enrolled=tuple(enrolled))


def rematch(config: "Config", store: "Store", *, since: dt.datetime | None = None) -> list[int]:
    """`spkd voices rematch`: name the speakers of finished jobs after the library as it
    is now (from their stored centroids); jobs whose names change are re-rendered with a
    `rematched` event. Names people gave stay. Re-renders an earlier rename or rematch
    left unfinished are finished first. Returns the jobs that changed."""
    results.finish_rerenders(config, store)  # what an interrupted rename or rematch left, first
    samples = store.voice_samples_of()
    changed: list[int] = []
    changes: list[results.Change] = []
    for job_id in store.done_transcriptions(since=since):
        transcript = outputs.load_transcript(config, job_id)
        if transcript is None or not transcript.speaker_centroids:
            continue
        row = store.job(job_id)
        renamed = name_for_job(config, transcript, samples, row.options if row is not None else {})
        if renamed.speaker_names == transcript.speaker_names and renamed.speaker_matches == transcript.speaker_matches:
            continue
        before = {speaker_label(s): transcript.speaker_display(s) for s in sorted(transcript.speaker_centroids)}
        after = {speaker_label(s): renamed.speaker_display(s) for s in sorted(renamed.speaker_centroids)}
        changes.append(results.Change(job_id, renamed, "rematched", {"before": before, "after": after}))
        if len(changes) >= REMATCH_BATCH:
            changed += results.rerender_jobs(config, store, changes)
            changes = []
    changed += results.rerender_jobs(config, store, changes)
    if changed:
        logger.info("voices: {} job(s) re-rendered with the library's names: {}", len(changed),
                    ", ".join(map(str, changed)))
    return changed

