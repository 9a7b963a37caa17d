"""Throughput of N engine processes sharing devices.

    python -m bench.workers --models DIR --devices cuda:0 --per-device 1,2,3 FILE...
    python -m bench.workers --models DIR --devices cuda:0,cuda:1 --per-device 1 FILE...

For each per-device count P, starts P processes per listed device (spawn, each with
CUDA_VISIBLE_DEVICES set to its GPU before torch is imported, as the daemon's slots
are), each loading spkd's Engine; once all are loaded they start together and take
files from one shared queue (`--copies` times the listed files) until it is empty.
Prints audio hours per hour (audio seconds / wall seconds) and the gain over P=1, and
each process's memory: RSS after importing FunASR, after loading, at the end; on CUDA the
memory torch holds on the GPU after loading (allocated, reserved) and its peak; and where
each process's job time went (decoding, FunASR's `generate`, the rest of `transcribe`).

`--threads plan` gives each process the thread count the daemon's slot plan gives it
(`daemon.service.devices.plan_slots` for this machine's cores and the same slots), and every
process sets the environment of `daemon.service.devices.worker_env` before torch is imported,
as the daemon's workers do. `--threads` takes a comma-separated list to compare counts
in one run. `--profile DIR` runs each process's timed loop under cProfile (DIR/*.prof)
and prints the merged profile of the first per-device count's processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any


def _worker(models: str, device: str, ready: Any, go: Any, queue: Any, results: Any, threads: int,
            profile: str | None = None) -> None:
    from daemon.service import devices

    # the daemon's worker environment (thread pools, wait policy, the one visible GPU),
    # set before torch is imported, as daemon.jobs.worker does
    os.environ.update(devices.worker_env(device, threads or os.cpu_count() or 1))
    env_device = devices.torch_device(device)
    import psutil
    import torch

    if threads:
        torch.set_num_threads(threads)
    import daemon.engine.transcriber as engine_module
    from daemon.engine.transcriber import Engine
    from daemon.engine.models import import_funasr, resolve_model_dirs

    me = psutil.Process()
    import_funasr()
    memory = {"rss_imported_mib": me.memory_info().rss / 2**20}
    engine = Engine.load(resolve_model_dirs(Path(models)), device=env_device, batch_size_s=300,
                         ncpu=torch.get_num_threads())
    memory["rss_loaded_mib"] = me.memory_info().rss / 2**20
    if env_device.startswith("cuda"):
        memory["gpu_allocated_loaded_mib"] = torch.cuda.memory_allocated() / 2**20
        memory["gpu_reserved_loaded_mib"] = torch.cuda.memory_reserved() / 2**20
    engine.transcribe(Path(queue.get()))  # warm-up on one of the files queued for it (not counted)
    phases = {"decode_s": 0.0, "generate_s": 0.0, "transcribe_s": 0.0}
    decode, generate = engine_module.decode_audio, engine.generate

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            phases["decode_s"] += time.perf_counter() - began

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            phases["generate_s"] += time.perf_counter() - began

    engine_module.decode_audio = timed_decode
    engine.generate = timed_generate  # type: ignore[method-assign]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    ready.release()
    go.wait()
    done_audio, done = 0.0, 0
    if profiler is not None:
        profiler.enable()
    while True:
        path = queue.get()  # blocking: get_nowait() fails spuriously while another process reads
        if path is None:  # one sentinel per process ends the run
            break
        began = time.perf_counter()
        t = engine.transcribe(Path(path))
        phases["transcribe_s"] += time.perf_counter() - began
        done_audio += t.audio_seconds
        done += 1
    finished = time.monotonic()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    memory.update(phases)
    memory["threads"] = torch.get_num_threads()
    memory["rss_end_mib"] = me.memory_info().rss / 2**20
    if env_device.startswith("cuda"):
        memory["gpu_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        memory["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    results.put((device, done, done_audio, finished, memory))


def plan_threads(devices: list[str], per_device: int) -> int:
    """The thread count the daemon's slot plan gives each of these slots on this machine."""
    from daemon.config import WorkersConfig
    from daemon.service.devices import Gpu, Inventory, cpu_cores, plan_slots

    gpus = tuple(Gpu(index=int(d.partition(":")[2] or 0), name="") for d in devices if d.startswith("cuda"))
    workers = WorkersConfig(device="auto" if gpus else "cpu", per_device=per_device,
                            count=per_device * len(devices))
    plans = plan_slots(workers, Inventory(cuda=gpus, cpu_cores=cpu_cores()))
    return plans[0].threads


def run(models: str, devices: list[str], per_device: int, files: list[str], threads: int,
        profile: Path | None = None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    n = per_device * len(devices)
    queue, results = ctx.Queue(), ctx.Queue()
    for _ in range(n):  # the warm-up files
        queue.put(files[0])
    ready, go = ctx.Semaphore(0), ctx.Event()
    profiles = [str(profile / f"p{per_device}-t{threads}-{i}.prof") if profile else None for i in range(n)]
    procs = [ctx.Process(target=_worker, args=(models, dev, ready, go, queue, results, threads, profiles[i]))
             for i, dev in enumerate(d for d in devices for _ in range(per_device))]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    for f in files:
        queue.put(f)
    for _ in procs:
        queue.put(None)
    began = time.monotonic()
    go.set()
    rows = [results.get() for _ in procs]
    wall = max(r[3] for r in rows) - began
    for p in procs:
        p.join()
    audio = sum(r[2] for r in rows)
    return {"devices": devices, "per_device": per_device, "threads": threads, "processes": n,
            "files": sum(r[1] for r in rows), "audio_seconds": audio, "wall_seconds": wall, "speed": audio / wall,
            "memory": [r[4] for r in rows], "profiles": [p for p in profiles if p]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--devices", default="cuda:0", help="comma-separated, e.g. cuda:0,cuda:1")
    ap.add_argument("--per-device", default="1,2,3", help="comma-separated process counts per device")
    ap.add_argument("--copies", type=int, default=1, help="queue each file this many times")
    ap.add_argument("--threads", default="0",
                    help="torch CPU threads per process, comma-separated; 'plan': the daemon's slot plan")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", type=Path, help="cProfile each process's timed loop into this folder")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    files = [str(Path(f).resolve()) for f in args.files] * args.copies
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    out = []
    for p in [int(x) for x in args.per_device.split(",")]:
        for spec in args.threads.split(","):
            threads = plan_threads(devices, p) if spec.strip() == "plan" else int(spec)
            row = run(args.models, devices, p, files, threads, args.profile)
            row["threads_spec"] = spec.strip()
            out.append(row)
            base = out[0]["speed"]
            print(f"devices {','.join(devices)} x {p} process(es), {threads or 'default'} threads ({spec.strip()}): "
                  f"{row['files']} files, {row['audio_seconds']:.0f} s audio in {row['wall_seconds']:.1f} s = "
                  f"{row['speed']:.1f}x real time ({row['speed'] / base:.2f}x the first row)", flush=True)
            for i, mem in enumerate(row["memory"]):
                print(f"  process {i}: " + ", ".join(f"{k} {v:,.2f}" if k.endswith("_s") else f"{k} {v:,.0f}"
                                                   for k, v in mem.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.profile and out and out[0]["profiles"]:
        import pstats

        stats = pstats.Stats(*out[0]["profiles"])
        print(f"\nprofile of the first row's {len(out[0]['profiles'])} process(es) together (cProfile adds its own "
              "overhead):")
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
