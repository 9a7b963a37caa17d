"""The voice library through the store: enrol recordings by name, list, remove.

Where voices come from: `spkd voices add` (`enrol`: this process embeds the
recordings), the folder `paths.voices/<Name>/` (each file an enrolment job through the
queue, daemon.intake.voice_folder; a worker embeds it and a crash only delays it; the
files stay as the library's source of truth: a file or folder removed takes its
samples, and a voice left without one, with it), and a rename with `--enrol`
(daemon.jobs.rename: the renamed speaker's centroid).

Renaming a voice (`rename`) renames it in the store and its folder under paths.voices
together, under the library's folder lock (`folder_lock`, which the daemon's folder
scan holds too, so that it never sees the one renamed without the other); a crash
between the two is finished by `finish_folder_renames` (see `rename`). Re-rendering the
jobs the voice named is daemon.jobs.voice_rename's.

Store writes go through daemon.store; daemon.voices.matching decides, the store records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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
    from daemon.store import SampleRow, Store, VoiceSummary

__all__ = ["Enrolled", "REMOVED_FOLDER", "Renamed", "enrol", "finish_folder_renames", "folder_lock", "folder_source",
           "list_voices", "remove", "rename", "sample_recording", "voice_folders", "voice_source_name"]

# Where `spkd voices remove` puts a removed voice's folder (never deleted: it is the user's audio).
REMOVED_FOLDER = "removed-voices"
# In paths.state: the lock the folder scan and a rename hold, and a rename's intent for its folder.
LOCK_FILE = "voices.lock"
RENAME_INTENT = "voice-rename.json"


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
    # Under the folder lock: the folder scan never sees the voice gone and its folder still
    # there (it would enrol the folder's files again, and the voice would come back).
    with folder_lock(config):
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


@dataclass(frozen=True)
class Renamed:
    voice: int  # its id, which it keeps
    name: str  # the old name
    new_name: str
    folder: Path | None  # its folder under paths.voices as it is now, when it has one


@contextlib.contextmanager
def folder_lock(config: "Config") -> Iterator[None]:
    """Held while the library and paths.voices change together (a rename) and while the
    daemon's folder scan compares them (daemon.intake.voice_folder.sync_folder): the scan
    would otherwise take a folder renamed a moment before its samples for a new voice."""
    with files.exclusive_lock(config.paths.state / LOCK_FILE):
        yield


def rename(config: "Config", store: "Store", name: str, new_name: str) -> Renamed:
    """`spkd voices rename NAME NEW`: voice `name` is called `new_name` (the one name rule,
    check_name), keeping its id and samples; its folder under paths.voices is renamed
    with it, so that the folder scan goes on taking its files for it. VoiceError for an
    unknown voice, a name taken by another voice, or a folder that cannot follow.

    Order, under folder_lock: an intent file naming the folder's move, the store (name and
    the folder samples' paths, one transaction), the folder, the intent removed. A crash
    after the store's commit leaves the intent, and finish_folder_renames (the next scan,
    or the next rename) moves the folder then; one before it changes nothing."""
    old = normal_voice_name(str(name))
    new = check_name(new_name)
    if old == new:
        raise VoiceError(f"the voice is called {new!r} already")
    with folder_lock(config):
        finish_folder_renames(config, store)
        folders = voice_folders(config, old)
        if len(folders) > 1:
            raise VoiceError(f"folders {', '.join(repr(f.name) for f in folders)} under paths.voices all enrol "
                             f"as {old!r}: move their files into one first")
        folder = folders[0] if folders else None
        target = config.paths.voices / new
        if folder is not None and os.path.lexists(target) and not _same_entry(folder, target):
            raise VoiceError(f"{target} exists already: move it away first, or choose another name")
        sources = {s.source: PurePosixPath(new, PurePosixPath(s.source).name).as_posix()
                   for s in store.voice_samples_of(names=[old])
                   if s.origin == "folder" and s.source and folder is not None
                   and PurePosixPath(s.source).parent.name == folder.name}
        intent = config.paths.state / RENAME_INTENT
        if folder is not None:
            files.atomic_write(intent, json.dumps({"voice": new, "from": folder.name, "to": new}))
        try:
            voice_id = store.rename_voice(old, new, sources=sources)
        except BaseException:
            intent.unlink(missing_ok=True)
            raise
        if voice_id is None:
            intent.unlink(missing_ok=True)
            raise VoiceError(f"no voice named {old!r} (spkd voices list shows the library)")
        if folder is not None:
            try:
                os.rename(folder, target)
            except OSError as exc:  # the folder cannot follow: the store goes back to the old name
                store.rename_voice(new, old, sources={v: k for k, v in sources.items()})
                intent.unlink(missing_ok=True)
                raise VoiceError(f"cannot rename the folder {folder} to {target.name!r}: {exc.strerror}; "
                                 "the voice keeps its name") from None
            files.fsync_dir(config.paths.voices)
            intent.unlink(missing_ok=True)
    logger.info("voice {} renamed {} (voice {}){}", old, new, voice_id,
                f"; its folder {folder.name!r} with it" if folder is not None else "")
    return Renamed(voice=voice_id, name=old, new_name=new, folder=target if folder is not None else None)


def _same_entry(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one folder (a case-only rename on a case-insensitive file system)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def finish_folder_renames(config: "Config", store: "Store") -> bool:
    """The folder move of a rename whose store change was committed before a crash
    (see `rename`); call it holding folder_lock. True when a folder was moved."""
    intent = config.paths.state / RENAME_INTENT
    try:
        wanted = json.loads(intent.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        wanted = {}
    moved = False
    source = config.paths.voices / str(wanted.get("from", ""))
    target = config.paths.voices / str(wanted.get("to", ""))
    committed = bool(wanted) and any(v.name == wanted.get("voice") for v in store.voice_summaries())
    if (committed and voice_name_problem(source.name) is None and voice_name_problem(target.name) is None
            and source.is_dir() and not source.is_symlink() and not os.path.lexists(target)):
        os.rename(source, target)
        files.fsync_dir(config.paths.voices)
        logger.warning("voice {}: its folder {!r} renamed after an interrupted rename", target.name, source.name)
        moved = True
    intent.unlink(missing_ok=True)
    return moved


def sample_recording(config: "Config", sample: "SampleRow") -> Path | None:
    """The recording a sample was made from, where spkd keeps it: a folder sample's file
    under paths.voices (a regular file inside it, never a link out of it). None for a
    sample from `spkd voices add` (the file given was never spkd's) or from a rename
    (the job's recording is on its page)."""
    if sample.origin != "folder" or not sample.source:
        return None
    return files.regular_file_inside(config.paths.voices, sample.source)


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

