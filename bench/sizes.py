"""5. Models of the real sizes (random weights, real dimensions).

`daemon.engine.tiny_models.build_tiny_models(real_sizes=True)` (~1.3 GB, built once into bench/.cache/models-real).
Everything runs in one child process, as a worker would, through the worker's real
code path: `Engine.load`, then `daemon.jobs.worker.Worker.process` for each job (claimed from
a real `Store`, outputs written, source archived), with `Engine.transcribe` timed inside.

* model load time (funasr import separately), RSS after load = RSS of one worker;
* per-job overhead of the worker = (claim + `Worker.process`) − `Engine.transcribe`,
  on ~30-s two-voice recordings, against the transcribe time;
* RSS drift over N short jobs (200; 40 with --quick): RSS after each job, drift =
  (RSS after the last job − RSS after warm-up) / RSS after warm-up, warm-up = first 10 jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO,
    Result,
    Target,
    clean_env,
    ensure_models,
    footer,
    header,
    loadavg,
    percentile,
    table,
)
from bench.corpus import corpus, short_clip

WARMUP = 10


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(models: str, threads: int, long_files: list[str], short: str, short_jobs: int) -> dict:
    """Runs inside the measuring process (python -m bench.sizes --child …)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    out: dict = {"rss_start": _rss()}
    t0 = time.monotonic()
    from daemon.engine.models import import_funasr, resolve_model_dirs

    import_funasr()
    out["import_seconds"] = time.monotonic() - t0
    out["rss_imported"] = _rss()
    from daemon import config as config_mod
    from daemon.jobs import spool
    from daemon.engine.transcriber import Engine
    from daemon.store.db import migrate
    from daemon.store import Store
    from daemon.jobs.worker import Worker, WorkerSpec

    dirs = resolve_model_dirs(Path(models), asr="paraformer-zh", vad="fsmn-vad", punc="ct-punc-c", spk="cam++")
    t0 = time.monotonic()
    engine = Engine.load(dirs, device="cpu", ncpu=threads)
    out["load_seconds"] = time.monotonic() - t0
    out["rss_loaded"] = _rss()

    tmp = Path(tempfile.mkdtemp(prefix="spkd-bench-sizes-"))
    try:
        raw = {"paths": {k: k for k in ("inbox", "outbox", "archive", "failed", "spool", "state")},
               "models": {"dir": models}, "workers": {"device": "cpu"}}
        config = config_mod.from_dict(raw, base_dir=tmp, env={})
        url = config.database_url
        migrate(url)
        store = Store(url)
        worker = Worker(config, WorkerSpec(slot=0, device="cpu", env={}, threads=threads), store=store)
        worker.engine = engine
        timings: list[float] = []
        original = engine.transcribe

        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                timings.append(time.monotonic() - started)

        engine.transcribe = timed  # type: ignore[method-assign]
        releases: list[float] = []
        original_release = engine.release

        def timed_release() -> None:
            started = time.monotonic()
            try:
                original_release()
            finally:
                releases.append(time.monotonic() - started)

        engine.release = timed_release  # type: ignore[method-assign]

        def one(path: Path, i: int) -> tuple[float, float, float]:
            name = f"{path.stem}-{i}{path.suffix}"
            target = spool.new_slot(config.paths.spool) / name
            target.parent.mkdir(parents=True)
            shutil.copyfile(path, target)
            store.enqueue(source_name=name, spool_path=str(target), output_stem=Path(name).stem, sha256=None,
                          size_bytes=target.stat().st_size, dedup_key=None)
            started = time.monotonic()
            released = len(releases)
            job = store.claim(slot=0, pid=worker.pid, device="cpu", lease_seconds=600)
            assert job is not None
            worker.process(job)
            total = time.monotonic() - started
            row = store.job(job.id)
            assert row and row.state == "done", row
            return total, timings[-1], sum(releases[released:])

        out["long"] = []
        for i, f in enumerate(long_files):
            total, transcribe, release = one(Path(f), i)
            out["long"].append({"name": Path(f).name, "total": total, "transcribe": transcribe,
                                "overhead": total - transcribe, "release": release})
        out["rss_after_long"] = _rss()
        rss: list[float] = []
        short_rows = []
        for i in range(short_jobs):
            total, transcribe, release = one(Path(short), i)
            rss.append(_rss())
            short_rows.append((total, transcribe, release))
        out["short_rss"] = rss
        out["short_total"] = [row[0] for row in short_rows]
        out["short_transcribe"] = [row[1] for row in short_rows]
        out["short_release"] = [row[2] for row in short_rows]
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(quick: bool = False) -> Result:
    short_jobs = 30 if quick else 200
    n_long = 0 if quick else 1
    threads = os.cpu_count() or 1
    started = header("sizes", quick, f"real-size random models: load, RSS, per-job overhead on {n_long} × ~30 s, "
                                     f"RSS drift over {short_jobs} short jobs ({threads} threads, one worker)")
    models = ensure_models(real_sizes=True)
    size_mb = sum(p.stat().st_size for p in models.rglob("*") if p.is_file()) / 2**20
    longs = corpus(n_long) if n_long else []
    short = short_clip()
    began = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "bench.sizes", "--child", str(models), str(threads), str(short),
                           str(short_jobs), *map(str, longs)], capture_output=True, text=True, env=clean_env(),
                          cwd=REPO, check=False)
    wall = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"bench.sizes child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    table(f"Real-size models ({size_mb:,.0f} MiB on disk): load and memory of one worker",
          ["what", "value"], [
              ["import funasr + torch, s", out["import_seconds"]],
              ["Engine.load (4 models), s", out["load_seconds"]],
              ["RSS at start, MiB", out["rss_start"]],
              ["RSS after import, MiB", out["rss_imported"]],
              ["RSS after load = RSS per idle worker, MiB", out["rss_loaded"]],
              ["RSS after the ~30-s jobs, MiB", out["rss_after_long"]],
              ["child process wall, s", wall],
          ])
    table("Real-size models: per-job overhead of the worker on ~30-s recordings",
          ["file", "claim + Worker.process s", "Engine.transcribe s", "overhead ms", "overhead %",
           "of which Engine.release ms", "overhead without it %"],
          [[r["name"], r["total"], r["transcribe"], 1000 * r["overhead"], 100 * r["overhead"] / r["transcribe"],
            1000 * r["release"], 100 * (r["overhead"] - r["release"]) / r["transcribe"]] for r in out["long"]])
    rss = out["short_rss"]
    base = rss[min(WARMUP, len(rss)) - 1]
    marks = sorted({1, WARMUP, len(rss) // 4, len(rss) // 2, 3 * len(rss) // 4, len(rss)} - {0})
    table(f"Real-size models: RSS over {len(rss)} short jobs (~1.5 s of audio each)",
          ["after job", "RSS MiB", "vs after warm-up (%)"],
          [[m, rss[m - 1], 100 * (rss[m - 1] - base) / base] for m in marks])
    st, sx = out["short_total"], out["short_transcribe"]
    short_over = [t - x for t, x in zip(st, sx)]
    table("Real-size models: short jobs", ["what", "p50", "p99"], [
        ["claim + Worker.process s", percentile(st, 50), percentile(st, 99)],
        ["Engine.transcribe s", percentile(sx, 50), percentile(sx, 99)],
        ["overhead ms", 1000 * percentile(short_over, 50), 1000 * percentile(short_over, 99)],
        ["of which Engine.release (gc.collect) ms", 1000 * percentile(out["short_release"], 50),
         1000 * percentile(out["short_release"], 99)],
    ])
    result = Result("sizes")
    long_over = (sum(r["overhead"] for r in out["long"]) / sum(r["transcribe"] for r in out["long"])
                 if out["long"] else float("nan"))
    drift = (rss[-1] - base) / base
    result.ratio("worker overhead / transcribe, ~30-s jobs", long_over)
    result.ratio("worker overhead / transcribe, short jobs", sum(short_over) / sum(sx))
    if out["long"]:
        result.ratio("Engine.release share of the worker overhead, ~30-s jobs",
                     sum(r["release"] for r in out["long"]) / sum(r["overhead"] for r in out["long"]))
    result.ratio("Engine.release share of the worker overhead, short jobs", sum(out["short_release"]) / sum(short_over),
                 "a full gc.collect() after every job (daemon/engine/transcriber.py Engine.release)")
    result.ratio("RSS per worker / model size on disk", out["rss_loaded"] / size_mb)
    result.ratio(f"RSS drift after warm-up over {len(rss)} jobs", drift)
    result.ratio(f"RSS growth, after load → after job {len(rss)}", (rss[-1] - out["rss_loaded"]) / out["rss_loaded"],
                 "includes first-inference allocations")
    if out["long"]:
        result.targets.append(Target("daemon overhead inside the worker, real sizes, ~30-s recordings",
                                     100 * long_over, 2.0, False, " %"))
    result.targets += [
        Target(f"RSS drift over {len(rss)} jobs{'' if len(rss) >= 200 else ' (quick: fewer than 200)'}",
               100 * drift, 5.0, False, " %"),
    ]
    result.notes.append(f"load average at the end: {loadavg()}")
    result.report()
    footer("sizes", started)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        models_arg, threads_arg, short_arg, n_arg, *longs_arg = sys.argv[2:]
        print(json.dumps(child(models_arg, int(threads_arg), longs_arg, short_arg, int(n_arg))), flush=True)
    else:
        main()
