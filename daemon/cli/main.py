"""`spkd`: argument parsing and printing only; the work happens in the rooms it calls.

Fast paths (`jobs`, `sql`, `search`, `status`, `db`, `web`, `voices list`, `speakers`) never load torch
or funasr. The helpers the command modules share are in daemon/cli/common.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path
from typing import Any, Sequence

from daemon import __version__
from daemon.cli.common import (
    add_command,
    add_wide,
    display_width,
    job_id,
    load_config,
    open_store,
    opened_store,
    pad,
    print_json,
    print_table,
    quiet_logging,
)
from daemon.cli.status import cmd_status, progress_text
from daemon.errors import DatabaseUnavailableError, ExitCode, JobRefusedError, SpkdError

__all__ = ["build_parser", "command_name", "main", "progress_text"]


# --- commands ----------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    import os

    from daemon.logs import setup_logging
    from daemon.folders import prepare_folders
    from daemon.jobs.worker import ENGINE_FACTORY_ENV
    from daemon.service.supervisor import Supervisor

    config = load_config(args)
    prepare_folders(config)  # before the log file goes under paths.state
    if not os.environ.get(ENGINE_FACTORY_ENV):
        _check_models(config)
    setup_logging(config)
    return Supervisor(config).run()


def _model_dirs(config: Any) -> Any:
    from daemon.engine.models import configured_model_dirs

    return configured_model_dirs(config.models)


def _check_models(config: Any) -> None:
    from daemon.engine.models import require_model_dirs

    require_model_dirs(_model_dirs(config))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from daemon.store.db import check_usable, current_revision, display_url, migrate, translate_unusable
    from daemon.jobs.results import backfill_segments
    from daemon.store import Store

    config = load_config(args)
    check_usable(config.database_url)
    with translate_unusable(config.database_url):
        migrate(config.database_url)
        store = Store(config.database_url, host=config.host)
        try:
            filled = backfill_segments(config, store)
            indexed = _fill_search_index(store)
        finally:
            store.close()
    if not indexed:
        return ExitCode.INTERRUPTED
    print(f"database {display_url(config.database_url)} at revision {current_revision(config.database_url)}")
    if filled.jobs:
        print(f"segments: filled {filled.jobs} earlier job(s) with {filled.segments} row(s) from stored transcripts")
    if filled.missing:
        print(f"segments: {len(filled.missing)} done job(s) have no stored transcript, so their text is not "
              "searchable", file=sys.stderr)
    return ExitCode.OK


def _fill_search_index(store: Any) -> bool:
    """Migration 0010's backfill of the index of grams, saying first how long it will
    take and then how far it is; False when Ctrl-C stopped it (it goes on next time)."""
    import time

    from daemon.progress import duration_text

    pending = store.search_backfill()
    if pending is None:
        return True
    print(f"search index for 1- and 2-character queries: {pending.total - pending.done:,} segments to index, about "
          f"{duration_text(store.search_backfill_seconds(pending))} (the daemon may run meanwhile; Ctrl-C stops, "
          "and `spkd db upgrade` or the daemon's start goes on where it stopped)", flush=True)
    started = shown = time.monotonic()

    def progress(state: Any) -> None:
        nonlocal shown
        now = time.monotonic()
        if now - shown >= 5 and state.done > pending.done:
            shown = now
            left = (state.total - state.done) * (now - started) / (state.done - pending.done)
            print(f"  {state.describe()}, about {duration_text(left)} left", flush=True)

    try:
        store.backfill_search_index(progress)
    except KeyboardInterrupt:
        now = store.search_backfill()
        print(f"search index: stopped at {now.describe() if now else 'the end'}; `spkd db upgrade` or the daemon's "
              "start goes on from there", file=sys.stderr)
        return False
    if store.search_backfill() is not None:
        print("search index: another spkd is building it (PostgreSQL); short queries use it when it is done")
    else:
        print(f"search index: done in {duration_text(time.monotonic() - started)}")
    return True


JOB_COLUMNS = ("id", "state", "source_name", "device", "attempts", "audio_seconds", "processing_seconds", "rtf",
               "speakers", "created_at", "finished_at", "error_kind", "progress")


def cmd_jobs(args: argparse.Namespace) -> int:
    config = load_config(args)
    with opened_store(config) as store:
        rows = store.jobs(limit=args.limit, state=args.state)
    if args.json:
        print_json([dataclasses.asdict(r) for r in rows])
    else:
        print_table(JOB_COLUMNS, [[getattr(r, c) for c in JOB_COLUMNS[:-1]] + [progress_text(r)] for r in rows],
                    wide=args.wide)
    return ExitCode.OK


def cmd_sql(args: argparse.Namespace) -> int:
    from daemon.errors import ReadOnlyError
    from daemon.store.sqlconsole import query_readonly, readable_rows

    config = load_config(args)
    try:
        columns, rows = query_readonly(config.database_url, args.statement, timeout_seconds=args.timeout or None,
                                       max_rows=args.max_rows)
    except ReadOnlyError as exc:
        print(f"spkd sql: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    if len(rows) > args.max_rows:
        rows = rows[:args.max_rows]
        print(f"spkd sql: showing the first {args.max_rows} rows (--max-rows)", file=sys.stderr)
    rows = readable_rows(rows)
    if args.json:
        print_json([dict(zip(columns, row)) for row in rows])
    else:
        print_table(columns, rows, wide=args.wide)
    return ExitCode.OK


# Marks around a match: reverse video in a terminal (NO_COLOR respected), brackets otherwise.
TERMINAL_MARK = ("\x1b[1;7m", "\x1b[0m")
PLAIN_MARK = ("[", "]")


def cmd_search(args: argparse.Namespace) -> int:
    import os

    from daemon.store import search

    since = search.parse_date_bound(args.since, end=False) if args.since else None
    until = search.parse_date_bound(args.until, end=True) if args.until else None

    config = load_config(args)
    with opened_store(config) as store:
        result = search.search(store, args.query, speaker=args.speaker, since=since, until=until,
                               job_id=args.job, limit=args.limit)
    for note in result.notes:
        print(f"spkd search: {note}", file=sys.stderr)
    if args.json:
        print_json([hit.as_json() for hit in result.hits])
    else:
        before, after = TERMINAL_MARK if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else PLAIN_MARK
        current: int | None = None
        # the text starts in one column whatever the speakers' names (王总 takes 4)
        speaker_width = max((display_width(hit.speaker) for hit in result.hits), default=0)
        for hit in result.hits:
            if hit.job_id != current:
                if current is not None:
                    print()
                current = hit.job_id
                received = hit.received_at.replace(tzinfo=dt.timezone.utc).astimezone()
                print(f"{hit.source_name}  (job {hit.job_id}, received {received:%Y-%m-%d %H:%M})")
            text = search.mark(hit.text, hit.matches, before=before, after=after)
            print(f"  {search.hms(hit.start_seconds)}-{search.hms(hit.end_seconds)}  "
                  f"{pad(hit.speaker, speaker_width)}  {text}")
    if not result.hits:
        print(f"spkd search: no segment contains {result.query.text!r}", file=sys.stderr)
    elif result.more:
        print(f"spkd search: showing the first {len(result.hits)} hits; there are more (-n N shows more)",
              file=sys.stderr)
    return 0 if result.hits else 1


def cmd_web(args: argparse.Namespace) -> int:
    from daemon.config import listen_problem
    from daemon.logs import setup_logging
    from daemon.web.server import DEFAULT_LISTEN, refusal, serve

    config = load_config(args)
    listen = args.listen or config.web.listen or DEFAULT_LISTEN
    problem = listen_problem(listen) or refusal(config, listen)
    if problem:
        print(f"spkd web: {problem}", file=sys.stderr)
        return ExitCode.ERROR
    open_store(config).close()  # the database must exist at the current schema
    setup_logging(config, role="web")
    serve(config, listen)
    return ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from daemon.service.doctor import diagnose

    config = load_config(args)
    report = diagnose(config)
    if args.json:
        print_json({"ok": report.ok, "checks": report.checks, **report.info})
        return ExitCode.OK if report.ok else ExitCode.FAILED
    info = report.info
    print(f"spkd {info.get('spkd')}  python {info['python']}  torch {info.get('torch')}  funasr {info.get('funasr')}")
    print(f"platform {info['platform']}; config {info.get('config')}")
    dev = info["devices"]
    gpus = [f"{k}:{g['index']} {g['name']}" + (f" ({g['memory_mb']} MB)" if g.get("memory_mb") else "")
            for k in ("cuda", "rocm", "xpu") for g in dev.get(k) or ()]
    print("devices: " + ", ".join(gpus + (["mps"] if dev.get("mps") else []) + [f"cpu ({dev['cpu_cores']} cores)"]))
    for slot in info.get("slots", []):
        print(f"  slot {slot['slot']} -> {slot['device']} ({slot['threads']} threads): {slot['reason']}"
              + (f"; falls back to {', '.join(slot['fallbacks'])}" if slot["fallbacks"] else ""))
    for check in report.checks:
        mark = ("WARN" if check.get("warning") else "ok ") if check["ok"] else "BAD"
        print(f"{mark:4} {check['check']:12} {check['detail']}")
    print("ready to run" if report.ok else "the daemon would not start: fix the BAD lines above")
    return ExitCode.OK if report.ok else ExitCode.FAILED


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from daemon.engine.models import check_model_dirs, fetch_models

    config = load_config(args)
    problems = check_model_dirs(_model_dirs(config))
    if args.if_missing and not problems:
        return ExitCode.OK
    try:
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        paths = fetch_models(Path(args.dir) if args.dir else config.models.dir, progress=progress)
    except SpkdError as exc:
        if problems:
            print("spkd cannot start: these model directories are missing:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
        print(f"spkd: {exc}", file=sys.stderr)
        print("without internet: copy the model directories there by hand, or for a smoke test with "
              f"meaningless text run `spkd models make-tiny {config.models.dir}`", file=sys.stderr)
        return ExitCode.ERROR
    for path in paths:
        print(f"ok  {path}")
    return ExitCode.OK


def cmd_transcribe(args: argparse.Namespace) -> int:
    from daemon.cli.oneshot import parse_list, transcribe_files

    config = load_config(args)
    results = transcribe_files(config, [Path(f) for f in args.files], out_dir=Path(args.out) if args.out else None,
                               formats=parse_list(args.formats), speakers=args.speakers,
                               hotwords=parse_list(args.hotwords), device=args.device, progress=args.progress,
                               voices=args.voices, expected_speakers=parse_list(args.expected_speakers))
    return ExitCode.OK if all(r.ok for r in results) else ExitCode.FAILED


# --- parser ----------------------------------------------------------------------------

def _non_negative_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {2**31 - 1}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from daemon.store.schema import JOB_STATES

    parser = argparse.ArgumentParser(prog="spkd", description="Speaker-labelled transcripts of dropped audio.")
    parser.add_argument("--version", action="version", version=f"spkd {__version__}")
    parser.add_argument("--config", "-c", default=None,
                        help="config file (default: $SPKD_CONFIG, else ./config.json)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    add_command(sub, "run", cmd_run, "run the daemon in the foreground")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="create or migrate the database to the newest schema")
    up.add_argument("--config", "-c", default=argparse.SUPPRESS)
    up.set_defaults(func=cmd_db_upgrade)

    p = add_command(sub, "transcribe", cmd_transcribe,
            "transcribe files now, without the daemon (and without the database unless --voices); exit 1 if any "
            "file failed")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio or video files (anything ffmpeg decodes)")
    p.add_argument("--out", "-o", metavar="DIR", help="output folder (default: beside each input file)")
    p.add_argument("--formats", "-f", action="append", metavar="LIST",
                   help="comma-separated output formats (default: output.formats of the config); repeatable")
    p.add_argument("--speakers", "-s", type=int, metavar="N", help="the number of speakers, when known")
    p.add_argument("--hotwords", action="append", metavar="LIST",
                   help="comma-separated words to favour in recognition; repeatable")
    p.add_argument("--device", "-d", metavar="DEVICE",
                   help="auto, cpu, cuda, cuda:N, rocm, xpu, mps (default: workers.device of the config)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")
    p.add_argument("--voices", action="store_true",
                   help="name speakers after the voice library of the config's database (read only), as the "
                        "daemon does")
    p.add_argument("--expected-speakers", action="append", metavar="LIST",
                   help="comma-separated voice names, the only candidates (implies --voices); repeatable")

    p = add_command(sub, "jobs", cmd_jobs, "recent jobs")
    p.add_argument("--limit", "-n", type=_positive_int, default=20)
    p.add_argument("--state", choices=JOB_STATES)
    p.add_argument("--json", action="store_true")
    add_wide(p)

    from daemon.store.sqlconsole import DEFAULT_MAX_ROWS, DEFAULT_TIMEOUT_SECONDS

    p = add_command(sub, "sql", cmd_sql, "run a read-only SQL query against the job database")
    p.add_argument("statement")
    p.add_argument("--json", action="store_true", help="a JSON list of rows")
    add_wide(p)
    p.add_argument("--timeout", type=_non_negative_seconds, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                   help=f"stop the statement after this long (default {DEFAULT_TIMEOUT_SECONDS:g}; 0: no limit)")
    p.add_argument("--max-rows", type=_positive_int, default=DEFAULT_MAX_ROWS, metavar="N",
                   help=f"show at most this many rows (default {DEFAULT_MAX_ROWS})")

    p = add_command(sub, "search", cmd_search,
                    "find what was said: segments containing QUERY (literal text, any case and "
                    "width), newest recordings first; exit 1 when nothing matches")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--speaker", metavar="NAME", help="only this speaker, exactly as shown (Speaker2, or the name)")
    p.add_argument("--since", metavar="DATE", help="recordings received on or after DATE (2026-11-01, local time; "
                                                   "or a date and time)")
    p.add_argument("--until", metavar="DATE", help="recordings received up to DATE (that whole day; or before a "
                                                   "date and time)")
    p.add_argument("--job", type=job_id, metavar="ID", help="only this job")
    p.add_argument("--limit", "-n", type=_positive_int, default=20, metavar="N", help="at most N hits (default 20)")
    p.add_argument("--json", action="store_true", help="a JSON list of hits")

    p = add_command(sub, "status", cmd_status,
                    "is the daemon running; its slots, queue and recent failures, and the files "
                    "lying in the inbox that are not jobs yet (settling, empty, ignored and why)")
    p.add_argument("--json", action="store_true")
    add_wide(p)

    p = add_command(sub, "web", cmd_web,
                    "serve the dashboard (jobs, transcripts, metrics) from the config's database and "
                    "folders; the daemon need not run")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to serve on (default: web.listen of the config, else 127.0.0.1:8765); any "
                        "address other than loopback needs web.token")

    p = add_command(sub, "doctor", cmd_doctor, "versions, devices, slot plan, models, ffmpeg, disk and database checks")
    p.add_argument("--json", action="store_true")

    models = sub.add_parser("models", help="model directories")
    m_sub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    m_sub.required = True
    p = m_sub.add_parser("fetch", help="download the pinned models from ModelScope into models.dir")
    p.add_argument("--config", "-c", default=argparse.SUPPRESS)
    p.add_argument("--dir", help="target folder (default: models.dir of the config)")
    p.add_argument("--if-missing", action="store_true", help="do nothing when every configured model is present")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")
    p.set_defaults(func=cmd_models_fetch)
    from daemon.cli.models import cmd_models_list, cmd_models_make_tiny

    p = m_sub.add_parser("make-tiny", help="write tiny models for tests and smoke checks: random ASR and "
                         "punctuation, the real FSMN-VAD weights when installed, a CAM++ trained on espeak-ng voices "
                         "(minutes: each stage is shown on stderr, and the time it all took)")
    p.add_argument("dir")
    p.add_argument("--real-sizes", action="store_true", help="real dimensions, random weights (benchmarks)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="one line updated in place (default: when stderr is a terminal); otherwise a line per stage")
    p.set_defaults(func=cmd_models_make_tiny)
    p = m_sub.add_parser("list", help="which models are present, where, their sizes, whether they are tiny test "
                         "models, and the pinned ids and revisions `spkd models fetch` downloads")
    p.add_argument("--config", "-c", default=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    add_wide(p)
    p.set_defaults(func=cmd_models_list)

    from daemon.cli.corrections import register as register_corrections
    from daemon.cli.jobs_admin import register as register_jobs_admin
    from daemon.cli.service import register as register_service
    from daemon.cli.summaries import register as register_summaries
    from daemon.cli.voices import register as register_voices

    register_jobs_admin(sub)
    register_corrections(sub)
    register_service(sub)
    register_summaries(sub)
    register_voices(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `spkd` command; returns its exit status (daemon.errors.ExitCode)."""
    args = build_parser().parse_args(argv)
    prog = command_name(args)
    quiet_logging(prog)  # a command prints what it did; the log says only what goes wrong
    try:
        code = int(args.func(args) or ExitCode.OK)
        # What is still buffered goes out here, where a reader that left is caught below,
        # not in the interpreter's flush at exit (a traceback and status 120).
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `spkd jobs --json | head`: the reader left; say nothing more. Before the generic
        # handler below, which would otherwise take it first.
        _silence_stdout()
        return ExitCode.BROKEN_PIPE
    except DatabaseUnavailableError as exc:
        # Locked by another process past the busy timeout, a server out of reach: one
        # line, and a status that lets a service manager try again (not ERROR, which
        # tells it that restarting cannot help).
        print(f"spkd: the job database cannot be used right now ({exc}); try again", file=sys.stderr)
        return ExitCode.FAILED
    except JobRefusedError as exc:
        # A job that is not there, or not in a state the command applies to: a
        # negative answer with its reason, not bad usage; named after the command, as
        # `spkd retry` and `spkd cancel` name the jobs they refuse.
        print(f"{prog}: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except SpkdError as exc:
        print(f"spkd: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    except OverflowError as exc:
        # A number or date past what the database or the calendar holds (9999-12-31's
        # end): the input's problem, said in one line.
        print(f"{prog}: a number or date is out of range ({exc})", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def command_name(args: argparse.Namespace) -> str:
    """`spkd retry`, `spkd voices rematch`, `spkd db upgrade`: how messages name the command."""
    words = [args.command] + [getattr(args, f"{args.command}_command", None) or ""]
    return " ".join(["spkd", *filter(None, words)])


def _silence_stdout() -> None:
    """Point stdout's descriptor at /dev/null, so that the interpreter's flush at exit
    writes what is left there instead of raising BrokenPipeError again (the pattern the
    Python documentation gives for SIGPIPE)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor behind sys.stdout (embedded, captured)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
