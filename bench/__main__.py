"""`python -m bench [NAME…] [--quick] [--files K]` — run the benchmarks (all by default).

Names: queue, start, e2e, sizes, search, diarization, separation, voices. `make bench BENCH_ARGS="--quick"` for the short pass.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import footer, loadavg, machine_line, utcnow

BENCHMARKS = {
    "queue": "claim-and-complete per second on SQLite with 1/2/4/8 processes",
    "start": "drop to start: stable file → worker starts it, idle workers",
    "e2e": "end to end against the limit, against a plain loop and one process per file (tiny models)",
    "sizes": "real-size models: load time, RSS per worker, per-job overhead, RSS drift",
    "search": "full-text search over 10,000 hours of transcripts: latency, index size, insert cost per job",
    "diarization": "who spoke when on dialogs of held-out voices: DER/JER (pyannote.metrics), bare FunASR vs spkd",
    "separation": "how far apart the tiny CAM++ puts voices it never heard: cosine same vs different voice",
    "voices": "naming speakers after the voice library: true and false names per match threshold and margin",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"which to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer jobs and files (~a few minutes)")
    parser.add_argument("--files", type=int, default=None, help="e2e: number of recordings (default 6, quick 2)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (choose from {', '.join(BENCHMARKS)})")
    names = args.names or list(BENCHMARKS)
    started = time.monotonic()
    print(f"spkd benchmarks {'(--quick) ' if args.quick else ''}{utcnow().isoformat(timespec='seconds')}Z\n"
          f"machine: {machine_line()}\ncommand: {' '.join([sys.executable, '-m', 'bench', *(argv or sys.argv[1:])])}\n"
          f"load average at start: {loadavg()}", flush=True)
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        kwargs = {"files": args.files} if name == "e2e" else {}
        results.append(module.main(quick=args.quick, **kwargs))
    print(f"\n{'=' * 78}\nSummary of targets\n{'=' * 78}")
    for result in results:
        for target in result.targets:
            print(f"[{result.name}] {target.line()}")
    footer("all" if len(names) > 1 else names[0], started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
