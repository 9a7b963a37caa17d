"""`spkd retry`, `spkd cancel`, `spkd remove`: parsing and printing; the work is done
by daemon.jobs.retry, daemon.jobs.cancel and daemon.jobs.remove (the dashboard's
buttons call the same functions).

Each names what it did per job, and for each job it refused, why (on stderr); it exits
0 when everything asked was done, 1 (ExitCode.FAILED) when a job was refused or the
removal was not confirmed, 2 for bad usage (invalid `--options`, no job given)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from daemon.cli.common import add_command, job_id, load_config, opened_store
from daemon.errors import ExitCode, JobRefusedError

__all__ = ["register"]


def _shown(options: dict[str, Any]) -> str:
    return json.dumps(options, ensure_ascii=False, sort_keys=True)


def cmd_retry(args: argparse.Namespace) -> int:
    from daemon import options
    from daemon.intake.probe import probe
    from daemon.jobs import retry

    if bool(args.ids) == bool(args.failed):
        print("spkd retry: give job ids, or --failed for every failed job", file=sys.stderr)
        return ExitCode.ERROR
    if args.options is not None and args.failed:
        print("spkd retry: --options goes with job ids, not with --failed", file=sys.stderr)
        return ExitCode.ERROR
    given = options.parse(args.options, source="--options") if args.options is not None else None
    config = load_config(args)
    refused = 0
    with opened_store(config) as store:
        if args.failed:
            done, skipped = retry.retry_failed(config, store, force=args.force, probe=probe)
            for reason in skipped:
                print(f"spkd retry: skipped: {reason}", file=sys.stderr)
        else:
            done = []
            for number in dict.fromkeys(args.ids):
                try:
                    done.append(retry.retry_job(config, store, number, given=given, force=args.force,
                                                probe=probe))
                except JobRefusedError as exc:
                    print(f"spkd retry: {exc.message}", file=sys.stderr)
                    refused += 1
    for item in done:
        print(f"requeued job {item.job.id}: {item.job.source_name} with options {_shown(item.options)} "
              f"({item.options_text})")
    if args.failed:
        print(f"requeued {len(done)} job(s)" + (f": {', '.join(str(r.job.id) for r in done)}" if done else ""))
    return ExitCode.FAILED if refused else ExitCode.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from daemon.jobs.cancel import cancel_job

    config = load_config(args)
    refused = 0
    with opened_store(config) as store:
        for number in dict.fromkeys(args.ids):
            try:
                was = cancel_job(config, store, number)
            except JobRefusedError as exc:
                print(f"spkd cancel: {exc.message}", file=sys.stderr)
                refused += 1
                continue
            how = (f"its worker on {was.host} (slot {was.slot}) stops it within seconds" if was.state == "running"
                   else "it will not start")
            print(f"cancelled job {number} (was {was.state}): {was.source_name}; {how}; its file goes to "
                  f"{config.paths.failed}")
    return ExitCode.FAILED if refused else ExitCode.OK


def cmd_remove(args: argparse.Namespace) -> int:
    from daemon.jobs import remove

    config = load_config(args)
    with opened_store(config) as store:
        removals, refused = remove.plan(config, store, args.ids)
        for reason in refused:
            print(f"spkd remove: {reason}", file=sys.stderr)
        if refused:
            print("spkd remove: nothing removed", file=sys.stderr)
            return ExitCode.FAILED
        for item in removals:
            job = item.job
            print(f"job {job.id} ({job.state}): {job.source_name}")
            for path in item.files:
                print(f"  delete  {path}")
            print(f"  delete  {item.segments} segment row(s), {item.events} event row(s) and the job's row")
            if item.audio is None:
                print("  audio   none left (not in archive/, failed/ or the spool)")
            elif item.audio_moves:
                print(f"  keep    its audio {item.audio}, moved into {config.paths.failed}")
            else:
                print(f"  keep    its audio {item.audio}")
        if not args.yes:
            if not sys.stdin.isatty():
                print("spkd remove: nothing removed: confirm on a terminal, or pass --yes", file=sys.stderr)
                return ExitCode.ERROR
            sys.stdout.flush()
            answer = input(f"remove {len(removals)} job(s)? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                print("nothing removed")
                return ExitCode.FAILED
        removed = remove.remove(config, store, removals)
    for number in removed:
        print(f"removed job {number}")
    kept = [r.job.id for r in removals if r.job.id not in removed]
    if kept:
        print(f"spkd remove: job(s) {', '.join(map(str, kept))} changed meanwhile (retried?); not removed",
              file=sys.stderr)
        return ExitCode.FAILED
    return ExitCode.OK


def register(subparsers: Any) -> None:
    """Add `retry`, `cancel` and `remove` to spkd's subcommands (`subparsers` from build_parser)."""

    p = add_command(subparsers, "retry", cmd_retry,
                    "run failed or cancelled jobs again, with the options of their sidecar as it is now (says "
                    "which); refuses, saying why, a job that a retry cannot change; exit 1 when a job was refused")
    p.add_argument("ids", nargs="*", type=job_id, metavar="JOB_ID")
    p.add_argument("--failed", action="store_true", help="every failed job that a retry can change")
    p.add_argument("--options", metavar="JSON", help="the options to run with instead of the sidecar's, as a "
                   "sidecar holds them: '{\"speakers\": 2}'")
    p.add_argument("--force", action="store_true", help="also a job whose failure a retry cannot change (its file "
                   "unchanged), and a done job (its outputs are replaced)")

    p = add_command(subparsers, "cancel", cmd_cancel,
                    "cancel queued or running jobs: a queued one never starts, a running one stops "
                    "within seconds; the file goes to failed/ with the reason `cancelled`, nothing is published")
    p.add_argument("ids", nargs="+", type=job_id, metavar="JOB_ID")

    p = add_command(subparsers, "remove", cmd_remove,
                    "delete finished jobs' outputs, stored transcripts, segments and rows, after "
                    "showing what will go and asking; the audio is kept in failed/")
    p.add_argument("ids", nargs="+", type=job_id, metavar="JOB_ID")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask (for scripts); without a terminal to ask "
                   "on, nothing is removed unless given")
