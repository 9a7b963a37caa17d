"""What every `spkd` command module shares: loading the config, opening the store,
printing JSON and tables (one table printer, which aligns by terminal columns). The command modules (main, voices, service, oneshot) import
this one and never each other, so none of them depends on another's private helpers.

Nothing here imports torch or funasr, and the store is imported only when opened, so
that the fast commands stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.store import Store

__all__ = ["CUT_MARK", "MAX_CELL_WIDTH", "WIDE_HELP", "add_command", "add_wide", "cell_text", "char_width", "cut",
           "display_width", "json_default", "load_config", "megabytes", "open_store", "opened_store", "pad",
           "print_json", "print_table", "quiet_logging", "table_lines"]


def load_config(args: argparse.Namespace) -> "Config":
    """The config named by `--config` (else $SPKD_CONFIG, else ./config.json)."""
    from daemon.config import load

    return load(args.config)


def quiet_logging(prog: str) -> None:
    """The log of a one-shot command: its warnings and errors only, on stderr in the
    CLI's own style (`spkd retry: warning: …`), never the daemon's INFO lines (`job 3
    requeued …`): the command prints what it did itself. daemon.cli.main sets this up
    for every command; those that log otherwise (`run`, `web`, `transcribe`, `models
    make-tiny`) replace it."""
    import sys

    from loguru import logger

    def say(message: Any) -> None:
        record = message.record
        # sys.stderr as it is at each line, not as it was when the command began
        sys.stderr.write(f"{prog}: {record['level'].name.lower()}: {record['message']}\n")

    logger.remove()
    logger.add(say, level="WARNING", format="{message}", backtrace=False, diagnose=False)


def open_store(config: "Config") -> "Store":
    """The job database, which must exist at the current schema (`spkd db upgrade`
    creates or migrates it); raises ConfigError saying what to do otherwise."""
    from daemon.errors import ConfigError
    from daemon.store import Store
    from daemon.store.db import schema_problem

    problem = schema_problem(config.database_url)
    if problem:
        raise ConfigError(problem)
    # As this host (daemon.host): commands that act on this host's jobs (rematch, a voice's
    # rename) find them by it.
    return Store(config.database_url, host=config.host)


@contextlib.contextmanager
def opened_store(config: "Config") -> Iterator["Store"]:
    """The job database for one command (`with opened_store(config) as store:`):
    open_store's checks; the driver's errors, in the opening and in the body alike,
    turned into spkd's by translate_unusable (an unusable file into one
    UnusableDatabaseError, a ConfigError; a lock or an outage into
    DatabaseUnavailableError); the store closed on the way out, however it is left."""
    from daemon.store.db import translate_unusable

    with translate_unusable(config.database_url):
        store = open_store(config)
        try:
            yield store
        finally:
            store.close()


def json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat() + ("Z" if isinstance(value, dt.datetime) and value.tzinfo is None else "")
    if isinstance(value, Path):
        return str(value)
    return str(value)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=json_default))


# The widest a cell is shown in a table unless --wide; a cut cell ends with CUT_MARK.
MAX_CELL_WIDTH = 60
CUT_MARK = "…"
WIDE_HELP = f"show every cell whole (default: cut at {MAX_CELL_WIDTH} columns, marked {CUT_MARK})"


def add_command(subparsers: Any, name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that runs `func(args)`; `--config` is taken after the command name
    too (`spkd jobs -c x.json`), without overriding one given before it."""
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", "-c", default=argparse.SUPPRESS, help="config file")
    p.set_defaults(func=func)
    return p


def add_wide(parser: argparse.ArgumentParser) -> None:
    """`--wide` for a command that prints a table (every one does: README's "Tables")."""
    parser.add_argument("--wide", action="store_true", help=WIDE_HELP)


# The largest id the database's 64-bit integers hold.
MAX_ID = 2**63 - 1


def job_id(text: str) -> int:
    """An argparse type: a job id (a whole number from 1 to MAX_ID); anything else is a
    usage error (exit 2), never an overflow inside the database."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a job id (a whole number), got {text!r}") from None
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"expected a job id from 1 to {MAX_ID}, got {text!r}")
    return value


@functools.lru_cache(maxsize=8192)
def char_width(char: str) -> int:
    """Terminal columns of one character: 2 for wide and full-width ones (CJK,
    `unicodedata.east_asian_width` W or F), 0 for combining and invisible format
    characters, 1 for the rest."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns `text` takes: what every table of the CLI aligns by (李雷 is 4, not 2)."""
    if text.isascii():
        return len(text)
    return sum(char_width(c) for c in text)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` columns: whole, or cut and ending with CUT_MARK."""
    if display_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        w = char_width(char)
        if used + w > width - display_width(CUT_MARK):
            break
        kept.append(char)
        used += w
    return "".join(kept) + CUT_MARK


def pad(text: str, width: int) -> str:
    """`text` filled with spaces to `width` columns (str.ljust counts characters, not columns)."""
    return text + " " * max(0, width - display_width(text))


def cell_text(value: Any) -> str:
    """How a value is shown in a table cell: one line, JSON without \\u escapes, control
    characters visible as escapes (a file name must not move the cursor or the lines)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=json_default)
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_visible(c) for c in text)


def _visible(char: str) -> str:
    category = unicodedata.category(char)
    if char in "\n\r\t" or category in ("Zl", "Zp"):
        return " "
    if category == "Cc":
        return char.encode("unicode_escape").decode("ascii")
    return char


def megabytes(mb: float | None) -> str:
    """A size in MB as a table shows it: whole MB from 10 up (`541`), one decimal below
    (`2.5`), two for a fraction of one (`0.03`), `<0.01` for a few KB (never `0.000`)."""
    if mb is None:
        return ""
    if mb == 0 or mb >= 10:
        return f"{mb:.0f}"
    if mb >= 1:
        return f"{mb:.1f}"
    return f"{mb:.2f}" if mb >= 0.01 else "<0.01"


def table_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, wide: bool = False) -> list[str]:
    """The lines of a table: a header, then a line per row, columns aligned in terminal
    columns; cells over MAX_CELL_WIDTH cut with CUT_MARK unless `wide`."""
    header = [cell_text(c) for c in columns]
    text = [[cell_text(v) for v in row] for row in rows]
    if not wide:
        header = [cut(c, MAX_CELL_WIDTH) for c in header]
        text = [[cut(v, MAX_CELL_WIDTH) for v in row] for row in text]
    widths = [max([display_width(c)] + [display_width(r[i]) for r in text if i < len(r)])
              for i, c in enumerate(header)]
    return ["  ".join(pad(v, w) for v, w in zip(line, widths)).rstrip() for line in [header, *text]]


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, wide: bool = False) -> None:
    """Every table the CLI prints (jobs, sql, status, voices list, speakers, models list …):
    see table_lines."""
    for line in table_lines(columns, rows, wide=wide):
        print(line)
