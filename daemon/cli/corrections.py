"""`spkd edit`, `spkd history`, `spkd revert`: parsing and printing; the work is done by
daemon.jobs.corrections (the dashboard's edit and history panel call the same functions).

Each says what it did in one line (stdout); a refusal (no such job, segment or version, a
job not done, a text or name that breaks the rules) is one line on stderr, named after
the command, and exit 1 (ExitCode.FAILED; daemon.cli.main handles JobRefusedError)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from daemon.cli.common import add_command, add_wide, job_id, load_config, opened_store, print_table

__all__ = ["register"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}") from None
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return value


def cmd_edit(args: argparse.Namespace) -> int:
    from daemon.jobs import corrections

    config = load_config(args)
    with opened_store(config) as store:
        before = store.transcript_version(args.job) if store.job(args.job) is not None else 1
        version = corrections.edit_segment(config, store, args.job, args.segment, text=args.text,
                                           speaker=args.speaker, origin="cli")
        change = corrections.history(store, args.job)[-1].change if version != before else ""
    if version == before:
        print(f"job {args.job}: segment {args.segment} already says so; nothing changed (version {version})")
    else:
        print(f"job {args.job}: version {version}: {change}")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    from daemon.jobs import corrections

    config = load_config(args)
    with opened_store(config) as store:
        before = store.transcript_version(args.job) if store.job(args.job) is not None else 1
        version = corrections.revert(config, store, args.job, args.version, origin="cli")
    if version == before:
        print(f"job {args.job}: the transcript already is as in version {args.version}; nothing changed "
              f"(version {version})")
    else:
        print(f"job {args.job}: version {version}: reverted to version {args.version}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from daemon.jobs import corrections

    config = load_config(args)
    with opened_store(config) as store:
        versions = corrections.history(store, args.job)
    if args.json:
        rows: list[dict[str, Any]] = [dataclasses.asdict(v) for v in versions]
        for row in rows:
            row["created_at"] = row["created_at"].isoformat() + "Z" if row["created_at"] else None
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    current = versions[-1].version
    print_table(["version", "created_at", "origin", "change"],
                [[f"{v.version}{' *' if v.version == current else ''}", v.created_at, v.origin, v.change]
                 for v in versions], wide=args.wide)
    return 0


def register(subparsers: Any) -> None:
    """Add `edit`, `history` and `revert` to spkd's subcommands (`subparsers` from build_parser)."""
    p = add_command(subparsers, "edit", cmd_edit,
                    "correct one segment of a done job's transcript: every output, the search rows and duplicates "
                    "of the job are re-rendered; the versions before are kept (`spkd history`, `spkd revert`)")
    p.add_argument("job", type=job_id, metavar="JOB_ID")
    p.add_argument("--segment", "-n", type=_positive, required=True, metavar="N",
                   help="the segment, numbered as the job's srt numbers its cues (from 1)")
    p.add_argument("--text", "-t", metavar="TEXT", help="the segment's words as they should be")
    p.add_argument("--speaker", metavar="NAME",
                   help="who said it: one of the transcript's speakers as the outputs show it, or a new name")

    p = add_command(subparsers, "history", cmd_history,
                    "the versions of a done job's transcript: when, from where (cli, web) and what changed; "
                    "1 is the transcript as the engine made it, * the current one")
    p.add_argument("job", type=job_id, metavar="JOB_ID")
    p.add_argument("--json", action="store_true")
    add_wide(p)

    p = add_command(subparsers, "revert", cmd_revert,
                    "bring back a version of a done job's transcript (1: as the engine made it) as a new version; "
                    "every output and the search rows are re-rendered")
    p.add_argument("job", type=job_id, metavar="JOB_ID")
    p.add_argument("version", type=_positive, metavar="VERSION")
