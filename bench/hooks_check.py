"""Checks behind daemon/engine/pipeline_hooks.py and the batched speaker fbank, on this machine.

    python -m bench.hooks_check --models DIR --audio FILE [--device cuda]

1. FunASR's clusterer (ClusterBackend) on N synthetic speaker embeddings (4 speakers,
   192 dimensions), N = 300, 1000, 1700: time with the thread pools as they are and
   limited to 1, 2, 4 threads (threadpoolctl); whether labels and speaker count agree
   across thread counts, and how far the spectral embedding moves (OpenBLAS's results
   depend on its thread count in the last bits).
2. The one reduction the timestamp hook moves from the GPU to the CPU: how often a
   float32 `sum` of CIF-like alphas differs in its last bits between the devices, and
   whether the timestamps of `ts_prediction_lfr6_standard` (its slow, rescaling path)
   still agree on those inputs.
3. The batched speaker fbank (`SpeakerBatcher.features`) against FunASR's
   `extract_feature` on the CPU, for the windows of the given recording: largest
   feature difference, largest embedding difference (real model), time per window.
4. The CIF predictor's loops on numpy (`pipeline_hooks.cif_host`, `cif_fires_host`)
   against FunASR's `cif` and `cif_wo_hidden` run on the device's tensors, on random
   batches shaped like a GPU worker's (1 to 40 VAD segments): bit for bit, and the time
   of each.

5. (`spk_batch`, not by default) The batched CAM++ forward on the CPU with torch's
   thread count as set: seconds for the recording's windows at several batch sizes
   (`--batches`), to choose `speaker_batching.CPU_WINDOWS_PER_THREAD`.

`--checks` picks some of them (cluster,sums,features,cif; all by default).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def _clusters(n: int, k: int, dim: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = rng.integers(0, k, size=n)
    return (centres[labels] + 0.9 * rng.normal(size=(n, dim))).astype(np.float32)


def check_clustering(rows: list[dict], limits: list[int], sizes: list[int]) -> None:
    import numpy as np
    import torch
    from funasr.models.campplus.cluster_backend import ClusterBackend
    from threadpoolctl import ThreadpoolController, threadpool_info

    backend = ClusterBackend()
    controller = ThreadpoolController()
    pools = sorted({lib["num_threads"] for lib in threadpool_info()})
    print(f"thread pools as loaded: {pools} threads; libraries: "
          f"{sorted({lib['internal_api'] for lib in threadpool_info()})}")
    for n in sizes:
        X = torch.from_numpy(_clusters(n, 4, 192, seed=n))
        outputs: dict[str, Any] = {}
        for label, limit in [("as loaded", None)] + [(str(t), t) for t in limits]:
            scope = controller.limit(limits=limit) if limit else _nothing()
            best = float("inf")
            with scope:
                for _ in range(3):
                    np.random.seed(0)
                    began = time.perf_counter()
                    labels = backend(X.clone(), oracle_num=None)
                    best = min(best, time.perf_counter() - began)
                sim = backend.spectral_cluster.get_sim_mat(X.numpy())
                pruned = backend.spectral_cluster.p_pruning(sim)
                lap = backend.spectral_cluster.get_laplacian(0.5 * (pruned + pruned.T))
                emb, k = backend.spectral_cluster.get_spec_embs(lap)
            outputs[label] = (np.asarray(labels).copy(), emb.copy(), k)
            rows.append({"check": "cluster", "n": n, "threads": label, "seconds": best})
        ref = outputs["as loaded"]
        same_labels = {label: bool(np.array_equal(o[0], ref[0]) and o[2] == ref[2]) for label, o in outputs.items()}
        emb_diff = {label: float(np.abs(np.abs(o[1]) - np.abs(ref[1])).max()) for label, o in outputs.items()}
        line = ", ".join(f"{r['threads']} thr {1000 * r['seconds']:.1f} ms" for r in rows[-len(outputs):])
        print(f"clusterer N={n}: {line}; labels and speaker count equal to 'as loaded': {same_labels}; "
              f"largest |spectral embedding| difference: {emb_diff}")
        rows[-1].update(labels_equal=same_labels, embedding_diff=emb_diff)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def check_sums(device: str, rows: list[dict]) -> None:
    import torch
    from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

    if not device.startswith("cuda"):
        print("sums: no GPU, skipped")
        return
    gen = torch.Generator().manual_seed(0)
    differ = trials = stamps_differ = 0
    for length in list(range(60, 3000, 37)):
        alphas = torch.rand(length, generator=gen) * 0.4
        peaks = torch.zeros(length)  # no peak fires: always the rescaling path
        trials += 1
        if not torch.equal(alphas.sum(), alphas.cuda().sum().cpu()):
            differ += 1
        tokens = [f"t{i}" for i in range(max(1, int(alphas.sum()) - 1))]
        host = ts_prediction_lfr6_standard(alphas.clone(), peaks.clone(), list(tokens))
        dev = ts_prediction_lfr6_standard(alphas.clone().cuda(), peaks.clone().cuda(), list(tokens))
        stamps_differ += host != dev
    print(f"float32 sums of {trials} alpha vectors: {differ} differ in their last bits between CPU and "
          f"{device}; timestamps (rescaling path) differ for {stamps_differ} of them")
    rows.append({"check": "sums", "trials": trials, "sum_differs": differ, "timestamps_differ": stamps_differ})


def check_features(models: Path, audio: Path, device: str, rows: list[dict]) -> None:
    import torch
    from funasr.models.campplus.utils import extract_feature, sv_chunk

    from daemon.engine.decode import decode_audio
    from daemon.engine.transcriber import Engine
    from daemon.engine.models import resolve_model_dirs

    engine = Engine.load(resolve_model_dirs(models), device=device, batch_size_s=300)
    batcher = engine.speaker_batcher
    samples = decode_audio(audio)
    windows = [torch.from_numpy(w[2]) for w in sv_chunk([[0.0, samples.size / 16000, samples]])]
    windows = windows[:512]
    began = time.perf_counter()
    expected, _, _ = extract_feature(windows)
    funasr_seconds = time.perf_counter() - began
    batcher.features(windows[:8])  # warm-up (cuFFT plan, mel banks)
    _sync(device)
    began = time.perf_counter()
    got = batcher.features(windows)
    _sync(device)
    batched_seconds = time.perf_counter() - began
    diff = float((got.cpu() - expected).abs().max())
    with torch.no_grad():
        e_ref = batcher.embed(expected)
        e_got = batcher.embed(got)
    emb_diff = float((e_ref - e_got).abs().max())
    print(f"speaker fbank, {len(windows)} windows on {batcher.feature_device}: FunASR per window "
          f"{funasr_seconds:.3f} s, batched {batched_seconds:.4f} s; largest feature difference {diff:.2e}, "
          f"largest embedding difference {emb_diff:.2e} (embedding scale {float(e_ref.abs().max()):.2f})")
    rows.append({"check": "features", "windows": len(windows), "funasr_seconds": funasr_seconds,
                 "batched_seconds": batched_seconds, "feature_diff": diff, "embedding_diff": emb_diff})


def check_cif(device: str, rows: list[dict]) -> None:
    import torch
    from funasr.models.bicif_paraformer.cif_predictor import cif, cif_wo_hidden

    from daemon.engine import pipeline_hooks as ph

    gen = torch.Generator().manual_seed(19)
    same = trials = 0
    times = {"funasr": 0.0, "host": 0.0}
    for batch, frames in ((1, 80), (1, 300), (6, 200), (23, 180), (40, 300)):
        for trial in range(3):
            hidden = torch.randn(batch, frames, 512, generator=gen)
            alphas = torch.sigmoid(torch.randn(batch, frames, generator=gen) * 2) * 0.6
            lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
            alphas = alphas * (torch.arange(frames)[None, :] < lengths[:, None])
            upsampled = alphas.repeat_interleave(3, dim=1) / 3
            hidden, alphas, upsampled = hidden.to(device), alphas.to(device), upsampled.to(device)
            results = {}
            for label, run in (("funasr", lambda: (cif(hidden, alphas, 1.0), cif_wo_hidden(upsampled, 0.9999))),
                               ("host", lambda: (ph.cif_host(hidden, alphas, 1.0),
                                                 ph.cif_fires_host(upsampled, 0.9999)))):
                _sync(device)
                began = time.perf_counter()
                results[label] = run()
                _sync(device)
                times[label] += time.perf_counter() - began
            (e_ref, f_ref), u_ref = results["funasr"]
            (e_got, f_got), u_got = results["host"]
            trials += 1
            same += bool(torch.equal(e_ref, e_got) and torch.equal(f_ref, f_got) and torch.equal(u_ref, u_got))
    print(f"CIF on numpy vs FunASR's on {device}: {same} of {trials} random batches bit for bit equal "
          f"(embeddings, fires, upsampled fires); FunASR {times['funasr']:.3f} s, numpy {times['host']:.3f} s")
    rows.append({"check": "cif", "trials": trials, "equal": same, **{f"{k}_seconds": v for k, v in times.items()}})


def check_speaker_batches(models: Path, audio: Path, batches: list[int], rows: list[dict]) -> None:
    import numpy as np
    import torch
    from funasr.models.campplus.utils import sv_chunk

    from daemon.engine.decode import decode_audio
    from daemon.engine.transcriber import Engine
    from daemon.engine.models import resolve_model_dirs

    engine = Engine.load(resolve_model_dirs(models), device="cpu", batch_size_s=300)
    batcher = engine.speaker_batcher
    samples = decode_audio(audio)
    windows = [torch.from_numpy(np.ascontiguousarray(w[2])) for w in sv_chunk([[0.0, samples.size / 16000, samples]])]
    windows = [w for w in windows if w.shape[0] == windows[0].shape[0]]
    features = batcher.features(windows)
    line = []
    for size in batches:
        batcher.embed(features[:size])  # warm-up at this shape
        began = time.perf_counter()
        for start in range(0, len(windows), size):
            batcher.embed(features[start:start + size])
        seconds = time.perf_counter() - began
        line.append(f"{size}: {seconds:.2f} s")
        rows.append({"check": "spk_batch", "windows": len(windows), "batch": size, "seconds": seconds,
                     "threads": torch.get_num_threads()})
    print(f"CAM++ forward on the CPU ({torch.get_num_threads()} threads), {len(windows)} windows, by batch size: "
          + ", ".join(line))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hooks_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--audio", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--limits", default="1,2,4", help="thread limits to time the clusterer with")
    ap.add_argument("--sizes", default="300,1000,1700", help="embedding counts for the clusterer")
    ap.add_argument("--checks", default="cluster,sums,features,cif")
    ap.add_argument("--batches", default="8,16,32,64,128,256", help="CAM++ batch sizes for spk_batch")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    checks = {c.strip() for c in args.checks.split(",")}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from daemon.engine.models import import_funasr

    import_funasr()
    rows: list[dict] = []
    if "cluster" in checks:
        check_clustering(rows, [int(x) for x in args.limits.split(",")], [int(x) for x in args.sizes.split(",")])
    if "sums" in checks:
        check_sums(args.device, rows)
    if "features" in checks:
        check_features(args.models, args.audio, args.device, rows)
    if "cif" in checks:
        check_cif(args.device, rows)
    if "spk_batch" in checks:
        check_speaker_batches(args.models, args.audio, [int(x) for x in args.batches.split(",")], rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
