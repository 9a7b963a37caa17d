"""The voice library: people enrolled by name, recognised in every recording.

A *voice* is a name with one or more *samples*: the mean CAM++ embedding over the
speech of one recording of that person alone (daemon.engine.transcriber.Engine.embed_voice), with
the identity of the model that made it. A transcription keeps each speaker cluster's
centroid, made the same way (FunASR's own `spk_embedding_center`), in the job's stored
transcript; naming compares the two.

Matching is careful rather than eager (the headless tools that name every voice after
its nearest neighbour are why): a speaker is named only when the cosine similarity of
its centroid with a voice (the mean of that voice's unit-length samples) is at least
`speakers.match_threshold` *and* beats the next best voice by `speakers.match_margin`;
a voice names at most one speaker of a recording (the one it scores highest with); the
others stay `SpeakerN` (daemon.transcript.Transcript.speaker_display). Samples of
another model (name, revision or dimension) are never compared: they are skipped with
a warning. A name a person gave (`spkd speakers`, the dashboard) is never overridden
by matching again.

Where voices come from: `spkd voices add` (this process embeds the recordings), the
folder `paths.voices/<Name>/` (each file an enrolment job through the queue, so a
worker embeds it and a crash only delays it; the files stay as the library's source
of truth: a file or folder removed takes its samples, and a voice left without one,
with it), and a rename with `--enrol` (the renamed speaker's centroid).

Store writes go through daemon.store; this module decides, the store records.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon import files
from daemon.jobs import outputs
from daemon.jobs import spool
from daemon.errors import EnrolmentError, VoiceError
from daemon.options import normal_voice_name, voice_name_problem
from daemon.transcript import SpeakerMatch, Transcript, VoicePrint, model_identity, speaker_label

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.transcriber import Transcriber
    from daemon.store import SampleRow, Store, VoiceSummary

__all__ = ["Candidate", "ENROL_COPY_PREFIX", "ENROL_PRIORITY", "Enrolled", "FolderSync", "LibraryVoice",
           "MIN_SPEECH_SECONDS", "ORPHAN_COPY_SECONDS", "REMOVED_FOLDER", "Rename", "SpeakerScores", "check_name",
           "drop_for_enrolment", "enrol", "enrol_print", "folder_source", "library", "list_voices", "match",
           "name_for_job", "name_speakers", "rematch", "remove", "rename_speakers", "sample_of", "scores_for", "settle_enrol_copies",
           "speaker_of", "sync_folder", "voice_source_name", "waiting_files"]

# Less speech than this gives a centroid too noisy to name anyone by.
MIN_SPEECH_SECONDS = 10.0
# Enrolment jobs go before transcriptions: a voice dropped together with recordings of
# that person names them.
ENROL_PRIORITY = 1000
# An enrolment job's copy of its file in the spool starts with this.
ENROL_COPY_PREFIX = ".enrol-"
# A copy without a job this old was left by a crash between copying and queueing.
ORPHAN_COPY_SECONDS = 3600.0
# Where `spkd voices remove` puts a removed voice's folder (never deleted: it is the user's audio).
REMOVED_FOLDER = "removed-voices"


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
        result[speaker] = SpeakerScores(speaker=speaker, candidates=tuple(found), chosen=chosen, reason=reason)
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


def name_speakers(transcript: Transcript, samples: Sequence["SampleRow"], *, threshold: float, margin: float,
                  expected: Sequence[str] | None = None) -> Transcript:
    """The transcript with its speakers named after the library (daemon.voices.match):
    names matching gave before and no longer holds go, names a person gave stay. A
    transcript without centroids (no speaker model; stereo channels, which are named by
    their channel) comes back as it is."""
    if not transcript.speaker_centroids:
        return transcript
    scored = scores_for(transcript, samples, threshold=threshold, margin=margin, expected=expected)
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
                         margin=config.speakers.match_margin, expected=options.get("expected_speakers"))


# --------------------------------------------------------------------------- enrolling


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


@dataclass(frozen=True)
class Enrolled:
    name: str
    voice: int
    sample: int
    source: str
    speech_seconds: float
    model: str


def enrol(store: "Store", name: str, recordings: Sequence[Path], *, engine: "Transcriber",
          origin: str = "cli") -> list[Enrolled]:
    """`spkd voices add NAME FILE…`: one sample per recording, embedded in this process
    by `engine`. Every recording is checked before any is added, so a refused one adds
    nothing."""
    name = check_name(name)
    for path in recordings:
        if not Path(path).is_file():
            raise EnrolmentError(f"{path}: no such file")
    prints = []
    for path in recordings:
        voice = engine.embed_voice(Path(path), source_name=Path(path).name)
        enrol_print(voice, source=Path(path).name)
        prints.append((Path(path), voice))
    done = []
    for path, voice in prints:
        voice_id, sample_id = store.add_voice_sample(
            name, sample_of(voice, origin=origin, source=str(path), sha256=files.sha256_file(path)))
        logger.info("voice {}: enrolled {} ({:.1f} s of speech)", name, path.name, voice.speech_seconds)
        done.append(Enrolled(name=name, voice=voice_id, sample=sample_id, source=str(path),
                             speech_seconds=voice.speech_seconds,
                             model=model_identity(voice.model_name, voice.model_revision, len(voice.embedding))))
    return done


def list_voices(config: "Config", store: "Store") -> list["VoiceSummary"]:
    return store.voice_summaries()


def remove(config: "Config", store: "Store", name: str) -> int:
    """`spkd voices remove NAME`: the voice and all its samples go; its folder under
    paths.voices (else it would be enrolled again) moves to `state/removed-voices/`.
    Returns how many samples went; VoiceError for an unknown name."""
    cleaned = normal_voice_name(str(name))
    count = store.remove_voice(cleaned)
    # only a name that can be a voice's is a folder of the library (never `..`, never a path)
    folder = config.paths.voices / cleaned if voice_name_problem(cleaned) is None else None
    moved = False
    if folder is not None and folder.is_dir() and not folder.is_symlink():
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = files.free_name(config.paths.state / REMOVED_FOLDER / f"{cleaned} {stamp}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        logger.info("voice {}: its folder moved to {}", cleaned, target)
        moved = True
    if count == 0 and not moved:
        raise VoiceError(f"no voice named {cleaned!r} (spkd voices list shows the library)")
    logger.info("voice {} removed ({} sample(s))", cleaned, count)
    return count


def drop_for_enrolment(config: "Config", name: str, recording: Path, *, file_name: str) -> Path:
    """Move a recording the caller hands over (an upload's temporary file) into
    paths.voices/<name>/ (the dashboard's enrolment: the daemon enrols it like any file
    dropped there; this process never loads a model). files.move renames, or copies
    under a dot-name and renames across file systems, so the folder scan never sees half
    a file."""
    from daemon.intake.watcher import ignored_because

    name = check_name(name)
    safe = files.safe_file_name(file_name) or "recording"
    # The folder scan takes a file by the inbox's rules (_folder_files): one it would
    # leave alone is refused here rather than sit in the folder, never enrolled.
    reason = ignored_because(config, PurePosixPath(safe))
    if reason is not None:
        raise EnrolmentError(f"{safe}: not taken from paths.voices ({reason}); allowed extensions: "
                             f"{', '.join(config.watch.extensions)}")
    if Path(recording).stat().st_size == 0:
        raise EnrolmentError(f"{safe}: the file is empty")
    folder = config.paths.voices / name
    folder.mkdir(parents=True, exist_ok=True)
    return files.move(Path(recording), files.free_name(folder / safe))


# --------------------------------------------------------------------------- the folder


@dataclass
class FolderSync:
    """What one look at paths.voices did."""

    queued: list[int] = field(default_factory=list)  # enrolment job ids
    removed_samples: int = 0
    removed_voices: list[str] = field(default_factory=list)


def _folder_files(config: "Config") -> dict[str, Path]:
    """Audio files directly inside paths.voices/<Name>/ (a real folder, a real file; no
    dot-names, no sidecars), by their path under paths.voices."""
    from daemon.intake.watcher import ignored_because

    root = config.paths.voices
    found: dict[str, Path] = {}
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                         and not p.name.startswith("."))
    except OSError:
        return found
    for folder in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for path in entries:
            rel = PurePosixPath(folder.name, path.name)
            if path.is_symlink() or not path.is_file() or ignored_because(config, rel) is not None:
                continue
            found[rel.as_posix()] = path
    return found


def waiting_files(config: "Config", store: "Store") -> list[tuple[str, str]]:
    """Files in paths.voices/<Name>/ that the folder scan has not taken yet (neither a
    sample nor an enrolment job has their path), as (voice folder, file name): what the
    daemon's next look at the folder (every watch.rescan_seconds) queues. By path only,
    so that a page can ask without hashing the library; a file changed in place shows as
    enrolled until the scan sees it."""
    taken = {s.source for s in store.voice_samples_of() if s.origin == "folder"}
    taken |= {folder_source(j.source_name) for j in store.enrol_jobs()}
    return [(PurePosixPath(rel).parent.name, PurePosixPath(rel).name)
            for rel in sorted(_folder_files(config)) if rel not in taken]


def sync_folder(config: "Config", store: "Store", *, now: float | None = None,
                digests: dict[str, tuple[tuple[int, int], str]] | None = None) -> FolderSync:
    """Make the library follow paths.voices: a new or changed file that has been still
    for `watch.settle_seconds` becomes an enrolment job (its copy in the spool, so that
    the job's source lives where every job's does and a failure lands in failed/ with
    its `.error.json`); samples whose file is gone (or changed) go, and a voice left
    without samples with them. A file whose enrolment failed is tried again only once
    it changes. Idempotent. `digests` (path -> ((size, mtime_ns), sha256)), kept by the
    caller from one look to the next, spares hashing the whole library every rescan: a
    file is hashed again only when its size or mtime changed."""
    settle_enrol_copies(config, store, now=now)

    clock = time.time() if now is None else now
    report = FolderSync()
    present = _folder_files(config)
    samples = [s for s in store.voice_samples_of() if s.origin == "folder"]
    jobs = store.enrol_jobs()
    known = {} if digests is None else digests
    for gone in set(known) - set(present):
        del known[gone]

    def sha(rel: str) -> str | None:
        try:
            identity = files.file_identity(present[rel])
            if identity is None:
                return None
            if rel not in known or known[rel][0] != identity:
                known[rel] = (identity, files.sha256_file(present[rel]))
        except OSError:
            return None
        return known[rel][1]

    # gone or changed: their samples go
    stale = [s.id for s in samples if s.source not in present or sha(s.source) != s.sha256]
    if stale:
        report.removed_voices = store.remove_voice_samples(stale)
        report.removed_samples = len(stale)
        logger.info("voices: {} sample(s) whose file is gone or changed removed{}", len(stale),
                    f"; voice(s) {', '.join(report.removed_voices)} with them" if report.removed_voices else "")
    enrolled = {(s.source, s.sha256) for s in samples if s.id not in stale}
    for rel, path in present.items():
        try:
            info = path.stat()
        except OSError:
            continue
        if clock - info.st_mtime < config.watch.settle_seconds:
            continue  # still being written, perhaps: the next look takes it
        digest = sha(rel)
        if digest is None or (rel, digest) in enrolled:
            continue
        source_name = voice_source_name(rel)
        if any(j.source_name == source_name and j.sha256 == digest for j in jobs):
            continue  # queued, running, done (its sample is there) or failed (until the file changes)
        try:
            name = check_name(PurePosixPath(rel).parent.name)
        except VoiceError as exc:
            logger.warning("voices: {}: {}; not enrolled", rel, exc.message)
            continue
        # A dot-name: the spool recovery (which makes transcriptions of spooled files
        # without a job) never sees it; settle_enrol_copies tidies what a crash leaves.
        spooled = spool.new_slot(config.paths.spool, config.host) / (ENROL_COPY_PREFIX + PurePosixPath(rel).name)
        spooled.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, spooled)
        with open(spooled, "rb") as copy:
            os.fsync(copy.fileno())  # durable before the job that points at it is recorded
        files.fsync_dir(spooled.parent)
        job_id = store.enqueue(source_name=source_name, spool_path=str(spooled),
                               output_stem=str(PurePosixPath(source_name).with_suffix("")), sha256=digest,
                               size_bytes=info.st_size, options={"voice": name}, priority=ENROL_PRIORITY,
                               max_attempts=config.jobs.max_attempts, task="enrol")
        report.queued.append(job_id)
        logger.info("job {} queued: enrol {} as voice {}", job_id, rel, name)
    return report


def settle_enrol_copies(config: "Config", store: "Store", *, now: float | None = None) -> int:
    """Enrolment copies in the spool whose job ended while its worker died before moving
    the copy on are archived or moved to failed/ now; a copy left without a job by a
    crash is removed (the folder's file is still there, and queued again). Returns how
    many were tidied."""
    clock = time.time() if now is None else now
    copies = [p for p in config.paths.spool.glob(f"*/{ENROL_COPY_PREFIX}*") if p.is_file()]
    if not copies:
        return 0
    rows = store.jobs_by_spool_path([str(p) for p in copies])
    tidied = 0
    for path in copies:
        job = rows.get(str(path))
        try:
            if job is None:
                if clock - path.stat().st_mtime >= ORPHAN_COPY_SECONDS:
                    path.unlink(missing_ok=True)
                    spool.remove_empty_parents(path.parent, config.paths.spool)
                    tidied += 1
            elif job.host in (None, store.host) and job.state == "done":
                spool.archive_job(config, store, job.id, spool_path=path, source_name=job.source_name)
                tidied += 1
            elif job.host in (None, store.host) and job.state == "failed":
                spool.retire_failed(config, job)
                tidied += 1
        except OSError as exc:
            logger.warning("voices: cannot tidy the spool copy {}: {}", path, exc)
    return tidied


def voice_source_name(rel: str) -> str:
    """An enrolment job's source name: its file's path under paths.voices, under `voices/`
    (so its copy in failed/ or archive/ never meets an inbox file of the same name)."""
    return f"voices/{rel}"


def folder_source(source_name: str) -> str:
    """The inverse of voice_source_name: the file's path under paths.voices."""
    return source_name[len("voices/"):] if source_name.startswith("voices/") else source_name


# --------------------------------------------------------------------------- renaming


@dataclass(frozen=True)
class Rename:
    job_id: int
    renamed: dict[str, str]  # label -> new name
    jobs: tuple[int, ...]  # the job and its duplicates, re-rendered
    enrolled: tuple[str, ...] = ()


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


def _rerender(config: "Config", store: "Store", job_id: int, transcript: Transcript, *, event: str,
              **detail: Any) -> None:
    """A done job's stored transcript, its outputs (the formats it has, same names,
    atomic replace) and its segments rows become `transcript`'s, with a `event` row."""
    row = store.job(job_id)
    if row is None:
        return
    outputs.save_transcript(config, job_id, transcript)
    formats = outputs.formats_written(row)
    if formats:
        outputs.publish(config, output_stem=row["output_stem"], transcript=transcript, formats=formats)
    store.replace_segments(job_id, transcript, event=event, **detail)


def rename_speakers(config: "Config", store: "Store", job_id: int, names: Mapping[str, str], *,
                    enrol_voices: bool = False) -> Rename:
    """`spkd speakers JOB LABEL=NAME…`: name speakers of a done job (and of the jobs that
    reused its transcript), re-render every output from the stored transcript, record a
    `renamed` event; `enrol_voices`: each renamed speaker's centroid becomes a sample of
    that voice, so the next recording of them is named. VoiceError when refused."""
    row = store.job(job_id)
    if row is None or row.get("state") != "done" or row.get("task", "transcribe") != "transcribe":
        raise VoiceError(f"job {job_id} is not a done transcription")
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
                                    sha256=row.get("sha256"), job_id=job_id))
            enrolled.append(new_name)
    labels = {speaker_label(s): n for s, n in chosen.items()}
    touched = []
    for target in [job_id, *store.duplicates_of(job_id)]:
        current = transcript if target == job_id else outputs.load_transcript(config, target)
        if current is None:
            continue
        new_names = {**current.speaker_names, **chosen}
        new_matches = {**current.speaker_matches,
                       **{s: SpeakerMatch(voice=voice_ids.get(s), renamed=True) for s in chosen}}
        _rerender(config, store, target, current.replace(speaker_names=new_names, speaker_matches=new_matches),
                  event="renamed", names=labels, enrolled=enrolled or None,
                  via=job_id if target != job_id else None)
        touched.append(target)
    logger.info("job {}: speakers renamed ({}){}", job_id, ", ".join(f"{k}={v}" for k, v in labels.items()),
                f"; enrolled {', '.join(enrolled)}" if enrolled else "")
    return Rename(job_id=job_id, renamed=labels, jobs=tuple(touched), enrolled=tuple(enrolled))


def rematch(config: "Config", store: "Store", *, since: dt.datetime | None = None) -> list[int]:
    """`spkd voices rematch`: name the speakers of finished jobs after the library as it
    is now (from their stored centroids); jobs whose names change are re-rendered with a
    `rematched` event. Names people gave stay. Returns the jobs that changed."""
    samples = store.voice_samples_of()
    changed = []
    for job_id in store.done_transcriptions(since=since):
        transcript = outputs.load_transcript(config, job_id)
        if transcript is None or not transcript.speaker_centroids:
            continue
        row = store.job(job_id) or {}
        renamed = name_for_job(config, transcript, samples, row.get("options") or {})
        if renamed.speaker_names == transcript.speaker_names and renamed.speaker_matches == transcript.speaker_matches:
            continue
        before = {speaker_label(s): transcript.speaker_display(s) for s in sorted(transcript.speaker_centroids)}
        after = {speaker_label(s): renamed.speaker_display(s) for s in sorted(renamed.speaker_centroids)}
        _rerender(config, store, job_id, renamed, event="rematched", before=before, after=after)
        changed.append(job_id)
    if changed:
        logger.info("voices: {} job(s) re-rendered with the library's names: {}", len(changed),
                    ", ".join(map(str, changed)))
    return changed

