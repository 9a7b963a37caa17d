"""What every `spkd` command module shares: loading the config, opening the store,
printing JSON and tables. The command modules (main, voices, service, oneshot) import
this one and never each other, so none of them depends on another's private helpers.

Nothing here imports torch or funasr, and the store is imported only when opened, so
that the fast commands stay fast.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["json_default", "load_config", "open_store", "print_json", "print_table"]


def load_config(args: argparse.Namespace) -> "Config":
    """The config named by `--config` (else $SPKD_CONFIG, else ./config.json)."""
    from daemon.config import load

    return load(args.config)


def open_store(config: "Config") -> "Store":
    """The job database, which must exist at the current schema (`spkd db upgrade`
    creates or migrates it); raises ConfigError saying what to do otherwise."""
    from daemon.errors import ConfigError
    from daemon.store import Store
    from daemon.store.db import schema_problem

    problem = schema_problem(config.database_url)
    if problem:
        raise ConfigError(problem)
    return Store(config.database_url)


def json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat() + ("Z" if isinstance(value, dt.datetime) and value.tzinfo is None else "")
    if isinstance(value, Path):
        return str(value)
    return str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=json_default))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.3f}"
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(value, (dict, list)):
            return json.dumps(value, ensure_ascii=False)
        return str(value).replace("\n", " ")

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    widths = [min(w, 60) for w in widths]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in text:
        print("  ".join(v[:w].ljust(w) for v, w in zip(row, widths)).rstrip())
