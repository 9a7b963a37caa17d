"""How far apart the tiny CAM++ puts voices it never heard: cosine of embeddings, same voice vs different.

`python -m bench separation [--quick]`. Each voice speaks two independent *takes* of
about `TAKE_SECONDS` of speech (Mandarin dialog lines, none of them a training phrase,
at 240-300 words a minute as in the dialogs; 2-s pauses; a different seed per take).
Each take goes through the pieces of FunASR's own pipeline that feed its clusterer, with
the tiny models the tests use: the FSMN-VAD `AutoModel` finds the speech segments,
`funasr.models.campplus.utils.sv_chunk` cuts them into 1.5-s windows, and the CAM++
`AutoModel` embeds each window (the calls `AutoModel.inference_with_vad` makes).

Scored, per voice set (held-out voices as in `bench diarization`; training voices on
new sentences for comparison):

* take centroids: the mean of a take's window embeddings, as FunASR's ClusterBackend
  computes a cluster's centre before its cosine merge; *same voice* = take A vs take B
  of one voice, *different voices* = take A of one vs take B of another;
* single 1.5-s windows: every window of take A against every window of take B.

For each: mean and standard deviation of the cosine, d' (the gap between the two means
over their pooled standard deviation), the equal error rate of a same/different
decision by threshold, the share of different-voice pairs at or above the clusterer's
merge threshold (FunASR would merge them into one speaker) and of same-voice centroid
pairs below it, and, for centroids, how often take A's nearest take B is its own voice.

The heavy part runs in a child process (`python -m bench.separation --child`),
so the runner itself never imports torch.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PYTHON, REPO, Result, clean_env, footer, header, table

TAKE_SECONDS = 15.0  # speech per take: ~20 windows, like a speaker's share of a short dialog
PAUSE_SECONDS = 2.0
TAKES = ("A", "B")


def voice_sets(quick: bool) -> dict[str, list[str]]:
    """Held-out voices (the diarization pool: no test voice, no whisper), all of them or
    8 in --quick; and as many training voices (at most 16), heard in training on other
    sentences, for comparison."""
    from bench.diarization import voice_pool
    from daemon.engine.speaker_training import training_voices

    held = voice_pool()
    rng = random.Random(14)
    if quick:
        held = sorted(rng.sample(held, 8), key=held.index)
    trained = training_voices()
    trained = sorted(rng.sample(trained, min(len(trained), 8 if quick else 16)), key=trained.index)
    return {"held-out": held, "training": trained}


# --------------------------------------------------------------------------- child


def take_audio(voice: str, seed: int) -> np.ndarray:
    """About TAKE_SECONDS of one voice: whole dialog lines, PAUSE_SECONDS apart."""
    from daemon.engine.speaker_training import SAMPLE_RATE, synthesize
    from tests.support.dialog import DIALOG_LINES

    rng = random.Random(seed)
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces, speech = [pause], 0
    while speech < TAKE_SECONDS * SAMPLE_RATE:
        line = synthesize(rng.choice(DIALOG_LINES), f"cmn+{voice}", words_per_minute=rng.randint(240, 300))
        pieces += [line, pause]
        speech += line.size
    return np.concatenate(pieces)


def child(models: Path, plan_file: Path, out_file: Path) -> None:
    """Embed every take's windows with FunASR's VAD, sv_chunk and CAM++; write them."""
    from loguru import logger

    from daemon.engine.models import import_funasr, resolve_model_dirs

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    dirs = resolve_model_dirs(models)
    import_funasr()
    import torch
    from funasr import AutoModel
    from funasr.models.campplus.cluster_backend import ClusterBackend
    from funasr.models.campplus.utils import sv_chunk

    kwargs = {"device": "cpu", "disable_update": True, "disable_pbar": True, "log_level": "ERROR",
              "ncpu": max(1, torch.get_num_threads())}
    vad = AutoModel(model=str(dirs.vad), **kwargs)
    spk = AutoModel(model=str(dirs.spk), **kwargs)
    out: dict[str, Any] = {"merge_threshold": float(ClusterBackend().model_config["merge_thr"]), "takes": []}
    for group, voices in json.loads(plan_file.read_text()).items():
        for v, voice in enumerate(voices):
            for t, take in enumerate(TAKES):
                samples = take_audio(voice, seed=1000 * v + 100 * t + (0 if group == "held-out" else 50))
                started = time.monotonic()
                segments = vad.generate(input=samples)[0]["value"]  # [[start_ms, end_ms], ...]
                windows = []
                for start_ms, end_ms in segments:
                    piece = samples[int(start_ms * 16) : int(end_ms * 16)]
                    windows += [w[2] for w in sv_chunk([[start_ms / 1000, end_ms / 1000, piece]])]
                embeddings = torch.cat([r["spk_embedding"] for r in spk.generate(input=windows)]).numpy()
                out["takes"].append({"group": group, "voice": voice, "take": take,
                                     "speech_seconds": sum(e - s for s, e in segments) / 1000,
                                     "seconds": time.monotonic() - started,
                                     "embeddings": embeddings.tolist()})
        print(f"  {group}: {len(voices)} voices embedded", flush=True)
    out_file.write_text(json.dumps(out))


# --------------------------------------------------------------------------- scoring


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def equal_error_rate(same: np.ndarray, different: np.ndarray) -> float:
    """Where the share of same-voice scores below a threshold meets the share of
    different-voice scores at or above it (the mean of the two at the closest point)."""
    thresholds = np.unique(np.concatenate([same, different]))
    miss = np.searchsorted(np.sort(same), thresholds, side="left") / same.size
    false = 1.0 - np.searchsorted(np.sort(different), thresholds, side="left") / different.size
    i = int(np.argmin(np.abs(miss - false)))
    return float((miss[i] + false[i]) / 2)


def separation(same: np.ndarray, different: np.ndarray, merge: float) -> dict[str, float]:
    pooled = np.sqrt((same.var() + different.var()) / 2)
    return {"pairs_same": same.size, "pairs_different": different.size,
            "same_mean": float(same.mean()), "same_std": float(same.std()),
            "different_mean": float(different.mean()), "different_std": float(different.std()),
            "d_prime": float((same.mean() - different.mean()) / pooled) if pooled > 0 else float("inf"),
            "eer": equal_error_rate(same, different),
            "different_merged": float((different >= merge).mean()), "same_split": float((same < merge).mean())}


def score(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    merge = data["merge_threshold"]
    out: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(t["group"] for t in data["takes"]):
        takes = {(t["voice"], t["take"]): np.asarray(t["embeddings"]) for t in data["takes"] if t["group"] == group}
        voices = list(dict.fromkeys(v for v, _ in takes))
        # centroids: the plain mean of the window embeddings, as ClusterBackend.merge_by_cos
        a = _unit(np.stack([takes[v, "A"].mean(axis=0) for v in voices]))
        b = _unit(np.stack([takes[v, "B"].mean(axis=0) for v in voices]))
        cos = a @ b.T
        off = ~np.eye(len(voices), dtype=bool)
        centroid = separation(np.diag(cos), cos[off], merge)
        centroid["identified"] = float((cos.argmax(axis=1) == np.arange(len(voices))).mean())
        close = sorted(((float(cos[i, j]), voices[i], voices[j]) for i, j in zip(*np.nonzero(off))
                        if cos[i, j] >= merge), reverse=True)
        # single windows: every window of take A against every window of take B
        wa = [_unit(takes[v, "A"]) for v in voices]
        wb = [_unit(takes[v, "B"]) for v in voices]
        same, different = [], []
        for i in range(len(voices)):
            for j in range(len(voices)):
                (same if i == j else different).append((wa[i] @ wb[j].T).ravel())
        window = separation(np.concatenate(same), np.concatenate(different), merge)
        # the clusterer compares centroids with its threshold, never single windows
        window.update(identified=float("nan"), different_merged=float("nan"), same_split=float("nan"))
        speech = [t["speech_seconds"] for t in data["takes"] if t["group"] == group]
        windows = [len(t["embeddings"]) for t in data["takes"] if t["group"] == group]
        out[group] = {"centroid": centroid, "window": window,
                      "facts": {"voices": len(voices), "speech_mean": float(np.mean(speech)),
                                "speech_min": float(np.min(speech)), "windows_mean": float(np.mean(windows)),
                                "seconds": float(sum(t["seconds"] for t in data["takes"] if t["group"] == group))},
                      "close": close}
    return out


def main(quick: bool = False) -> Result:
    sets = voice_sets(quick)
    started = header("separation", quick, f"cosine of tiny CAM++ embeddings, {len(sets['held-out'])} held-out "
                                          f"and {len(sets['training'])} training voices, 2 takes each")
    from daemon.engine.speaker_training import read_report
    from tests.support.models import cached_tiny_models

    models = cached_tiny_models()
    report = read_report(models / "cam++")
    if report:
        print(f"tiny CAM++ ({models.name}): trained on {len(report['voices'])} voices, {report['utterances']} "
              f"utterances, {report['speech_seconds']:.0f} s of speech, {report['windows']} windows; Fisher ratio "
              f"frame {report['frame_fisher_ratio']}, segment {report['segment_fisher_ratio']}; nearest-centroid "
              f"accuracy on the training windows {report['training_accuracy']}; trained in {report['seconds']} s")
    print("held-out voices: " + " ".join(sets["held-out"]))
    print("training voices: " + " ".join(sets["training"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="spkd-bench-sep-") as tmp:
        plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "embeddings.json"
        plan_file.write_text(json.dumps(sets))
        subprocess.run([PYTHON, "-m", "bench.separation", "--child", str(models), str(plan_file),
                        str(out_file)], check=True, env=clean_env(OMP_WAIT_POLICY="PASSIVE"), cwd=REPO)
        data = json.loads(out_file.read_text())
    merge = data["merge_threshold"]
    scores = score(data)
    rows = []
    for group, levels in scores.items():
        facts = levels["facts"]
        for level, label in (("centroid", f"take centroid (~{facts['speech_mean']:.0f} s)"),
                             ("window", "one 1.5-s window")):
            s = levels[level]
            rows.append([group, facts["voices"], label, f"{s['pairs_same']:,} / {s['pairs_different']:,}",
                         f"{s['same_mean']:.3f} ± {s['same_std']:.3f}",
                         f"{s['different_mean']:.3f} ± {s['different_std']:.3f}", s["d_prime"], s["eer"],
                         s["different_merged"], s["same_split"], s["identified"]])
    table(f"Cosine similarity of tiny CAM++ embeddings, same voice vs different voices (merge threshold {merge:g})",
          ["voices", "n", "embedding", "pairs same / different", "cos same (mean ± std)",
           "cos different (mean ± std)", "d'", "EER", f"different ≥ {merge:g}", f"same < {merge:g}",
           "nearest take is own voice"], rows)
    for group, levels in scores.items():
        f = levels["facts"]
        print(f"{group}: {f['voices']} voices x 2 takes, speech per take {f['speech_mean']:.1f} s (min "
              f"{f['speech_min']:.1f} s, VAD), {f['windows_mean']:.1f} windows per take; VAD + embedding "
              f"{f['seconds']:.0f} s", flush=True)
        if levels["close"]:
            shown = levels["close"][:12]
            more = len(levels["close"]) - len(shown)
            print(f"  {len(levels['close'])} different-voice centroid pairs reach {merge:g}, the closest (take A ~ "
                  "take B: cosine): " + ", ".join(f"{a} ~ {b}: {c:.3f}" for c, a, b in shown)
                  + (f", and {more} more" if more else ""))
    result = Result("separation")
    held = scores["held-out"]["centroid"]
    result.ratio("held-out centroids: d'", held["d_prime"], "gap between same- and different-voice cosine, in pooled std")
    result.ratio("held-out centroids: different-voice pairs at or above the merge threshold", held["different_merged"],
                 "FunASR's clusterer would merge these into one speaker")
    result.ratio("held-out windows: EER", scores["held-out"]["window"]["eer"], "one 1.5-s window against another")
    result.report()
    footer("separation", started)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("MODELS", "PLAN", "OUT"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
    else:
        main(quick=args.quick)
