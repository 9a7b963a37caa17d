"""Configs for tests: every folder a name under one root, the environment ignored.

`make_config(root, ...)` gives the loaded `Config`; `write_config(root, ...)` writes the
same settings to a file (for `spkd --config` and for tests of loading) and returns its
path. Both take whole sections as keywords (`notify={...}`), merged key by key over the
defaults and over any mappings given positionally (a test module's own site), plus the
two settings most tests name: `url` (database.url) and `host` (daemon.host).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.config import Config

__all__ = ["FOLDERS", "config_dict", "make_config", "write_config"]

# The folders spkd writes or watches, each a subfolder of the test's root of the same name.
FOLDERS = ("inbox", "outbox", "archive", "failed", "spool", "state")


def config_dict(*layers: Mapping[str, Mapping[str, Any]], url: str | None = None, host: str | None = None,
                **sections: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The raw settings: the default folders, then each layer, then `sections`, each merged
    key by key into the section it names; `url` and `host` last."""
    raw: dict[str, dict[str, Any]] = {"paths": {name: name for name in FOLDERS}}
    for layer in (*layers, sections):
        for section, values in layer.items():
            raw.setdefault(section, {}).update(values)
    if url is not None:
        raw.setdefault("database", {})["url"] = url
    if host is not None:
        raw.setdefault("daemon", {})["host"] = host
    return raw


def make_config(root: Path, *layers: Mapping[str, Mapping[str, Any]], url: str | None = None,
                host: str | None = None, **sections: Mapping[str, Any]) -> Config:
    """A Config whose relative paths lie under `root`; `SPKD_*` variables are not read, so
    the developer's environment cannot change a test."""
    from daemon.config import from_dict

    return from_dict(config_dict(*layers, url=url, host=host, **sections), base_dir=root, env={})


def write_config(root: Path, *layers: Mapping[str, Mapping[str, Any]], url: str | None = None,
                 host: str | None = None, name: str = "spkd.json", **sections: Mapping[str, Any]) -> Path:
    """The settings of `make_config`, written to `root/name` (relative paths are then
    relative to the file, i.e. under `root`); returns the file's path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(json.dumps(config_dict(*layers, url=url, host=host, **sections), indent=2), encoding="utf-8")
    return path
