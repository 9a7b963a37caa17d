"""Where a worker's memory goes: RSS after import and after load, against the weights.

    python -m bench.memory --models DIR [--device cpu|cuda] [--audio FILE] [--bare]

Runs in a fresh child process per measurement (so one measurement's heap cannot hide
in the next): import torch + FunASR, then load the four models the way spkd's
`Engine.load` does (or, with `--bare`, FunASR's `AutoModel` exactly as its README builds
it, which is what the engine did before the heap was trimmed after loading), optionally
transcribe one file. Prints RSS at each step, the peak RSS (ru_maxrss), the size of the
model files on disk, the bytes of every model's parameters and buffers, the Python
objects of the tokenizers' vocabularies, and on CUDA the GPU memory torch holds.
The target: RSS after load <= 1.4 x (weights on disk) + (RSS after import).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _vocabulary_mib(tokenizer: Any) -> float:
    """Python objects of a tokenizer's token list and token -> id dict (deep, approximate)."""
    if tokenizer is None:
        return 0.0
    total = 0
    seen: set[int] = set()
    for name in ("token_list", "token2id"):
        value = getattr(tokenizer, name, None)
        if value is None:
            continue
        total += sys.getsizeof(value)
        items = value.items() if isinstance(value, dict) else ((v, None) for v in value)
        for key, item in items:
            for obj in (key, item):
                if obj is not None and id(obj) not in seen:
                    seen.add(id(obj))
                    total += sys.getsizeof(obj)
    return total / 2**20


def child(models: str, device: str, audio: str | None, bare: bool) -> dict[str, Any]:
    import torch  # noqa: F401  (counted in "after import")

    from daemon.engine.models import import_funasr, resolve_model_dirs

    out: dict[str, Any] = {"device": device, "bare": bare, "rss_start": _rss_mib()}
    import_funasr()
    from funasr import AutoModel  # noqa: F401
    from funasr.models.campplus.cluster_backend import ClusterBackend  # noqa: F401

    out["rss_imported"] = _rss_mib()
    dirs = resolve_model_dirs(Path(models))
    out["disk_mib"] = {role: sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20
                       for role, path in dirs.items()}
    if bare:
        from funasr import AutoModel

        model = AutoModel(model=str(dirs.asr), vad_model=str(dirs.vad), punc_model=str(dirs.punc),
                          spk_model=str(dirs.spk), device=device, disable_update=True, disable_pbar=True,
                          log_level="WARNING")
        run = (lambda samples: model.generate(input=samples, batch_size_s=300))
    else:
        from daemon.engine.transcriber import Engine

        engine = Engine.load(dirs, device=device, batch_size_s=300)
        model = engine.model
        run = (lambda samples: engine.generate(samples, {"batch_size_s": 300}))
    out["rss_loaded"] = _rss_mib()
    out["peak_after_load"] = _peak_mib()
    parts = {"asr": model.model, "vad": model.vad_model, "punc": model.punc_model, "spk": model.spk_model}
    out["weights_mib"] = {role: (sum(p.numel() * p.element_size() for p in m.parameters())
                                 + sum(b.numel() * b.element_size() for b in m.buffers())) / 2**20
                          for role, m in parts.items() if m is not None}
    out["vocabulary_mib"] = {"asr": _vocabulary_mib(model.kwargs.get("tokenizer")),
                             "punc": _vocabulary_mib(model.punc_kwargs.get("tokenizer"))}
    if device.startswith("cuda"):
        import torch

        out["gpu_allocated_loaded"] = torch.cuda.memory_allocated() / 2**20
        out["gpu_reserved_loaded"] = torch.cuda.memory_reserved() / 2**20
    if audio:
        import numpy as np

        from daemon.engine.decode import decode_audio

        samples = decode_audio(Path(audio))
        np.random.seed(0)
        run(samples)
        out["rss_after_job"] = _rss_mib()
        if not bare:
            engine.release()
            out["rss_after_release"] = _rss_mib()
        out["peak_after_job"] = _peak_mib()
        if device.startswith("cuda"):
            import torch

            out["gpu_peak_reserved"] = torch.cuda.max_memory_reserved() / 2**20
            out["gpu_reserved_after_job"] = torch.cuda.memory_reserved() / 2**20
    return out


def report(row: dict[str, Any]) -> None:
    disk = sum(row["disk_mib"].values())
    limit = 1.4 * disk + row["rss_imported"]
    label = "bare FunASR AutoModel" if row["bare"] else "spkd Engine.load"
    print(f"\n{label} on {row['device']}:")
    print(f"  weights on disk {disk:,.0f} MiB ({', '.join(f'{k} {v:,.0f}' for k, v in row['disk_mib'].items())}); "
          f"parameters + buffers in memory {sum(row['weights_mib'].values()):,.0f} MiB")
    print(f"  RSS: start {row['rss_start']:,.0f}, after import {row['rss_imported']:,.0f}, "
          f"after load {row['rss_loaded']:,.0f} MiB (peak during load {row['peak_after_load']:,.0f})")
    over = row["rss_loaded"] - row["rss_imported"] - sum(row["weights_mib"].values())
    print(f"  after load - after import - weights = {over:,.0f} MiB, of which vocabularies as Python objects "
          f"{sum(row['vocabulary_mib'].values()):,.0f} MiB ({', '.join(f'{k} {v:,.1f}' for k, v in row['vocabulary_mib'].items())})")
    print(f"  target RSS after load <= 1.4 x {disk:,.0f} + {row['rss_imported']:,.0f} = {limit:,.0f} MiB: "
          f"{'PASS' if row['rss_loaded'] <= limit else 'MISS'} ({(row['rss_loaded'] - row['rss_imported']) / disk:.2f} x "
          f"the weights above the import)")
    if "rss_after_job" in row:
        extra = f", after Engine.release {row['rss_after_release']:,.0f}" if "rss_after_release" in row else ""
        print(f"  after one job: RSS {row['rss_after_job']:,.0f}{extra} MiB (peak {row['peak_after_job']:,.0f})")
    if "gpu_allocated_loaded" in row:
        print(f"  GPU: allocated after load {row['gpu_allocated_loaded']:,.0f} MiB, reserved "
              f"{row['gpu_reserved_loaded']:,.0f} MiB" + (f", peak reserved during the job {row['gpu_peak_reserved']:,.0f} MiB"
                                                         if "gpu_peak_reserved" in row else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--audio", help="transcribe this file once after loading")
    ap.add_argument("--bare", action="store_true", help="also measure FunASR's AutoModel alone")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.models, args.device, args.audio, args.bare)), flush=True)
        return 0
    rows = []
    for bare in ([True, False] if args.bare else [False]):
        cmd = [sys.executable, "-m", "bench.memory", "--child", "--models", args.models, "--device", args.device]
        cmd += (["--audio", args.audio] if args.audio else []) + (["--bare"] if bare else [])
        env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        report(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
