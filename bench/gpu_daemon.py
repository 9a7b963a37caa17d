"""The real daemon on a multi-GPU machine: slots per GPU, jobs on
each GPU, and a fallback recorded in the workers table.

    python -m bench.gpu_daemon --models DIR --root /tmp/spkd-gpu FILE...

Run 1: workers.device auto (one slot per GPU), every FILE dropped into the inbox;
prints the jobs table (device, slot, RTF) and the workers table.
Run 2: workers.device "cuda:5" (absent) with fallback on; one FILE; prints the
workers table with its fallback_from column and the job's device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import REPO, Daemon

JOB_COLS = "id, source_name, state, device, slot, audio_seconds, processing_seconds, rtf, speakers, error_kind"


def _table(d: Daemon, sql: str) -> list[dict]:
    rows = d.query(sql)
    for r in rows:
        print("   ", json.dumps(r, default=str))
    return rows


def _run(root: Path, models: Path, files: list[Path], device: str, slots: int, timeout: float) -> dict:
    if root.exists():
        shutil.rmtree(root)
    config = {"models": {"dir": str(models)}, "output": {"formats": ["json", "txt"]},
              "workers": {"device": device, "fallback": True, "per_device": 1, "count": 1},
              "jobs": {"lease_seconds": 120, "heartbeat_seconds": 2}}
    # keep this interpreter's import path (wheels installed with --target on a bench machine)
    path = ":".join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    d = Daemon(root, config=config, fake_engine=False, env={"PYTHONPATH": path})
    began = time.monotonic()
    d.start(ready_slots=slots, timeout=timeout)
    print(f"  {slots} slot(s) ready after {time.monotonic() - began:.1f} s")
    d.inbox.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, d.inbox / f.name)
    began = time.monotonic()
    try:
        d.wait_finished(len(files), timeout=timeout)
        print(f"  {len(files)} job(s) finished {time.monotonic() - began:.1f} s after the drop")
        print("  jobs:")
        jobs = _table(d, f"select {JOB_COLS} from jobs order by id")
        print("  workers:")
        workers = _table(d, "select * from workers order by slot")
    finally:
        d.stop()
    return {"jobs": jobs, "workers": workers}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_daemon")
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--root", default=Path("/tmp/spkd-gpu"), type=Path)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)

    cfg = args.root / "doctor" / "spkd.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"models": {"dir": str(args.models)}, "workers": {"device": "auto"}}))
    print("== spkd doctor --json (workers.device auto)")
    doc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(cfg), "doctor", "--json"],
                         capture_output=True, text=True)
    print(doc.stdout[-6000:], doc.stderr[-2000:])

    print("== run 1: workers.device auto")
    one = _run(args.root / "auto", args.models, args.files, "auto", args.gpus, args.timeout)
    devices = sorted({j["device"] for j in one["jobs"]})
    print(f"  jobs ran on: {devices}")
    print("== run 2: workers.device cuda:5 (absent), fallback on")
    two = _run(args.root / "fallback", args.models, args.files[:1], "cuda:5", 1, args.timeout)
    print(f"  fallback recorded: {[(w['slot'], w['device'], w.get('fallback_from')) for w in two['workers']]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
