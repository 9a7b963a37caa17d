"""Where a job's time goes, stage by stage, in bare FunASR and in spkd's engine.

    python -m bench.stages --models DIR --audio FILE --device cpu|cuda[:N] [--repeat 3]
                           [--profile OUT.prof] [--skip-bare] [--no-warm-up] [--whole]

Loads the same model directories twice: FunASR's `AutoModel` exactly as its README
builds it (VAD + ASR + punctuation + CAM++), and spkd's `Engine` (speaker stage batched,
daemon/engine/speaker_batching.py). Times every call into each stage's model (synchronising
the GPU around each call) during `generate` on the same decoded audio, and prints the
cumulative times VAD, +ASR, +punc, +speaker (speaker = the speaker model's calls plus
clustering), the whole `generate` wall time, the real-time factor, the bare/spkd
ratio, and whether both gave the same result (numpy's RNG seeded alike before each
run, since FunASR's spectral clustering runs an unseeded k-means). Each pipeline runs
once to warm up, then `--repeat` times; the fastest run is reported. `--profile` runs
spkd's engine once more under cProfile (after the timed runs) and prints where its host
time goes, by own time. Each pipeline's peak RSS and GPU memory (reserved and allocated)
over its timed runs are printed too. For long recordings (bench/gpu_setup.sh long):
`--skip-bare --no-warm-up --repeat 1 --whole` times one `Engine.transcribe` of the file,
as a worker runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

STAGES = ("vad", "asr", "punc", "speaker")


class StageClock:
    """Wraps each sub-model's inference (and the clusterer) of one AutoModel with a timer."""

    def __init__(self, auto_model: Any, device: str) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sync = _synchronizer(device)
        for stage, owner in (("vad", auto_model.vad_model), ("asr", auto_model.model),
                             ("punc", auto_model.punc_model), ("speaker", auto_model.spk_model)):
            if owner is not None:
                owner.inference = self._timed(stage, owner.inference)
        if getattr(auto_model, "cb_model", None) is not None:
            auto_model.cb_model = self._timed("speaker", auto_model.cb_model, count=False)

    def _timed(self, stage: str, fn: Callable[..., Any], count: bool = True) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.totals[stage] += time.perf_counter() - began
                if count:
                    self.calls[stage] += 1

        return wrapper

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()


def _synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def _bare_model(dirs: Any, device: str, threads: int) -> Any:
    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr import AutoModel

    return AutoModel(model=str(dirs.asr), vad_model=str(dirs.vad), punc_model=str(dirs.punc),
                     spk_model=str(dirs.spk), device=device, ncpu=threads, disable_update=True,
                     disable_pbar=True, log_level="WARNING")


def _strip(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "key"} for r in results or []]


def _reset_peaks(device: str) -> None:
    """Start the peak RSS (VmHWM, Linux: clear_refs 5) and the GPU's peaks afresh."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(device))


def _peaks(device: str) -> dict[str, float]:
    """Peak RSS since `_reset_peaks` (VmHWM; ru_maxrss, the process's whole life, where
    there is no /proc) and the GPU's peak reserved and allocated memory, in GB."""
    import resource

    peaks: dict[str, float] = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks["peak_rss_gb"] = int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    if device.startswith("cuda"):
        import torch

        dev = torch.device(device)
        peaks["gpu_peak_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 1e9
        peaks["gpu_peak_allocated_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    return peaks


def measure(run: Callable[[], Any], clock: StageClock, repeat: int, *, warm_up: bool | Callable[[], Any] = True,
            device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """Best of `repeat` timed runs, with the peak memory over the timed runs. Before them
    one untimed warm-up: `run` itself (True), another call (a shorter recording), or none.
    The row's `repeatable` says whether every run of `run` (a warm-up by `run` itself
    included) gave the same result: where a pipeline differs from itself, a difference
    between two pipelines says nothing about either."""
    import numpy as np

    np.random.seed(0)
    results: list[Any] = []
    if warm_up:
        # CUDA context, cuDNN algorithm choice, allocator; numba's compilation of UMAP's
        # and pynndescent's functions the first time FunASR clusters 2048 windows or more
        warmed = (run if warm_up is True else warm_up)()
        if warm_up is True and isinstance(warmed, list):
            results.append(_strip(warmed))
    _reset_peaks(device)
    best: dict[str, Any] | None = None
    result: list[dict] = []
    for _ in range(max(1, repeat)):
        clock.reset()
        np.random.seed(0)
        clock.sync()
        began = time.perf_counter()
        result = run()
        clock.sync()
        wall = time.perf_counter() - began
        row = {"wall": wall, **{s: clock.totals.get(s, 0.0) for s in STAGES},
               "calls": dict(clock.calls)}
        if best is None or wall < best["wall"]:
            best = row
        if isinstance(result, list):  # generate's results (a transcript carries its timing)
            results.append(_strip(result))
    assert best is not None
    best.update(_peaks(device))
    best["runs_compared"] = len(results)
    best["repeatable"] = all(r == results[0] for r in results[1:]) if len(results) > 1 else None
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, type=Path, help="models directory (default names inside)")
    ap.add_argument("--audio", required=True, type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--skip-bare", action="store_true", help="spkd's engine only")
    ap.add_argument("--profile", type=Path, help="cProfile one more spkd run into this file")
    ap.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                    help="time the first run (long recordings: one run is all the time there is)")
    ap.add_argument("--warm-up-with", type=Path, metavar="AUDIO",
                    help="warm up on this recording instead (long recordings: a shorter one that still "
                         "clusters with UMAP, >= 2048 windows, so that numba has compiled it)")
    ap.add_argument("--whole", action="store_true",
                    help="spkd as a worker runs it: Engine.transcribe(AUDIO) (decoding, refinement, "
                         "sentences) instead of generate on decoded samples; with --skip-bare")
    args = ap.parse_args(argv)
    if args.whole and not args.skip_bare:
        ap.error("--whole needs --skip-bare (bare FunASR has no transcribe to compare)")
    # as in the daemon's workers (daemon.service.devices.worker_env): spinning OpenMP threads make
    # CPU timings on a shared machine meaningless; before torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from daemon.engine.decode import decode_audio
    from daemon.engine.transcriber import Engine
    from daemon.engine.models import resolve_model_dirs

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    dirs = resolve_model_dirs(args.models)
    samples = decode_audio(args.audio)
    seconds = samples.size / 16000
    if args.whole:
        samples = None  # transcribe decodes the file itself, as a worker does

    rows: dict[str, dict[str, Any]] = {}
    results: dict[str, list[dict]] = {}
    if not args.skip_bare:
        bare = _bare_model(dirs, args.device, threads)
        clock = StageClock(bare, args.device)
        rows["bare FunASR"], results["bare"] = measure(
            lambda: bare.generate(input=samples, batch_size_s=300), clock, args.repeat, warm_up=args.warm_up,
            device=args.device)
        del bare
    engine = Engine.load(dirs, device=args.device, batch_size_s=300, ncpu=threads)
    clock = StageClock(engine.model, args.device)
    spkd_run = ((lambda: engine.transcribe(args.audio)) if args.whole
                else (lambda: engine.generate(samples, {"batch_size_s": 300})))
    warm: bool | Callable[[], Any] = args.warm_up
    if args.warm_up and args.warm_up_with is not None:
        def warm() -> Any:
            return engine.transcribe(args.warm_up_with)
    rows["spkd engine"], results["spkd"] = measure(spkd_run, clock, args.repeat, warm_up=warm,
                                                   device=args.device)
    stats = engine.speaker_batcher.last_stats if engine.speaker_batcher else None
    hooks = engine.pipeline_hooks.names if getattr(engine, "pipeline_hooks", None) else []

    name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
    print(f"audio {args.audio.name}: {seconds:.1f} s; device {args.device} ({name}); torch threads {threads}; "
          f"best of {args.repeat}{' after a warm-up' if args.warm_up else ', no warm-up'}"
          f"{f' on {args.warm_up_with.name} (spkd)' if args.warm_up and args.warm_up_with else ''}"
          f"{'; spkd: Engine.transcribe(file)' if args.whole else ''}")
    if stats:
        print(f"spkd speaker batching: {stats.windows} windows in {stats.batches} batches "
              f"(batch size {stats.batch_size}), fbank {getattr(stats, 'feature_seconds', 0.0):.3f} s, "
              f"forward {stats.forward_seconds:.3f} s")
    print(f"spkd pipeline hooks: {', '.join(hooks) or 'none'}")
    header = f"{'pipeline':<12} {'VAD':>8} {'+ASR':>8} {'+punc':>8} {'+speaker':>9} {'generate':>9} {'RTF':>7}  calls"
    print(header)
    for label, r in rows.items():
        cum, out = 0.0, []
        for s in STAGES:
            cum += r[s]
            out.append(cum)
        r["rtf"] = r["wall"] / seconds
        print(f"{label:<12} {out[0]:8.3f} {out[1]:8.3f} {out[2]:8.3f} {out[3]:9.3f} {r['wall']:9.3f} "
              f"{r['rtf']:7.4f}  {r['calls']}")
    for label, r in rows.items():
        if r["repeatable"] is not None:
            print(f"{label}: its {r['runs_compared']} runs (warm-up included) gave "
                  f"{'the same result' if r['repeatable'] else 'DIFFERENT results'}")
    for label, r in rows.items():
        gpu = (f", GPU peak reserved {r['gpu_peak_reserved_gb']:.2f} GB (allocated {r['gpu_peak_allocated_gb']:.2f} GB)"
               if "gpu_peak_reserved_gb" in r else "")
        print(f"{label}: peak RSS {r['peak_rss_gb']:.2f} GB during the timed runs{gpu}")
    summary: dict[str, Any] = {"audio_seconds": seconds, "device": args.device, "device_name": name,
                               "threads": threads, "rows": rows}
    if "bare FunASR" in rows:
        b, e = rows["bare FunASR"], rows["spkd engine"]
        same = _strip(results["bare"]) == _strip(results["spkd"])
        summary.update(ratio=b["wall"] / e["wall"], speaker_ratio=b["speaker"] / max(e["speaker"], 1e-9),
                       identical=same)
        print(f"speed ratio bare/spkd: {summary['ratio']:.2f}x whole pipeline, "
              f"{summary['speaker_ratio']:.1f}x speaker stage; identical results: {same}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    if args.profile:
        _profile(spkd_run, clock, args.profile)
    return 0


def _profile(run: Callable[[], Any], clock: StageClock, out: Path) -> None:
    import cProfile
    import pstats

    import numpy as np

    np.random.seed(0)
    profiler = cProfile.Profile()
    clock.sync()
    profiler.enable()
    run()
    clock.sync()
    profiler.disable()
    profiler.dump_stats(str(out))
    print(f"\nprofile of one spkd run (cProfile adds its own overhead), written to {out}:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
