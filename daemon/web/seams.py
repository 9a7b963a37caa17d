"""Where the dashboard meets rooms that own other features: search (daemon.search,
present), the voice library and renaming a job's speakers (not in this build yet). The
pages call exactly one function of that room each, found here; while a build lacks it,
the function is None and the page answers 501, saying the feature is not available in
this build. No logic of those features lives in the dashboard.

What the pages expect of each (so that wiring one is a matter of this file):

* `search(store, query, *, limit)`: `daemon.search.search`, the function `spkd search`
  runs. Returns an object with `hits` (each with `job_id`, `source_name`,
  `start_seconds`, `end_seconds`, `speaker`, `text`, and `matches`: (start, end)
  character offsets of the query in `text`), `more` (bool: hits beyond `limit`) and
  `notes` (strings to show). It raises an SpkdError for a query it refuses.
* `voices.list(config, store)`, `voices.enrol(config, store, name, audio_path)`,
  `voices.remove(config, store, name)`: `daemon.voices.list_voices`, `enrol`,
  `remove`, what `spkd voices …` runs. A voice has at least `name`.
* `rename(config, store, job_id, names)`: `daemon.voices.rename_speakers`, what
  `spkd speakers JOB LABEL=NAME` runs: `names` maps a speaker label (`Speaker1`) to
  its new name; every output of the job is rendered again. Raises an SpkdError when
  refused.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

__all__ = ["VoiceLibrary", "rename_function", "search_function", "voice_library"]


def _attribute(module_name: str, name: str) -> Callable[..., Any] | None:
    """`module_name.name` when this build has it, else None (only the module's own
    absence counts: an import error inside it is a bug and goes up)."""
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    found = getattr(module, name, None)
    return found if callable(found) else None


def search_function() -> Callable[..., Any] | None:
    return _attribute("daemon.search", "search")


@dataclass(frozen=True)
class VoiceLibrary:
    list: Callable[..., Any]
    enrol: Callable[..., Any]
    remove: Callable[..., Any]


def voice_library() -> VoiceLibrary | None:
    listing = _attribute("daemon.voices", "list_voices")
    enrol = _attribute("daemon.voices", "enrol")
    remove = _attribute("daemon.voices", "remove")
    if listing is None or enrol is None or remove is None:
        return None
    return VoiceLibrary(list=listing, enrol=enrol, remove=remove)


def rename_function() -> Callable[..., Any] | None:
    return _attribute("daemon.voices", "rename_speakers")
