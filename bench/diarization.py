"""Who spoke when, on recordings of held-out voices: bare FunASR, spkd with `refine: false`
and spkd by default, side by side.

`python -m bench diarization [--quick]`. Voices are espeak-ng variants that the tiny
CAM++ never heard in training (daemon.engine.speaker_training.held_out_voices), minus
the voices the tests use and the two whispering variants, drawn at random per case:

* dialogs of 2, 3, 4 and 5 voices taking turns (6 seeds each, 2 with --quick), turn
  lengths varying with the seed (1-2 s up to 4-8 s), 2-s pauses, >= 30 s of speech
  (tests/support/dialog.py);
* a short interjector: one voice speaks eight turns of 4-7 s, another says two short
  sentences (about 3 s in all);
* a dominant speaker: one voice has 85 % of a minute of speech;
* long meetings (not with --quick) of about 30 minutes with 4 voices and 60 minutes
  with 6, turns of 4-14 s, 1-s pauses: FunASR clusters them with UMAP + HDBSCAN
  (>= 2048 windows).

The same audio goes through

* bare FunASR: `AutoModel(model, vad_model, punc_model, spk_model).generate(input=samples)`,
  its `sentence_info` as it comes (one speaker per sentence);
* spkd, `speakers.refine: false`: the worker's engine (daemon.engine.transcriber.Engine)
  with FunASR's clusters and sentences, cut only where FunASR's own timeline changes
  speaker;
* spkd by default: FunASR's clusters refined (daemon.engine.speaker_refine, the tiny
  model's thresholds), sentences cut at pauses over `output.max_pause_seconds` and their
  ends moved to the speech (daemon.engine.speaker_turns.trim_to_speech). The same run also
  scores spkd's sentences as they were before their ends moved ("spkd, ends not moved":
  the rows the engine hands to that last step), for the transcript time outside turns.

Scored against the true turns: DER and JER by pyannote.metrics with a 0.25-s collar
(overlap not skipped; there is none), the share of recordings with the right speaker
count, the share of speech time on the right speaker under the best one-to-one mapping,
and the transcript time outside every true turn as a share of the speech time. The tiny
ASR's words are meaningless, so only times and speakers are scored.

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

from bench.common import PYTHON, REPO, Result, Target, clean_env, footer, header, table

VOICE_COUNTS = (2, 3, 4, 5)
TURN_SECONDS = ((1.0, 2.0), (2.0, 4.0), (3.0, 6.0), (4.0, 8.0))
MEETINGS = ((30, 4), (60, 6))  # (minutes of speech, voices)
COLLAR = 0.25
EXCLUDED = ("whisper", "whisperf")  # whispered speech: no voice to recognise
SYSTEMS = ("bare", "raw", "spkd")
SYSTEM_NAMES = {"bare": "bare FunASR", "raw": "spkd refine false", "spkd": "spkd"}


def voice_pool() -> list[str]:
    from daemon.engine.speaker_training import held_out_voices
    from tests.support.dialog import TEST_VOICES

    return [v for v in held_out_voices() if v not in TEST_VOICES and v not in EXCLUDED]


def plan(seeds: int, *, meetings: bool) -> list[dict[str, Any]]:
    pool = voice_pool()
    cases: list[dict[str, Any]] = []
    for n in VOICE_COUNTS:
        for seed in range(seeds):
            rng = random.Random(1000 * n + seed)
            cases.append({"group": f"{n} voices", "name": f"{n}v-s{seed}", "kind": "dialog",
                          "voices": rng.sample(pool, n), "seed": seed,
                          "turn_seconds": TURN_SECONDS[seed % len(TURN_SECONDS)],
                          "min_speech_seconds": 30.0 + 5 * (n - 2)})
    for seed in range(max(1, seeds // 2)):
        rng = random.Random(500 + seed)
        cases.append({"group": "interjector", "name": f"interjector-s{seed}", "kind": "interjector",
                      "voices": rng.sample(pool, 2), "seed": seed})
        rng = random.Random(77 + seed)
        cases.append({"group": "dominant", "name": f"dominant-s{seed}", "kind": "dialog",
                      "voices": rng.sample(pool, 2), "seed": seed, "turn_seconds": (3.0, 6.0),
                      "min_speech_seconds": 60.0, "dominant_share": 0.85})
    if meetings:
        for minutes, n in MEETINGS:
            rng = random.Random(minutes * 10 + n)
            cases.append({"group": f"meeting {minutes} min, {n} voices", "name": f"meeting-{minutes}m-{n}v",
                          "kind": "meeting", "voices": rng.sample(pool, n), "seed": minutes, "minutes": minutes})
    return cases


# --------------------------------------------------------------------------- child


def synthesise(case: dict[str, Any], directory: Path) -> Any:
    from tests.support.dialog import interjection_script, make_dialog, make_scripted_dialog, meeting_script

    path = directory / f"{case['name']}.wav"
    if case["kind"] == "interjector":
        return make_scripted_dialog(path, interjection_script(*case["voices"], seed=case["seed"]), seed=case["seed"])
    if case["kind"] == "meeting":
        script = meeting_script(case["voices"], case["minutes"], seed=case["seed"])
        return make_scripted_dialog(path, script, seed=case["seed"], pause_seconds=1.0)
    return make_dialog(path, case["voices"], seed=case["seed"], turn_seconds=tuple(case["turn_seconds"]),
                       min_speech_seconds=case["min_speech_seconds"], dominant_share=case.get("dominant_share"))


def child(models: Path, cases_file: Path, out_file: Path) -> None:
    """Synthesise each recording, run the three systems on it, write segments + turns."""
    import numpy as np
    from loguru import logger

    from daemon.engine.decode import decode_audio
    from daemon.engine.models import import_funasr, resolve_model_dirs
    from daemon.engine.transcriber import Engine

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    dirs = resolve_model_dirs(models)
    engines = {"raw": Engine.load(dirs, device="cpu", refine=False), "spkd": Engine.load(dirs, device="cpu")}
    import_funasr()
    from funasr import AutoModel

    bare = AutoModel(model=str(dirs.asr), vad_model=str(dirs.vad), punc_model=str(dirs.punc),
                     spk_model=str(dirs.spk), device="cpu", disable_update=True, disable_pbar=True,
                     log_level="ERROR", ncpu=engine_threads())
    untrimmed: list[list[tuple[float, float, Any, str]]] = []
    trim = engines["spkd"]._at_speech

    def at_speech(rows: list[tuple[float, float, Any, str]], samples: Any) -> Any:
        untrimmed.append(list(rows))  # the sentences before their ends move to the speech
        return trim(rows, samples)

    engines["spkd"]._at_speech = at_speech  # type: ignore[method-assign]
    results = []
    with tempfile.TemporaryDirectory(prefix="spkd-bench-dia-") as tmp:
        for case in json.loads(cases_file.read_text()):
            dialog = synthesise(case, Path(tmp))
            samples = decode_audio(dialog.path)
            row: dict[str, Any] = {**case, "audio_seconds": samples.size / 16000,
                                   "speech_seconds": dialog.speech_seconds,
                                   "turns": [(t.start, t.end, t.speaker) for t in dialog.turns]}
            np.random.seed(0)  # FunASR's k-means is unseeded: the same start for every system
            started = time.monotonic()
            raw = bare.generate(input=samples, batch_size_s=300)
            row["bare"] = {"segments": [(s["start"] / 1000, s["end"] / 1000, f"spk{s.get('spk', 0)}")
                                        for r in raw for s in r.get("sentence_info") or []],
                           "seconds": time.monotonic() - started}
            untrimmed.clear()
            for system, engine in engines.items():
                np.random.seed(0)
                started = time.monotonic()
                transcript = engine.transcribe(dialog.path)
                row[system] = {"segments": [(s.start, s.end, s.speaker_label) for s in transcript.segments],
                               "seconds": time.monotonic() - started}
            row["untrimmed"] = [(a, b, f"spk{k}") for rows in untrimmed for a, b, k, _ in rows]
            results.append(row)
            found = {s: len({seg[2] for seg in row[s]["segments"]}) for s in SYSTEMS}
            print(f"  {case['name']}: {len(case['voices'])} voices, {dialog.speech_seconds:.0f} s speech; speakers "
                  + ", ".join(f"{SYSTEM_NAMES[s]} {found[s]}" for s in SYSTEMS)
                  + "; " + ", ".join(f"{s} {row[s]['seconds']:.1f} s" for s in SYSTEMS), flush=True)
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


def groups_of(results: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["group"] for r in results))


def score(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per system and group: DER, JER (pyannote, accumulated over the recordings), the
    share with the right speaker count, the mean share of speech time on the right
    speaker, transcript time outside every turn (share of speech time), counts found."""
    import warnings

    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    from tests.support.dialog import DialogTurn, attribution, outside_seconds

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for system in SYSTEMS:
        out[system] = {}
        for group in groups_of(results):
            der = DiarizationErrorRate(collar=COLLAR, skip_overlap=False)
            jer = JaccardErrorRate(collar=COLLAR, skip_overlap=False)
            right, shares, found, outside, untrimmed, speech = 0, [], [], 0.0, 0.0, 0.0
            for r in (r for r in results if r["group"] == group):
                segments = [tuple(s) for s in r[system]["segments"]]
                reference = annotation([tuple(t) for t in r["turns"]])
                hypothesis = annotation(segments)
                uem = Timeline([Segment(0.0, r["audio_seconds"])])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    der(reference, hypothesis, uem=uem)
                    jer(reference, hypothesis, uem=uem)
                speakers = len(hypothesis.labels())
                found.append(speakers)
                right += speakers == len(r["voices"])
                turns = [DialogTurn(s, a, b) for a, b, s in r["turns"]]
                shares.append(attribution(segments, turns).share)
                outside += outside_seconds(segments, turns)
                if system == "spkd" and "untrimmed" in r:
                    untrimmed += outside_seconds([tuple(s) for s in r["untrimmed"]], turns)
                speech += r["speech_seconds"]
            count = len(shares)
            out[system][group] = {"der": abs(der), "jer": abs(jer), "count_right": right / count if count else 0.0,
                                  "share": sum(shares) / count if count else 0.0, "recordings": count,
                                  "outside": outside / speech if speech else 0.0, "found": found,
                                  "outside_untrimmed": untrimmed / speech if speech else 0.0}
    return out


def main(quick: bool = False) -> Result:
    seeds = 2 if quick else 6
    started = header("diarization", quick, f"dialogs of {'/'.join(map(str, VOICE_COUNTS))} voices x {seeds} seeds, "
                                           "an interjector, a dominant speaker"
                                           + ("" if quick else ", meetings of 30 and 60 min")
                                           + " (held-out voices): bare FunASR vs spkd refine false vs spkd")
    from tests.support.models import cached_tiny_models

    models = cached_tiny_models()
    cases = plan(seeds, meetings=not quick)
    with tempfile.TemporaryDirectory(prefix="spkd-bench-dia-") as tmp:
        cases_file, out_file = Path(tmp) / "cases.json", Path(tmp) / "results.json"
        cases_file.write_text(json.dumps(cases))
        subprocess.run([PYTHON, "-m", "bench.diarization", "--child", str(models), str(cases_file), str(out_file)],
                       check=True, env=clean_env(OMP_WAIT_POLICY="PASSIVE"), cwd=REPO)
        results = json.loads(out_file.read_text())
    scores = score(results)
    rows = []
    for group in groups_of(results):
        b, r, s = (scores[system][group] for system in SYSTEMS)
        rows.append([group, s["recordings"], b["count_right"], r["count_right"], s["count_right"], b["der"], r["der"],
                     s["der"], b["jer"], r["jer"], s["jer"], b["share"], r["share"], s["share"], b["outside"],
                     r["outside"], s["outside_untrimmed"], s["outside"], "/".join(map(str, r["found"])),
                     "/".join(map(str, s["found"]))])
    table(f"Who spoke when, held-out voices (bare FunASR | spkd refine false | spkd; DER and JER with a {COLLAR:g}-s "
          "collar)",
          ["recordings", "n", "count right bare", "count right raw", "count right spkd", "DER bare", "DER raw",
           "DER spkd", "JER bare", "JER raw", "JER spkd", "time right bare", "time right raw", "time right spkd",
           "outside turns bare", "outside turns raw", "outside turns spkd, ends not moved", "outside turns spkd",
           "speakers found raw",
           "speakers found spkd"], rows)
    print("count right: share of recordings with exactly the true number of speakers. time right: share of the "
          "speech time on the right speaker (best one-to-one mapping). outside turns: transcript time over no true "
          "turn, as a share of the speech time (spkd, ends not moved: its sentences before trim_to_speech). raw = spkd "
          "with speakers.refine false.")
    speech = sum(r["speech_seconds"] for r in results)
    seconds = {system: sum(r[system]["seconds"] for r in results) for system in SYSTEMS}
    print(f"{len(results)} recordings, {speech:.0f} s of speech; voices drawn from {len(voice_pool())} held-out "
          f"variants; inference " + ", ".join(f"{seconds[s]:.0f} s {SYSTEM_NAMES[s]}" for s in SYSTEMS), flush=True)
    result = Result("diarization")
    spkd = scores["spkd"]
    dialogs = [g for g in groups_of(results) if g.endswith("voices") and not g.startswith("meeting")]
    small = [g for g in dialogs if int(g.split()[0]) <= 4]

    def pooled(groups: list[str], key: str) -> float:
        n = sum(spkd[g]["recordings"] for g in groups)
        return sum(spkd[g][key] * spkd[g]["recordings"] for g in groups) / n if n else float("nan")

    result.targets.append(Target("right count, dialogs of 2-4 voices", pooled(small, "count_right"), 0.9, True))
    if "5 voices" in spkd:
        result.targets.append(Target("right count, dialogs of 5 voices", spkd["5 voices"]["count_right"], 0.8, True))
    for group in groups_of(results):
        if group.startswith("meeting"):
            result.targets.append(Target(f"right count, {group}", spkd[group]["count_right"], 1.0, True))
    every = groups_of(results)
    result.targets.append(Target("DER, every recording (mean of groups)",
                                 sum(spkd[g]["der"] for g in every) / len(every), 0.10, False))
    result.targets.append(Target("transcript time outside turns (worst group)",
                                 max(spkd[g]["outside"] for g in every), 0.03, False))
    for group in every:
        b = scores["bare"][group]
        if b["der"] > 0:
            result.ratio(f"DER spkd / bare, {group}", spkd[group]["der"] / b["der"], "below 1: spkd is better")
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
