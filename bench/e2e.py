"""3 + 4. End to end against the limit and against the alternatives (tiny models, real FunASR).

K distinct ~30-s two-voice recordings (bench/corpus.py) go through:

* (a) a plain loop in one process, models loaded once (`python -m bench.infer`, all files).
  Its per-file `Engine.transcribe` times are the *pure inference* times; their sum / W
  is the limit for W workers.
* the real daemon (`python -m daemon run`, tests/support/daemon.py harness, product
  timing defaults: settle 2 s, poll 0.5 s), W = 1 and W = 2 workers, started and ready
  before the files are dropped; all K files are renamed into the inbox at once.
  Wall = first drop → last `done` (jobs.finished_at).
* (b) one process per file, loading the models each time (`python -m bench.infer FILE`).

In-worker overhead per job = (`done` event − `claimed` event) − the worker's own
`Engine.transcribe` time (timing.transcribe_seconds in state/transcripts/<id>.json):
claim-to-done bookkeeping, dedup lookup, heartbeats, writers, archive, gc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO,
    Result,
    Target,
    clean_env,
    daemon_config,
    ensure_models,
    footer,
    header,
    loadavg,
    parse_utc,
    percentile,
    table,
    utcnow,
)
from bench.corpus import corpus

REPEAT = 2


def run_infer(models: Path, threads: int, files: list[Path], repeat: int = 1) -> tuple[float, dict]:
    started = time.monotonic()
    proc = subprocess.run([PYTHON, "-m", "bench.infer", "--models", str(models), "--threads", str(threads),
                           "--repeat", str(repeat), *map(str, files)], capture_output=True, text=True, env=clean_env(), cwd=REPO, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"bench.infer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def run_daemon(models: Path, workers: int, files: list[Path], root: Path, timeout: float) -> dict:
    from tests.support.daemon import Daemon

    config = daemon_config(models={"dir": str(models)}, workers={"count": workers, "device": "cpu"})
    d = Daemon(root, config=config, fake_engine=False)
    d.env = clean_env()  # Daemon added PYTHONPATH and dropped SPKD_*; same thing, one place
    stage = root / "stage"
    stage.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, stage / f.name)
    with d:
        boot = time.monotonic()
        d.start(timeout=600)
        boot = time.monotonic() - boot
        load_before = loadavg()
        dropped = utcnow()
        for f in files:
            os.rename(stage / f.name, d.inbox / f.name)
        rows = d.wait_finished(len(files), timeout=timeout)
        events = d.events()
        assert d.stop() == 0, d.log()[-3000:]
    bad = [r for r in rows if r["state"] != "done"]
    assert not bad, bad
    per_job = []
    for r in rows:
        ev = {e["kind"]: parse_utc(e["at"]) for e in events if e["job_id"] == r["id"]}
        doc = json.loads((root / "state" / "transcripts" / f"{r['id']}.json").read_text())
        transcribe = float(doc["timing"]["transcribe_seconds"])
        span = (ev["done"] - ev["claimed"]).total_seconds()
        per_job.append({"name": r["source_name"], "queued": (ev["queued"] - dropped).total_seconds(),
                        "claimed": (ev["claimed"] - dropped).total_seconds(), "span": span,
                        "transcribe": transcribe, "overhead": span - transcribe, "slot": r["slot"]})
    last_done = max(parse_utc(r["finished_at"]) for r in rows)
    first_queued = min(p["queued"] for p in per_job)
    wall = (last_done - dropped).total_seconds()
    return {"workers": workers, "wall": wall, "wall_from_queued": wall - first_queued, "boot": boot,
            "jobs": per_job, "load": f"{load_before} → {loadavg()}"}


def main(quick: bool = False, files: int | None = None) -> Result:
    k = files or (2 if quick else 6)
    started = header("e2e", quick, f"{k} distinct ~30-s two-voice recordings, tiny models, real FunASR, "
                                   f"daemon W=1/W=2 vs limit vs loop vs process-per-file")
    models = ensure_models(real_sizes=False)
    recs = corpus(k)
    cores = os.cpu_count() or 1
    result = Result("e2e")

    print(f"(a) plain loop, one process, models loaded once ({cores} threads, {REPEAT} passes) … "
          f"load average {loadavg()}", flush=True)
    _, loop = run_infer(models, cores, recs, repeat=REPEAT)
    # (a) = the first pass: process start → last file of the first pass done. The limit uses
    # each file's fastest of REPEAT passes, so that a burst of other load on the (shared)
    # machine does not inflate the limit the daemon is held to.
    loop_wall = loop["pass_ends"][0]
    pure = {f["name"]: f["seconds"] for f in loop["files"]}
    audio = sum(f["audio_seconds"] for f in loop["files"])
    inference = sum(pure.values())
    loop_inference = sum(f["first_seconds"] for f in loop["files"])

    print(f"(a') plain loop with 1 thread (what each W=2 worker gets) … load average {loadavg()}", flush=True)
    loop1_wall, loop1 = run_infer(models, 1, recs, repeat=REPEAT)
    inference1 = sum(f["seconds"] for f in loop1["files"])

    daemons = {}
    with tempfile.TemporaryDirectory(prefix="spkd-bench-e2e-") as tmp:
        for w in (1, 2):
            print(f"daemon W={w} … load average {loadavg()}", flush=True)
            daemons[w] = run_daemon(models, w, recs, Path(tmp) / f"w{w}", timeout=max(300.0, 20 * inference))

    print(f"(b) one process per file ({k} processes, models loaded each time) … load average {loadavg()}",
          flush=True)
    b_started = time.monotonic()
    b_runs = [run_infer(models, cores, [f]) for f in recs]
    b_wall = time.monotonic() - b_started

    limit = {w: inference / w for w in (1, 2)}
    matched_limit2 = inference1 / 2  # each of 2 workers runs with cores/2 = 1 thread
    table(f"Per file: pure inference (plain loop, {cores} threads) vs the daemon's workers",
          ["file", "audio s", "(a) loop s", f"pure inference s (best of {REPEAT})", f"same, 1 thread (best of {REPEAT})",
           "W=1 worker transcribe s", "W=1 in-worker overhead ms",
           "W=2 worker transcribe s", "W=2 in-worker overhead ms", "(b) process wall s"],
          [[f["name"], f["audio_seconds"], f["first_seconds"], f["seconds"], f1["seconds"],
            next(j["transcribe"] for j in daemons[1]["jobs"] if j["name"] == f["name"]),
            1000 * next(j["overhead"] for j in daemons[1]["jobs"] if j["name"] == f["name"]),
            next(j["transcribe"] for j in daemons[2]["jobs"] if j["name"] == f["name"]),
            1000 * next(j["overhead"] for j in daemons[2]["jobs"] if j["name"] == f["name"]),
            b[0]] for f, f1, b in zip(loop["files"], loop1["files"], b_runs)])
    rows = [
        [f"limit W=1 (Σ pure inference / 1; best of {REPEAT}, {cores} threads)", limit[1], "", ""],
        ["limit W=2 (Σ pure inference / 2)", limit[2], "", ""],
        ["limit W=2, thread-matched (Σ 1-thread inference / 2)", matched_limit2, "", ""],
        ["(a) plain loop: process start → first pass done", loop_wall,
         f"import+load {loop['import_seconds'] + loop['load_seconds']:.1f} s + Σ inference {loop_inference:.1f} s",
         ""],
        [f"(a') plain loop, 1 thread, each file {REPEAT}×", loop1_wall,
         f"import+load {loop1['import_seconds'] + loop1['load_seconds']:.1f} s; Σ best-of-{REPEAT} {inference1:.1f} s",
         ""],
        ["(b) one process per file, sequential", b_wall,
         (f"per process p50: import+load "
          f"{percentile([b[1]['import_seconds'] + b[1]['load_seconds'] for b in b_runs], 50):.1f} s"), ""],
    ]
    for w in (1, 2):
        dd = daemons[w]
        rows.append([f"daemon W={w}: first drop → last done", dd["wall"],
                     (f"first queued → last done {dd['wall_from_queued']:.1f} s; workers booted in {dd['boot']:.1f} s "
                      f"before the drop"), dd["load"]])
    table(f"End to end: {k} files, {audio:.0f} s of audio, {audio / k:.1f} s each", ["run", "wall s", "detail",
                                                                                     "load average"], rows)

    w1, w2 = daemons[1], daemons[2]
    inworker = {w: sum(j["overhead"] for j in daemons[w]["jobs"]) / sum(j["transcribe"] for j in daemons[w]["jobs"])
                for w in (1, 2)}
    result.ratio("daemon W=1 wall / limit W=1", w1["wall"] / limit[1], "1.00 = no overhead at all")
    result.ratio("daemon W=2 wall / limit W=2", w2["wall"] / limit[2])
    result.ratio("daemon W=2 wall / thread-matched limit W=2", w2["wall"] / matched_limit2)
    result.ratio("pure inference, 2 threads / 1 thread", inference / inference1,
                 "> 1 means the second thread costs time on this machine")
    result.ratio("daemon W=1 (first queued → last done) / limit W=1", w1["wall_from_queued"] / limit[1],
                 "the settle time of the drop taken out")
    result.ratio("W=2 speed-up (daemon W=1 wall / daemon W=2 wall)", w1["wall"] / w2["wall"])
    result.ratio("W=2 speed-up, first queued → last done", w1["wall_from_queued"] / w2["wall_from_queued"],
                 "the settle time common to both taken out")
    result.ratio("daemon W=1 wall / (a) plain loop wall", w1["wall"] / loop_wall,
                 "(a) pays start + import + load once; the daemon's workers were warm")
    result.ratio("daemon W=2 wall / (a) plain loop wall", w2["wall"] / loop_wall)
    result.ratio("(b) process-per-file wall / daemon W=1 wall", b_wall / w1["wall"], "how much faster the daemon is")
    result.ratio("(b) process-per-file wall / daemon W=2 wall", b_wall / w2["wall"])
    result.ratio("in-worker overhead / worker transcribe time, W=1", inworker[1])
    result.ratio("in-worker overhead / worker transcribe time, W=2", inworker[2])
    result.ratio("worker transcribe W=1 / pure inference", sum(j["transcribe"] for j in w1["jobs"]) / inference)
    result.ratio("worker transcribe W=2 / pure inference", sum(j["transcribe"] for j in w2["jobs"]) / inference,
                 "each W=2 worker has 1 thread; the loop had all cores")
    result.targets += [
        Target("daemon overhead, end to end (W=1 wall / limit − 1)", 100 * (w1["wall"] / limit[1] - 1), 2.0, False,
               " %", "includes the 2-s settle of the drop and the 0.5-s poll"),
        Target("daemon overhead inside the worker (W=1, tiny models)", 100 * inworker[1], 2.0, False, " %"),
        Target("W=2 on 2 cores vs W=1 (throughput)", w1["wall"] / w2["wall"], 1.7, True, "×"),
        Target("daemon (W=1) faster than (b) one process per file", b_wall / w1["wall"], 3.0, True, "×"),
    ]
    result.report()
    footer("e2e", started)
    return result


if __name__ == "__main__":
    main()
