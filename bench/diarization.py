"""Diarization on synthetic dialogs of held-out voices: bare FunASR and spkd, side by side.

`python -m bench diarization [--quick]`. Dialogs of 2, 3 and 4 espeak-ng voices that the
tiny CAM++ never heard in training (daemon.engine.speaker_training.held_out_voices), minus the
voices the tests use and the two whispering variants, drawn at random per seed; turn
lengths vary with the seed (1-2 s up to 4-8 s), 2-s pauses, >= 30 s of speech
(tests/support/dialog.py). The same audio goes through

* bare FunASR: `AutoModel(model, vad_model, punc_model, spk_model).generate(input=samples)`,
  its `sentence_info` as it comes (one speaker per sentence);
* spkd: `daemon.engine.transcriber.Engine.transcribe` (the worker's engine: batched speaker windows,
  sentences split where FunASR's own speaker timeline changes speaker).

Scored with pyannote.metrics against the true turns: DER with a 0.25-s collar (overlap
not skipped; there is none), JER, the share of dialogs with the right speaker count, and
the share of speech time on the right speaker under the best one-to-one mapping. The
tiny ASR's words are meaningless, so only times and speakers are scored.

The heavy part runs in a child process (`python -m bench.diarization --child`), so the
runner itself never imports torch.
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

from bench.common import PYTHON, REPO, Result, clean_env, footer, header, table

VOICE_COUNTS = (2, 3, 4)
TURN_SECONDS = ((1.0, 2.0), (2.0, 4.0), (3.0, 6.0), (4.0, 8.0))
COLLAR = 0.25
EXCLUDED = ("whisper", "whisperf")  # whispered speech: no voice to recognise


def voice_pool() -> list[str]:
    from daemon.engine.speaker_training import held_out_voices
    from tests.support.dialog import TEST_VOICES

    return [v for v in held_out_voices() if v not in TEST_VOICES and v not in EXCLUDED]


def plan(seeds: int) -> list[dict[str, Any]]:
    pool = voice_pool()
    cases = []
    for n in VOICE_COUNTS:
        for seed in range(seeds):
            rng = random.Random(1000 * n + seed)
            cases.append({"name": f"{n}v-s{seed}", "voices": rng.sample(pool, n), "seed": seed,
                          "turn_seconds": TURN_SECONDS[seed % len(TURN_SECONDS)],
                          "min_speech_seconds": 30.0 + 5 * (n - 2)})
    return cases


# --------------------------------------------------------------------------- child


def child(models: Path, cases_file: Path, out_file: Path) -> None:
    """Synthesise each dialog, run bare FunASR and spkd on it, write segments + turns."""
    import numpy as np
    from loguru import logger

    from daemon.engine.decode import decode_audio
    from daemon.engine.transcriber import Engine
    from daemon.engine.models import import_funasr, resolve_model_dirs
    from tests.support.dialog import make_dialog

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    dirs = resolve_model_dirs(models)
    engine = Engine.load(dirs, device="cpu")
    import_funasr()
    from funasr import AutoModel

    bare = AutoModel(model=str(dirs.asr), vad_model=str(dirs.vad), punc_model=str(dirs.punc),
                     spk_model=str(dirs.spk), device="cpu", disable_update=True, disable_pbar=True,
                     log_level="ERROR", ncpu=engine_threads())
    results = []
    with tempfile.TemporaryDirectory(prefix="spkd-bench-dia-") as tmp:
        for case in json.loads(cases_file.read_text()):
            dialog = make_dialog(Path(tmp) / f"{case['name']}.wav", case["voices"], seed=case["seed"],
                                 turn_seconds=tuple(case["turn_seconds"]),
                                 min_speech_seconds=case["min_speech_seconds"])
            samples = decode_audio(dialog.path)
            np.random.seed(0)  # FunASR's k-means is unseeded: the same start for both
            started = time.monotonic()
            raw = bare.generate(input=samples, batch_size_s=300)
            bare_seconds = time.monotonic() - started
            bare_segments = [(s["start"] / 1000, s["end"] / 1000, f"spk{s.get('spk', 0)}")
                             for r in raw for s in r.get("sentence_info") or []]
            np.random.seed(0)
            started = time.monotonic()
            transcript = engine.transcribe(dialog.path)
            spkd_seconds = time.monotonic() - started
            results.append({
                **case,
                "audio_seconds": samples.size / 16000,
                "speech_seconds": dialog.speech_seconds,
                "turns": [(t.start, t.end, t.speaker) for t in dialog.turns],
                "bare": {"segments": bare_segments, "seconds": bare_seconds},
                "spkd": {"segments": [(s.start, s.end, s.speaker_label) for s in transcript.segments],
                         "seconds": spkd_seconds},
            })
            print(f"  {case['name']}: {len(case['voices'])} voices, {dialog.speech_seconds:.0f} s speech, "
                  f"bare {bare_seconds:.1f} s, spkd {spkd_seconds:.1f} s", flush=True)
    out_file.write_text(json.dumps(results))


def engine_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


# --------------------------------------------------------------------------- scoring


def annotation(segments: list[tuple[float, float, str]]) -> Any:
    from pyannote.core import Annotation, Segment

    out = Annotation()
    for i, (start, end, label) in enumerate(segments):
        if end > start:
            out[Segment(start, end), i] = label
    return out


def score(results: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """Per system and voice count: DER, JER (pyannote, accumulated over the dialogs),
    speaker-count accuracy and mean share of speech time on the right speaker."""
    import warnings

    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    from tests.support.dialog import DialogTurn, attribution

    table_: dict[str, dict[int, dict[str, float]]] = {}
    for system in ("bare", "spkd"):
        table_[system] = {}
        for n in VOICE_COUNTS:
            der = DiarizationErrorRate(collar=COLLAR, skip_overlap=False)
            jer = JaccardErrorRate(collar=COLLAR, skip_overlap=False)
            right, shares, found = 0, [], []
            for r in (r for r in results if len(r["voices"]) == n):
                reference = annotation([tuple(t) for t in r["turns"]])
                hypothesis = annotation([tuple(s) for s in r[system]["segments"]])
                uem = Timeline([Segment(0.0, r["audio_seconds"])])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    der(reference, hypothesis, uem=uem)
                    jer(reference, hypothesis, uem=uem)
                speakers = len(hypothesis.labels())
                found.append(speakers)
                right += speakers == n
                turns = [DialogTurn(s, a, b) for a, b, s in r["turns"]]
                shares.append(attribution([tuple(s) for s in r[system]["segments"]], turns).share)
            count = len(shares)
            total = der["total"] or 1.0
            table_[system][n] = {"der": abs(der), "jer": abs(jer), "count_accuracy": right / count if count else 0.0,
                                 "confusion": der["confusion"] / total, "false_alarm": der["false alarm"] / total,
                                 "missed": der["missed detection"] / total,
                                 "share": sum(shares) / count if count else 0.0, "dialogs": count,
                                 "found": found}
    return table_


def main(quick: bool = False) -> Result:
    seeds = 2 if quick else 6
    started = header("diarization", quick, f"{len(VOICE_COUNTS)} voice counts x {seeds} seeds of held-out voices, "
                                           "bare FunASR vs spkd, pyannote.metrics")
    from tests.support.models import cached_tiny_models

    models = cached_tiny_models()
    cases = plan(seeds)
    with tempfile.TemporaryDirectory(prefix="spkd-bench-dia-") as tmp:
        cases_file, out_file = Path(tmp) / "cases.json", Path(tmp) / "results.json"
        cases_file.write_text(json.dumps(cases))
        subprocess.run([PYTHON, "-m", "bench.diarization", "--child", str(models), str(cases_file), str(out_file)],
                       check=True, env=clean_env(OMP_WAIT_POLICY="PASSIVE"), cwd=REPO)
        results = json.loads(out_file.read_text())
    scores = score(results)
    rows = []
    for n in VOICE_COUNTS:
        b, s = scores["bare"][n], scores["spkd"][n]
        rows.append([n, b["dialogs"], b["der"], s["der"], b["confusion"], s["confusion"], b["false_alarm"],
                     s["false_alarm"], b["jer"], s["jer"], b["count_accuracy"], s["count_accuracy"], b["share"],
                     s["share"], "/".join(map(str, b["found"])), "/".join(map(str, s["found"]))])
    table(f"Diarization, held-out voices (DER and JER with a {COLLAR:g}-s collar; lower is better)",
          ["voices", "dialogs", "DER bare", "DER spkd", "confusion bare", "confusion spkd", "false alarm bare",
           "false alarm spkd", "JER bare", "JER spkd", "count right bare", "count right spkd", "time right bare",
           "time right spkd", "speakers found bare", "speakers found spkd"], rows)
    print("DER = confusion + false alarm + missed speech, as shares of the true speech time. False alarm is "
          "sentence time outside any turn: FunASR's sentences run from token to token, across pauses.")
    speech = sum(r["speech_seconds"] for r in results)
    bare_s = sum(r["bare"]["seconds"] for r in results)
    spkd_s = sum(r["spkd"]["seconds"] for r in results)
    print(f"{len(results)} dialogs, {speech:.0f} s of speech; voices drawn from {len(voice_pool())} held-out "
          f"variants; inference {bare_s:.0f} s bare, {spkd_s:.0f} s spkd", flush=True)
    result = Result("diarization")
    for n in VOICE_COUNTS:
        b, s = scores["bare"][n], scores["spkd"][n]
        if b["der"] > 0:
            result.ratio(f"DER spkd / bare, {n} voices", s["der"] / b["der"], "below 1: spkd is better")
    result.report()
    footer("diarization", started)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("MODELS", "CASES", "OUT"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
    else:
        main(quick=args.quick)
