"""The voice library through the store: enrol recordings by name, list, remove.

Where voices come from: `spkd voices add` (`enrol`: this process embeds the
recordings), the folder `paths.voices/<Name>/` (each file an enrolment job through the
queue, daemon.intake.voice_folder; a worker embeds it and a crash only delays it; the
files stay as the library's source of truth: a file or folder removed takes its
samples, and a voice left without one, with it), and a rename with `--enrol`
(daemon.jobs.rename: the renamed speaker's centroid).

Store writes go through daemon.store; daemon.voices.matching decides, the store records.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from daemon import files
from daemon.errors import EnrolmentError, VoiceError
from daemon.options import normal_voice_name, voice_name_problem
from daemon.transcript import model_identity
from daemon.voices.matching import check_name, enrol_print, sample_of

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.engine.transcriber import Transcriber
    from daemon.store import Store, VoiceSummary

__all__ = ["Enrolled", "REMOVED_FOLDER", "enrol", "folder_source", "list_voices", "remove", "voice_folders",
           "voice_source_name"]

# Where `spkd voices remove` puts a removed voice's folder (never deleted: it is the user's audio).
REMOVED_FOLDER = "removed-voices"


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
    """`spkd voices remove NAME`: the voice and all its samples go; its folders under
    paths.voices (else they would be enrolled again) move to `state/removed-voices/`.
    Returns how many samples went; VoiceError for an unknown name.

    A folder is the voice's when its name, normalised as the library normalises names
    (NFC, blanks as one space), is the voice's: `José` written in NFD, `Li  Lei` or
    `Li<TAB>Lei` all name the voice `Li Lei`, and all of them go. The voice's enrolment
    jobs still queued or running are cancelled first, so that none of them brings the
    voice back when it finishes (a running one's worker loses its hold and records
    nothing)."""
    cleaned = normal_voice_name(str(name))
    for job in store.enrol_jobs(states=("queued", "running")):
        if normal_voice_name(str(job.options.get("voice") or "")) == cleaned:
            if store.cancel(job.id, message=f"voice {cleaned!r} was removed", by="voices remove") is not None:
                logger.info("job {}: enrolment cancelled, voice {} removed", job.id, cleaned)
    count = store.remove_voice(cleaned)
    moved = False
    for folder in voice_folders(config, cleaned):
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = files.free_name(config.paths.state / REMOVED_FOLDER / f"{cleaned} {stamp}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        logger.info("voice {}: its folder {!r} moved to {}", cleaned, folder.name, target)
        moved = True
    if count == 0 and not moved:
        raise VoiceError(f"no voice named {cleaned!r} (spkd voices list shows the library)")
    logger.info("voice {} removed ({} sample(s))", cleaned, count)
    return count


def voice_folders(config: "Config", name: str) -> list[Path]:
    """The folders under paths.voices that enrol as voice `name` (a normalised name): a
    real folder (never a link) whose name normalises to it. Only a name that can be a
    voice's has folders (never `..`, never a path)."""
    if voice_name_problem(name) is not None:
        return []
    try:
        entries = sorted(config.paths.voices.iterdir())
    except OSError:
        return []
    return [p for p in entries if normal_voice_name(p.name) == name and p.is_dir() and not p.is_symlink()]


# --------------------------------------------------------------------------- the folder's files as sources
# Here rather than beside the folder scan (daemon.intake.voice_folder): the worker,
# which records an enrolment job's sample, may not import intake.


def voice_source_name(rel: str) -> str:
    """An enrolment job's source name: its file's path under paths.voices, under `voices/`
    (so its copy in failed/ or archive/ never meets an inbox file of the same name)."""
    return f"voices/{rel}"


def folder_source(source_name: str) -> str:
    """The inverse of voice_source_name: the file's path under paths.voices."""
    return source_name[len("voices/"):] if source_name.startswith("voices/") else source_name

