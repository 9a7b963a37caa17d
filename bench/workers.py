"""Throughput of N engine processes sharing devices.

    python -m bench.workers --models DIR --devices cuda:0 --per-device 1,2,3 FILE...
    python -m bench.workers --models DIR --devices cuda:0,cuda:1 --per-device 1 FILE...

For each per-device count P, starts P processes per listed device (spawn, each with
CUDA_VISIBLE_DEVICES set to its GPU before torch is imported, as the daemon's slots
are), each loading spkd's Engine; once all are loaded they start together and take
files from one shared queue (`--copies` times the listed files) until it is empty.
Prints audio hours per hour (audio seconds / wall seconds) and the gain over P=1, and
each process's memory: RSS after importing FunASR, after loading, at the end; on CUDA the
memory torch holds on the GPU after loading (allocated, reserved) and its peak.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any


def _worker(models: str, device: str, ready: Any, go: Any, queue: Any, results: Any, threads: int) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as daemon.devices.worker_env sets it
    env_device = device
    if device.startswith("cuda"):
        index = device.split(":", 1)[1] if ":" in device else "0"
        os.environ["CUDA_VISIBLE_DEVICES"] = index
        env_device = "cuda:0"
    import psutil
    import torch

    if threads:
        torch.set_num_threads(threads)
    from daemon.engine import Engine
    from daemon.models import import_funasr, resolve_model_dirs

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
    ready.release()
    go.wait()
    done_audio, done = 0.0, 0
    while True:
        path = queue.get()  # blocking: get_nowait() fails spuriously while another process reads
        if path is None:  # one sentinel per process ends the run
            break
        t = engine.transcribe(Path(path))
        done_audio += t.audio_seconds
        done += 1
    finished = time.monotonic()
    memory["rss_end_mib"] = me.memory_info().rss / 2**20
    if env_device.startswith("cuda"):
        memory["gpu_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        memory["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    results.put((device, done, done_audio, finished, memory))


def run(models: str, devices: list[str], per_device: int, files: list[str], threads: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    n = per_device * len(devices)
    queue, results = ctx.Queue(), ctx.Queue()
    for _ in range(n):  # the warm-up files
        queue.put(files[0])
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(models, dev, ready, go, queue, results, threads))
             for dev in devices for _ in range(per_device)]
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
    return {"devices": devices, "per_device": per_device, "processes": n, "files": sum(r[1] for r in rows),
            "audio_seconds": audio, "wall_seconds": wall, "speed": audio / wall, "memory": [r[4] for r in rows]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--devices", default="cuda:0", help="comma-separated, e.g. cuda:0,cuda:1")
    ap.add_argument("--per-device", default="1,2,3", help="comma-separated process counts per device")
    ap.add_argument("--copies", type=int, default=1, help="queue each file this many times")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads per process")
    ap.add_argument("--json", type=Path)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    files = [str(Path(f).resolve()) for f in args.files] * args.copies
    out = []
    for p in [int(x) for x in args.per_device.split(",")]:
        row = run(args.models, devices, p, files, args.threads)
        out.append(row)
        base = out[0]["speed"]
        print(f"devices {','.join(devices)} x {p} process(es): {row['files']} files, "
              f"{row['audio_seconds']:.0f} s audio in {row['wall_seconds']:.1f} s = {row['speed']:.1f}x real time "
              f"({row['speed'] / base:.2f}x the first row)", flush=True)
        for i, mem in enumerate(row["memory"]):
            print(f"  process {i}: " + ", ".join(f"{k} {v:,.0f}" for k, v in mem.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
