"""`spkd summarize JOB…` and `spkd summaries`: parsing and printing; asking for a summary
is daemon.jobs.summarize's, running it a worker's.

`spkd summarize` (re)queues the summaries of done transcriptions (a running daemon's
workers make them when no transcription waits); it says per job what it did, and for a
job it refused why (on stderr), exiting 1 then. `spkd summaries` lists them, with
whether each is stale (made from an older transcript than the job's now)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from daemon.cli.common import (
    add_command,
    add_wide,
    job_id,
    load_config,
    opened_store,
    print_json,
    print_table,
)
from daemon.errors import ExitCode, JobRefusedError

if TYPE_CHECKING:
    from daemon.jobs.summarize import SummaryStatus

__all__ = ["register"]


def cmd_summarize(args: argparse.Namespace) -> int:
    from daemon.jobs import summarize

    config = load_config(args)
    refused = 0
    with opened_store(config) as store:
        for number in dict.fromkeys(args.ids):
            try:
                row, before = summarize.request(config, store, number)
            except JobRefusedError as exc:
                print(f"spkd summarize: {exc.message}", file=sys.stderr)
                refused += 1
                continue
            if before in ("queued", "running"):
                print(f"job {number}: its summary is {before} already")
            else:
                again = " again" if before is not None else ""
                print(f"job {number}: summary queued{again} (up to {row.max_attempts} attempts)")
    return ExitCode.FAILED if refused else ExitCode.OK


def _made_from(status: "SummaryStatus") -> str:
    """`v2`, or `v1 (stale: now v2)` when the transcript changed since."""
    made = status.row.transcript_version
    if made is None:
        return "-"
    return f"v{made} (stale: now v{status.current_version})" if status.stale else f"v{made}"


def cmd_summaries(args: argparse.Namespace) -> int:
    from daemon.jobs import summarize

    config = load_config(args)
    with opened_store(config) as store:
        rows = store.summaries(limit=args.limit, state=args.state)
        statuses = [summarize.status(store, row.job_id) for row in rows]
        names = {row.job_id: (job.source_name if (job := store.job(row.job_id)) else "?") for row in rows}
    shown = [s for s in statuses if s is not None]
    if args.json:
        print_json([{**{k: v for k, v in dataclasses.asdict(s.row).items() if k != "result"},
                     "source_name": names[s.row.job_id], "current_version": s.current_version, "stale": s.stale,
                     "format": (s.row.result or {}).get("format")} for s in shown])
        return ExitCode.OK
    print_table(["job", "file", "state", "attempts", "made from", "error"],
                [[s.row.job_id, names[s.row.job_id], s.row.state, f"{s.row.attempts}/{s.row.max_attempts}",
                  _made_from(s), f"{s.row.error_kind}: {s.row.error_message}" if s.row.error_kind else ""]
                 for s in shown], wide=args.wide)
    return ExitCode.OK


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from daemon.store.schema import SUMMARY_STATES

    p = add_command(sub, "summarize", cmd_summarize,
                    "(re)request the summaries of done transcriptions (made by the daemon's workers through "
                    "summary.endpoint); exit 1 if a job was refused")
    p.add_argument("ids", nargs="+", type=job_id, metavar="JOB")
    p = add_command(sub, "summaries", cmd_summaries,
                    "summaries: state, attempts, the transcript version each was made from (stale when the "
                    "transcript changed since), the last error")
    p.add_argument("--limit", "-n", type=int, default=50)
    p.add_argument("--state", choices=SUMMARY_STATES)
    p.add_argument("--json", action="store_true")
    add_wide(p)
