"""`spkd status`: is the daemon running, its slots, the queue, the running jobs, the last
failures, which models it loads when they are tiny test models, and every file lying in
the inbox that is not a job yet (daemon.intake.listing: read from the folder itself,
so it is right whether the daemon runs or not).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from daemon.cli.common import load_config, megabytes, opened_store, print_json, print_table
from daemon.errors import ExitCode

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.intake.listing import InboxListing
    from daemon.store import Job

__all__ = ["cmd_status", "progress_text"]


def progress_text(row: Job) -> str:
    """A running job's stage, percent done and time left (`asr 45%, ~12 s left`); ""
    for any other job, or before its worker first said."""
    if row.state != "running" or not row.stage:
        return ""
    text = f"{row.stage} {100 * (row.progress or 0):.0f}%"
    eta = row.eta_seconds
    if eta is not None:
        text += f", ~{eta:.0f} s left" if eta < 120 else f", ~{eta / 60:.0f} min left"
    return text


def _tiny_models(config: Config) -> list[str]:
    from daemon.engine.models import configured_model_dirs, tiny_roles  # light: no torch at import

    return tiny_roles(configured_model_dirs(config.models))


def cmd_status(args: argparse.Namespace) -> int:
    from daemon.intake.listing import list_inbox
    from daemon.jobs import diskguard
    from daemon.service import manager as service

    config = load_config(args)
    runtime = service.running_daemon(config)
    running = runtime is not None
    with opened_store(config) as store:
        counts = store.counts()
        workers = store.worker_rows()
        failures = store.jobs(limit=5, state="failed")
        running_jobs = store.jobs(limit=100, state="running")
        summary_counts = store.summary_counts()
    # The pause file, else the free space measured now: with the state disk full the
    # supervisor cannot write the pause file, and claiming is paused all the same.
    paused = diskguard.claim_blocker(config)
    inbox = list_inbox(config, now=time.time())
    tiny = _tiny_models(config)
    info: dict[str, Any] = {
        "running": running,
        "paused": paused,
        "pid": runtime.get("pid") if runtime and running else None,
        "uptime_seconds": round(dt.datetime.now().timestamp() - runtime["started_at"], 1)
        if runtime and running else None,
        "config": str(config.source),
        "queue": counts,
        "workers": [dataclasses.asdict(w) for w in workers],
        "devices": devices_summary(workers),
        "running_jobs": [{k: getattr(j, k) for k in ("id", "source_name", "host", "slot", "device", "stage",
                                                     "progress", "eta_seconds", "started_at")} for j in running_jobs],
        "last_failures": [{k: getattr(f, k) for k in ("id", "source_name", "error_kind", "error_message",
                                                      "finished_at")} for f in failures],
        "tiny_models": tiny,
        "summaries": summary_counts,
        "inbox": inbox.as_json(),
    }
    if args.json:
        print_json(info)
        return ExitCode.OK if running else ExitCode.FAILED
    print(f"spkd {'running, pid ' + str(info['pid']) if running else 'not running'}"
          + (f", up {info['uptime_seconds']:.0f} s" if running else "") + f"; config {config.source}")
    if tiny:
        from daemon.engine.models import TINY_NOTE

        print(f"models: {TINY_NOTE} ({', '.join(tiny)} in {config.models.dir})")
    print("queue: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty"))
    if summary_counts:  # `spkd summaries` lists them, stale ones marked
        print("summaries: " + ", ".join(f"{n} {s}" for s, n in sorted(summary_counts.items())))
    if paused:
        print(f"claiming paused: {paused}")
    if workers:
        print_table(("host", "slot", "pid", "device", "state", "current_job_id", "jobs_done", "rss_mb",
                      "fallback_from", "last_error"),
                     [[w.host, w.slot, w.pid, w.device, w.state, w.current_job_id, w.jobs_done, megabytes(w.rss_mb),
                       w.fallback_from, w.last_error] for w in workers], wide=args.wide)
    if len(info["devices"]) > 1:
        print_table(("host", "device", "slots", "states", "rss_mb", "jobs_done", "running_jobs"),
                    [[d["host"], d["device"], " ".join(map(str, d["slots"])), d["states"], megabytes(d["rss_mb"]),
                      d["jobs_done"], " ".join(map(str, d["running_jobs"])) or "-"] for d in info["devices"]],
                    wide=args.wide)
    for job in running_jobs:
        print(f"running job {job.id}: {job.source_name} on {job.device or '?'}"
              + (f": {progress_text(job)}" if progress_text(job) else ""))
    for f in info["last_failures"]:
        print(f"failed job {f['id']}: {f['source_name']}: {f['error_kind']}: {f['error_message']}")
    _print_inbox(config, inbox, running=running)
    return ExitCode.OK if running else ExitCode.FAILED


def devices_summary(workers: list[Any]) -> list[dict[str, Any]]:
    """One entry per device of each host (a card, or the CPU): its slots, their states,
    their memory, the jobs they finished and the ones they run now."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for w in workers:
        groups.setdefault((w.host, w.device or "?"), []).append(w)
    return [{"host": host, "device": device, "slots": [w.slot for w in rows],
             "states": ", ".join(f"{n} {state}" for state, n in sorted(Counter(w.state for w in rows).items())),
             "rss_mb": sum(w.rss_mb for w in rows if w.rss_mb) or None,
             "jobs_done": sum(w.jobs_done for w in rows),
             "running_jobs": [w.current_job_id for w in rows if w.current_job_id is not None]}
            for (host, device), rows in sorted(groups.items())]


def _print_inbox(config: Config, inbox: InboxListing, *, running: bool) -> None:
    if inbox.problem:
        print(f"inbox {config.paths.inbox}: {inbox.problem}")
    if not inbox.files:
        if not inbox.problem:
            print("inbox: no file waiting")
        return
    print(f"inbox: {len(inbox.files) + inbox.more} file(s) not taken yet")
    # one line per file, not a table: a reason is longer than a table's cell
    for entry in inbox.files:
        print(f"  {entry.state:8}  {entry.name}: {entry.detail(inbox.now, running=running)}")
    if inbox.more:
        print(f"  … and {inbox.more} more")
