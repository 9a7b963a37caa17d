"""The alternatives to the daemon, as one process: load the models once, transcribe
the given files in order with `daemon.engine.transcriber.Engine` (the engine the worker uses),
print one JSON object. `python -m bench.infer --models DIR --threads N FILE…`

Used for (a) the plain loop (all files in one process) and (b) one process per file
(this module run once per file, loading the models each time), and to measure the
pure inference time of each file, which defines the limit of the end-to-end benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes over the files; per file, `seconds` is the fastest run (the least disturbed "
                             "by other load on the machine), `first_seconds` the first; `pass_ends` are seconds "
                             "from process start to the end of each pass")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # what the supervisor sets for a worker, before torch
    from pathlib import Path

    t0 = time.monotonic()
    from loguru import logger

    from daemon.engine.transcriber import Engine
    from daemon.engine.models import resolve_model_dirs

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    dirs = resolve_model_dirs(Path(args.models), asr="paraformer-zh", vad="fsmn-vad", punc="ct-punc-c", spk="cam++")
    t1 = time.monotonic()
    engine = Engine.load(dirs, device="cpu", ncpu=args.threads)
    t2 = time.monotonic()
    import psutil

    born = psutil.Process().create_time()
    per_file: dict[str, dict] = {}
    pass_ends = []
    for _ in range(max(1, args.repeat)):  # whole passes over the list: pass 1 is a plain loop
        for name in args.files:
            started = time.monotonic()
            transcript = engine.transcribe(Path(name))
            seconds = time.monotonic() - started
            engine.release()  # as the worker does after each job (not timed: it is the daemon's overhead)
            row = per_file.setdefault(name, {"name": Path(name).name, "all_seconds": [],
                                             "audio_seconds": transcript.audio_seconds,
                                             "segments": len(transcript.segments),
                                             "speakers": len(transcript.speakers)})
            row["all_seconds"].append(seconds)
        pass_ends.append(time.time() - born)
    files = [{**row, "seconds": min(row["all_seconds"]), "first_seconds": row["all_seconds"][0]}
             for row in per_file.values()]
    print(json.dumps({"import_seconds": t1 - t0, "load_seconds": t2 - t1, "files": files, "pass_ends": pass_ends,
                      "rss_mb": psutil.Process().memory_info().rss / 2**20}), flush=True)


if __name__ == "__main__":
    main()
