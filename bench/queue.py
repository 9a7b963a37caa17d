"""1. Queue: claim-and-complete operations per second on SQLite with 1, 2, 4, 8 processes.

A fresh database per process count (migrated with the real Alembic migrations), jobs
pre-enqueued through `Store.enqueue` with distinct dedup keys (as the watcher does),
then N spawned processes, each with its own `Store`, loop `claim` → `complete` until the
queue is empty. Throughput = completed jobs / (last finish − common start); latency is
the wall time of each `Store.claim` call (including those that wait on the write lock).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

from bench.common import Result, Target, footer, header, percentile, table

PROCESS_COUNTS = (1, 2, 4, 8)


def _claimer(url: str, slot: int, start: mp.synchronize.Event, ready: mp.Queue, out: mp.Queue) -> None:
    from daemon.store import Store

    store = Store(url)
    pid = os.getpid()
    store.counts()  # open the connection before the clock starts
    ready.put(slot)
    start.wait()
    latencies: list[float] = []
    done = 0
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        job = store.claim(slot=slot, pid=pid, device="cpu", lease_seconds=60)
        latencies.append(time.perf_counter() - t0)
        if job is None:
            latencies.pop()  # the final empty claim is not a claim
            break
        ok = store.complete(job.id, pid=pid, audio_seconds=1.0, processing_seconds=0.01, speakers=1,
                            outputs=["x.json"], device="cpu")
        assert ok, job.id
        done += 1
    out.put({"slot": slot, "done": done, "latencies": latencies, "began": began, "ended": time.perf_counter()})
    store.close()


def run_one(procs: int, jobs: int, workdir: Path) -> dict:
    from daemon.store.db import migrate
    from daemon.store import Store

    url = f"sqlite:///{workdir / f'queue-{procs}.db'}"
    migrate(url)
    store = Store(url)
    for i in range(jobs):
        store.enqueue(source_name=f"f{i}.wav", spool_path=f"/spool/{i}/f{i}.wav", output_stem=f"f{i}",
                      sha256=f"{i:064x}", size_bytes=1000, dedup_key=f"{i:064x}:{{}}")
    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    children = [ctx.Process(target=_claimer, args=(url, slot, start, ready, out)) for slot in range(procs)]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=120)
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in children]
    elapsed = max(r["ended"] for r in results) - t0  # perf_counter is system-wide (CLOCK_MONOTONIC)
    for child in children:
        child.join(timeout=30)
    counts = store.counts()
    store.close()
    completed = sum(r["done"] for r in results)
    assert completed == jobs and counts.get("done") == jobs, (completed, counts)
    lat = [x for r in results for x in r["latencies"]]
    return {"procs": procs, "jobs": completed, "seconds": elapsed, "ops": completed / elapsed,
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": max(lat) * 1000, "per_proc": [r["done"] for r in results]}


def main(quick: bool = False) -> Result:
    jobs = 400 if quick else 1000
    started = header("queue", quick, f"claim→complete per second on SQLite, {jobs} jobs per run, "
                                      f"{'/'.join(map(str, PROCESS_COUNTS))} spawned processes")
    rows = []
    with tempfile.TemporaryDirectory(prefix="spkd-bench-queue-") as tmp:
        for procs in PROCESS_COUNTS:
            rows.append(run_one(procs, jobs, Path(tmp)))
    table("Queue: claim + complete on SQLite (WAL, synchronous=NORMAL, BEGIN IMMEDIATE)",
          ["processes", "jobs", "seconds", "claim+complete/s", "claim p50 ms", "claim p99 ms", "claim max ms",
           "jobs per process"],
          [[r["procs"], r["jobs"], r["seconds"], r["ops"], r["p50_ms"], r["p99_ms"], r["max_ms"],
            "/".join(map(str, r["per_proc"]))] for r in rows])
    by = {r["procs"]: r for r in rows}
    result = Result("queue")
    for procs in PROCESS_COUNTS[1:]:
        result.ratio(f"ops/s {procs} proc / 1 proc", by[procs]["ops"] / by[1]["ops"])
    result.ratio("claim p99 8 proc / 1 proc", by[8]["p99_ms"] / by[1]["p99_ms"])
    result.targets.append(Target("queue claim+complete/s with 4 processes", by[4]["ops"], 500, True, "/s"))
    result.report()
    footer("queue", started)
    return result


if __name__ == "__main__":
    main()
