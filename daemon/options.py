"""Per-file options from a sidecar `<file>.spkd.json` dropped beside the audio.

    {"speakers": 2, "hotwords": ["魔搭", "FunASR"], "formats": ["srt", "json"], "priority": 5,
     "channels": ["客服", "客户"]}

Validated strictly (a typo must not silently transcribe with the wrong settings):
an unknown key or a bad value fails the job with a message naming the key.
The normalised options are stored in `jobs.options` and are part of the dedup key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from daemon.errors import OptionsError

KEYS = ("speakers", "hotwords", "formats", "priority", "channels")
MAX_SPEAKERS = 64
MAX_HOTWORDS = 200
# How a recording's channels are used: "mix" (down-mix, cluster voices), "split" (one
# speaker per channel), "auto" (split only when the channels really differ), or a list
# of names (split, channel i named by the i-th name).
CHANNEL_MODES = ("mix", "split", "auto")
MAX_CHANNEL_NAME = 64


def parse(text: str, *, source: str = "sidecar") -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise OptionsError(f"{source}: not valid JSON: {exc}") from None
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
        n = raw["speakers"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SPEAKERS:
            raise OptionsError(f"{source}: speakers: expected an integer from 1 to {MAX_SPEAKERS}, got {n!r}")
        out["speakers"] = n
    if raw.get("hotwords") is not None:
        words = raw["hotwords"]
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise OptionsError(f"{source}: hotwords: expected a list of non-empty strings")
        if len(words) > MAX_HOTWORDS:
            raise OptionsError(f"{source}: hotwords: at most {MAX_HOTWORDS} words")
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
    if raw.get("priority") is not None:
        p = raw["priority"]
        if not isinstance(p, int) or isinstance(p, bool) or not -1000 <= p <= 1000:
            raise OptionsError(f"{source}: priority: expected an integer from -1000 to 1000, got {p!r}")
        out["priority"] = p
    return out


def validate_channels(value: Any, *, source: str = "sidecar") -> str | list[str]:
    """A `channels` setting, normalised: one of CHANNEL_MODES, or a list of names."""
    if isinstance(value, str) and value in CHANNEL_MODES:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(n, str) for n in value):
        names = [" ".join(n.split()) for n in value]
        if not all(names):
            raise OptionsError(f"{source}: channels: a channel name must not be empty")
        if any(len(n) > MAX_CHANNEL_NAME for n in names):
            raise OptionsError(f"{source}: channels: a channel name has at most {MAX_CHANNEL_NAME} characters")
        if len(set(names)) != len(names):
            raise OptionsError(f"{source}: channels: two channels have the same name")
        return names
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
    try:
        text = path.read_text(encoding="utf-8")
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
