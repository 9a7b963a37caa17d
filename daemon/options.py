"""Per-file options from a sidecar `<file>.spkd.json` dropped beside the audio.

    {"speakers": 2, "hotwords": ["魔搭", "FunASR"], "formats": ["srt", "json"], "priority": 5,
     "channels": ["客服", "客户"], "expected_speakers": ["王总", "李雷"], "summary": false}

Validated strictly (a typo must not silently transcribe with the wrong settings):
an unknown key or a bad value fails the job with a message naming the key.
The normalised options are stored in `jobs.options` and are part of the dedup key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from daemon import files, names
from daemon.errors import OptionsError, SpkdError

__all__ = ["CHANNEL_MODES", "KEYS", "MAX_CHANNEL_NAME", "MAX_HOTWORDS", "MAX_SIDECAR_BYTES", "MAX_SPEAKERS",
           "MAX_VOICE_NAME", "check_channels", "check_speakers", "dedup_key", "hotword_words", "normal_voice_name",
           "parse", "read_sidecar", "splits_channels", "validate", "validate_channels", "voice_name_problem"]

# `summary`: true or false, whether this file gets a summary (daemon/summary_config.py's summary.automatic).
KEYS = ("speakers", "hotwords", "formats", "priority", "channels", "expected_speakers", "summary")
# A voice's name is also its folder under paths.voices (daemon.voices).
MAX_VOICE_NAME = names.MAX_NAME
# FunASR 1.4's ClusterBackend clusters a recording's speaker windows (1.5 s, one every
# 0.75 s of speech) only when there are at least 20 of them (fewer are all one speaker),
# and spectral clustering's k-means cannot make more clusters than it has windows. So 20
# speakers can be asked of every recording FunASR clusters at all, while 21 or more fail
# inside FunASR on a short one (more clusters than windows); without a count FunASR
# itself finds at most 15.
MAX_SPEAKERS = 20
# Counted as the recogniser sees them (hotword_words). From 50 on, SeACo Paraformer keeps
# the 50 most relevant for each segment, so a long list costs little; 200 bounds the rest.
MAX_HOTWORDS = 200
# A sidecar holds four small keys; 200 hotwords fit in a few KB. Anything larger is
# not a sidecar (and is never read into memory whole).
MAX_SIDECAR_BYTES = 64 * 1024


def hotword_words(items: Sequence[str]) -> list[str]:
    """The hotwords as SeACo Paraformer takes them: it splits its one hotword string at
    whitespace, so a phrase counts as its words. In order, duplicates dropped."""
    words: list[str] = []
    for item in items:
        for word in str(item).split():
            if word not in words:
                words.append(word)
    return words
# How a recording's channels are used: "mix" (down-mix, cluster voices), "split" (one
# speaker per channel), "auto" (split only when the channels really differ), or a list
# of names (split, channel i named by the i-th name).
CHANNEL_MODES = ("mix", "split", "auto")
MAX_CHANNEL_NAME = names.MAX_NAME


def parse(text: str, *, source: str = "sidecar") -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise OptionsError(f"{source}: not valid JSON: {exc}") from None
    except RecursionError:
        raise OptionsError(f"{source}: not valid JSON: nested too deeply") from None
    return validate(raw, source=source)


def validate(raw: Any, *, source: str = "sidecar") -> dict[str, Any]:
    from daemon.writers import FORMATS

    if not isinstance(raw, Mapping):
        raise OptionsError(f"{source}: expected a JSON object")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise OptionsError(f"{source}: {unknown[0]}: unknown key (known: {', '.join(KEYS)})")
    out: dict[str, Any] = {}
    if raw.get("speakers") is not None:
        out["speakers"] = check_speakers(raw["speakers"], source=source)
    if raw.get("hotwords") is not None:
        words = raw["hotwords"]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise OptionsError(f"{source}: hotwords: expected a list of non-empty strings")
        count = len(hotword_words(words))
        if count > MAX_HOTWORDS:
            raise OptionsError(f"{source}: hotwords: at most {MAX_HOTWORDS} words (phrases count as their "
                               f"words), got {count}")
        out["hotwords"] = [w.strip() for w in words]
    if raw.get("formats") is not None:
        formats = raw["formats"]
        if not isinstance(formats, list) or not formats or not all(isinstance(f, str) for f in formats):
            raise OptionsError(f"{source}: formats: expected a non-empty list of format names")
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise OptionsError(f"{source}: formats: unknown format {bad[0]!r} (known: {', '.join(FORMATS)})")
        out["formats"] = list(dict.fromkeys(formats))
    if raw.get("channels") is not None:
        out["channels"] = validate_channels(raw["channels"], source=source)
    if raw.get("expected_speakers") is not None:
        expected = raw["expected_speakers"]
        if not isinstance(expected, list) or not expected:
            raise OptionsError(f"{source}: expected_speakers: expected a non-empty list of voice names")
        for name in expected:
            problem = voice_name_problem(name)
            if problem:
                raise OptionsError(f"{source}: expected_speakers: {problem}")
        out["expected_speakers"] = list(dict.fromkeys(normal_voice_name(n) for n in expected))
    if raw.get("summary") is not None:
        if not isinstance(raw["summary"], bool):
            raise OptionsError(f"{source}: summary: expected true or false, got {json.dumps(raw['summary'])}")
        out["summary"] = raw["summary"]
    if raw.get("priority") is not None:
        p = raw["priority"]
        if not isinstance(p, int) or isinstance(p, bool) or not -1000 <= p <= 1000:
            raise OptionsError(f"{source}: priority: expected an integer from -1000 to 1000, got {p!r}")
        out["priority"] = p
    return out


def normal_voice_name(name: str) -> str:
    """A voice's name as the library keeps it: NFC, runs of blanks as one space
    (daemon.names.normal_name)."""
    return names.normal_name(name)


def voice_name_problem(name: Any) -> str | None:
    """Why `name` cannot be a voice's name, or None: the one name rule (daemon.names),
    for voices, renames and channel names alike. It is also a folder under
    paths.voices, so: no `/` or `\\`, no control characters or bidirectional controls,
    not starting with `.`, at most MAX_VOICE_NAME characters and names.MAX_NAME_BYTES
    bytes; and not `SpeakerN`, which reads as an unnamed speaker."""
    return names.name_problem(name)


def check_speakers(value: Any, *, source: str) -> int:
    """The speaker count, or OptionsError naming `source`: the one check of it, for a
    sidecar, the command line and the engine alike."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SPEAKERS:
        raise OptionsError(f"{source}: speakers: expected an integer from 1 to {MAX_SPEAKERS}, got {value!r}")
    return value


def validate_channels(value: Any, *, source: str = "sidecar") -> str | list[str]:
    """A `channels` setting, normalised: one of CHANNEL_MODES, or a list of names."""
    if isinstance(value, str) and value in CHANNEL_MODES:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(n, str) for n in value):
        # The one name rule (daemon.names): a channel's name is its speaker's, shown in every
        # output and at terminals, so it refuses what a voice's name refuses.
        for name in value:
            problem = names.name_problem(name, what="a channel name")
            if problem:
                raise OptionsError(f"{source}: channels: {problem}")
        cleaned = [names.normal_name(n) for n in value]
        if len(set(cleaned)) != len(cleaned):
            raise OptionsError(f"{source}: channels: two channels have the same name")
        return cleaned
    raise OptionsError(
        f"{source}: channels: expected one of {', '.join(map(repr, CHANNEL_MODES))} or a list of channel names, "
        f"got {json.dumps(value, ensure_ascii=False)}"
    )


def splits_channels(channels: str | Sequence[str]) -> bool:
    """Whether the setting asks for one speaker per channel whatever the audio."""
    return channels == "split" or not isinstance(channels, str)


def check_channels(channels: str | Sequence[str], count: int, *, source: str) -> None:
    """OptionsError when `channels` cannot apply to a recording with `count` channels:
    a split of a mono file, or more names than channels."""
    if splits_channels(channels) and count < 2:
        raise OptionsError(f"{source}: channels: splitting by channel needs two or more audio channels; "
                           "this recording is mono (use \"mix\" or \"auto\")")
    if not isinstance(channels, str) and len(channels) > count:
        raise OptionsError(f"{source}: channels: {len(channels)} names for a recording with {count} channels")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The validated options of a sidecar file. Whatever keeps it from being read as a
    small UTF-8 JSON object (a folder or a FIFO of that name, a symbolic link, no
    permission to read it, more than MAX_SIDECAR_BYTES) is an OptionsError too."""
    try:
        with files.open_regular(path) as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except SpkdError as exc:
        raise OptionsError(f"{path.name}: cannot be read as options: {exc.message}") from None
    except OSError as exc:
        raise OptionsError(f"{path.name}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise OptionsError(f"{path.name}: larger than {MAX_SIDECAR_BYTES // 1024} KB; a sidecar holds a few small "
                           f"options ({', '.join(KEYS)})")
    try:
        text = data.decode("utf-8-sig")  # Windows editors start UTF-8 files with a byte-order mark
    except UnicodeDecodeError:
        raise OptionsError(f"{path.name}: not UTF-8 text") from None
    return parse(text, source=path.name)


def dedup_key(sha256: str | None, options: Mapping[str, Any]) -> str | None:
    """Content and the options that change the transcript. Priority and formats don't:
    a reused job renders its own formats from the earlier job's stored transcript."""
    if sha256 is None:
        return None
    relevant = {k: v for k, v in options.items() if k in ("speakers", "hotwords", "channels")}
    if relevant.get("channels") == "mix":  # the default: same key as before the setting existed
        del relevant["channels"]
    canonical = json.dumps(relevant, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{sha256}\n{canonical}".encode()).hexdigest()
