"""Renaming a voice of the library: `spkd voices rename` and the dashboard's voices page.

The library renames the voice (daemon.voices.library.rename: its name, its samples'
paths and its folder under paths.voices, together). Then every done job whose speakers
the voice named (their stored transcript's match names the voice's id, which a rename
keeps: matched by the library, or renamed and enrolled by a person) is re-rendered with
the new name through daemon.jobs.results.rerender_jobs, as a rename of speakers is
(daemon.jobs.rename): stored transcript, outputs and segments, with a `renamed` event.

A crash between the two leaves jobs showing the old name; asking for the same rename
again (the old name gone, the new one there) re-renders them then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from daemon.jobs import outputs, results
from daemon.jobs.rename import REMATCH_BATCH
from daemon.options import normal_voice_name
from daemon.transcript import speaker_label
from daemon.voices import library
from daemon.voices.matching import check_name

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["VoiceRename", "rename_voice"]


@dataclass(frozen=True)
class VoiceRename:
    voice: int
    name: str  # the old name
    new_name: str
    jobs: tuple[int, ...]  # the jobs re-rendered with the new name
    skipped: tuple[str, ...] = ()  # jobs left as they are, and why


def rename_voice(config: "Config", store: "Store", name: str, new_name: str) -> VoiceRename:
    """Voice `name` becomes `new_name` in the library and in every job it named.
    VoiceError (daemon.errors) when the library refuses (daemon.voices.library.rename)."""
    old, new = normal_voice_name(str(name)), check_name(new_name)
    by_name = {v.name: v.id for v in library.list_voices(config, store)}
    if old not in by_name and new in by_name:
        voice_id = by_name[new]  # renamed before, its jobs perhaps not (a crash): bring them level
    else:
        voice_id = library.rename(config, store, old, new).voice
    changes: list[results.Change] = []
    touched: list[int] = []
    skipped: list[str] = []
    for job_id in store.done_transcriptions():
        transcript = outputs.load_transcript(config, job_id)
        if transcript is None:
            continue
        named = {s for s, m in transcript.speaker_matches.items() if m.voice == voice_id}
        if not named or all(transcript.speaker_names.get(s) == new for s in named):
            continue
        clash = [s for s, n in transcript.speaker_names.items() if n == new and s not in named]
        if clash:
            # Two speakers of one job never share a name (daemon.jobs.rename's rule).
            skipped.append(f"job {job_id}: its {speaker_label(clash[0])} is called {new!r} already")
            continue
        names = {**transcript.speaker_names, **{s: new for s in named}}
        changes.append(results.Change(job_id, transcript.replace(speaker_names=names), "renamed",
                                      {"names": {speaker_label(s): new for s in sorted(named)},
                                       "voice": {"id": voice_id, "from": old, "to": new}}))
        if len(changes) >= REMATCH_BATCH:
            touched += results.rerender_jobs(config, store, changes)
            changes = []
    touched += results.rerender_jobs(config, store, changes)
    for reason in skipped:
        logger.warning("voice {} renamed {}: {} (not renamed there)", old, new, reason)
    logger.info("voice {} renamed {}: {} job(s) re-rendered{}", old, new, len(touched),
                f" ({', '.join(map(str, touched))})" if touched else "")
    return VoiceRename(voice=voice_id, name=old, new_name=new, jobs=tuple(touched), skipped=tuple(skipped))
