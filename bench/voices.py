"""Naming speakers after the voice library: true and false names per threshold and margin.

`python -m bench voices [--quick]`. The defaults of `speakers.match_threshold` and
`speakers.match_margin` (daemon.voices.matching.match) are chosen from this table.

Voices: espeak-ng variants the tiny CAM++ never heard in training
(daemon.engine.speaker_training.held_out_voices), minus the voices the tests use and the two
whispering variants (as bench/diarization.py). `LIBRARIES` seeded draws of `ENROLLED`
of them are the libraries; each voice is enrolled from one solo recording
(tests/support/dialog.py make_dialog with one voice, >= 15 s of speech) through
`Engine.embed_voice`, as `spkd voices add` does. Per library, dialogs of 2 and 3 voices
take every mix of its voices and voices it does not hold (0..n enrolled), with their
own seeds (other lines, rates and turn lengths than the enrolment recordings), and go
through `Engine.transcribe` (the worker's pipeline: VAD, ASR, CAM++ windows,
clustering, FunASR's cluster centroids).

Each speaker cluster the pipeline finds is given the true voice it overlaps most in
time; a cluster without any overlap with true speech counts as an unknown voice. Then,
for every threshold x margin of the grid, daemon.voices.matching.library + match
(the code the worker runs, one to one included) name the clusters, and each cluster is
one of:

* correct: named after its own voice;
* false: named, but not after its voice (an enrolled voice named as another, or an
  unknown voice given a name): the worst error, a wrong name in every output;
* missed: its voice is enrolled, but it stays `SpeakerN`;
* unnamed right: its voice is not enrolled and it stays `SpeakerN`.

A cluster the clusterer split off a voice can never be named (one to one gives a voice
to one cluster of a recording), so correct names are also counted against the enrolled
voices' appearances in the dialogs: the share of them that got their name.

The recommended default: among the grid points that name at least `MIN_NAMED_SHARE`
of the enrolled voices' appearances (a default that leaves most enrolled people
unnamed is no default; on these voices the false names only vanish at a threshold
above the median own-voice score), those with the fewest false names, where a count
within one Poisson standard deviation (sqrt n) of the fewest counts as equally few
(one cluster more or less out of hundreds is noise, not a difference); of those, the
most correct names, then the fewest false names; remaining ties go to the middle of
the tied thresholds (as far from both edges as the grid allows), then to the larger
margin.

Scores are the tiny CAM++'s (a 32-dim model trained on espeak-ng voices): the real
CAM++ (192-dim) scores differently and must be tuned on real recordings with
`spkd voices match`. The heavy part runs in a child process
(`python -m bench.voices --child`), so the runner itself never imports torch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, REPO, Result, clean_env, footer, header, percentile, table
from bench.diarization import voice_pool

THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
MARGINS = (0.0, 0.05, 0.1, 0.15)
ENROLLED = 12  # voices in a library
LIBRARIES = 3  # seeded draws of the library, each with its own dialogs
ROUNDS = 7  # per library: rounds of one dialog per (voices, enrolled among them)
ENROL_SPEECH_SECONDS = 15.0  # per enrolment recording (spkd refuses under 10 s)
ENROL_SEED = 900  # enrolment recording i has seed ENROL_SEED + i; dialogs DIALOG_SEED + j
DIALOG_SEED = 15_000
VOICE_COUNTS = (2, 3)
TURN_SECONDS = ((1.5, 3.0), (2.0, 4.0), (3.0, 6.0), (4.0, 8.0))
OUTCOMES = ("correct", "false", "missed", "unnamed_right")
MIN_NAMED_SHARE = 0.5  # of the enrolled voices' appearances in the dialogs, for a recommendable point
LONG_CLUSTER_SECONDS = 8.0  # a cluster with this much talk has a steady centroid


def plan(libraries: int, rounds: int) -> dict[str, Any]:
    """`libraries` libraries of ENROLLED voices each (seeded draws, so that no one
    draw's luck with look-alike voices decides), and per library and round, for n in
    VOICE_COUNTS and each count k = 0..n of enrolled voices, one dialog of k of that
    library's voices and n - k voices it does not hold."""
    pool = voice_pool()
    enrolments, dialogs = [], []
    for lib in range(libraries):
        enrolled = sorted(random.Random(15 + lib).sample(pool, ENROLLED))
        unknown = [v for v in pool if v not in enrolled]
        enrolments.append([{"voice": v, "seed": ENROL_SEED + len(enrolments) * ENROLLED + i}
                           for i, v in enumerate(enrolled)])
        for r in range(rounds):
            for n in VOICE_COUNTS:
                for k in range(n + 1):
                    seed = DIALOG_SEED + len(dialogs)
                    pick = random.Random(seed)
                    voices = pick.sample(enrolled, k) + pick.sample(unknown, n - k)
                    pick.shuffle(voices)
                    dialogs.append({"name": f"L{lib}-{n}v{k}e-r{r}", "library": lib, "voices": voices,
                                    "seed": seed, "turn_seconds": TURN_SECONDS[len(dialogs) % len(TURN_SECONDS)],
                                    "min_speech_seconds": 24.0 + 6 * (n - 2)})
    return {"libraries": enrolments, "dialogs": dialogs}


# --------------------------------------------------------------------------- child


def child(models: Path, plan_file: Path, out_file: Path) -> None:
    """Enrol the library's voices, transcribe each dialog; write embeddings, clusters
    (segments and centroids) and true turns."""
    import numpy as np
    from loguru import logger

    from daemon.engine.transcriber import Engine
    from daemon.engine.models import resolve_model_dirs
    from tests.support.dialog import make_dialog

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    work = json.loads(plan_file.read_text())
    engine = Engine.load(resolve_model_dirs(models), device="cpu")
    out: dict[str, Any] = {"libraries": [], "dialogs": []}
    with tempfile.TemporaryDirectory(prefix="spkd-bench-voices-") as tmp:
        for lib, items in enumerate(work["libraries"]):
            enrolled = []
            for item in items:
                solo = make_dialog(Path(tmp) / f"enrol-{lib}-{item['voice']}.wav", [item["voice"]],
                                   seed=item["seed"], min_speech_seconds=ENROL_SPEECH_SECONDS)
                np.random.seed(0)  # FunASR's k-means is unseeded
                voice = engine.embed_voice(solo.path)
                enrolled.append({"voice": item["voice"], "embedding": list(voice.embedding),
                                 "speech_seconds": voice.speech_seconds, "model_name": voice.model_name,
                                 "model_revision": voice.model_revision})
            out["libraries"].append(enrolled)
            print(f"  library {lib}: enrolled {', '.join(e['voice'] for e in enrolled)} "
                  f"({min(e['speech_seconds'] for e in enrolled):.0f}-"
                  f"{max(e['speech_seconds'] for e in enrolled):.0f} s of speech each)", flush=True)
        for case in work["dialogs"]:
            dialog = make_dialog(Path(tmp) / f"{case['name']}.wav", case["voices"], seed=case["seed"],
                                 turn_seconds=tuple(case["turn_seconds"]),
                                 min_speech_seconds=case["min_speech_seconds"])
            np.random.seed(0)
            started = time.monotonic()
            transcript = engine.transcribe(dialog.path)
            seconds = time.monotonic() - started
            model = transcript.speaker_model
            out["dialogs"].append({
                **case,
                "speech_seconds": dialog.speech_seconds,
                "turns": [(t.start, t.end, t.speaker) for t in dialog.turns],
                "segments": [(s.start, s.end, s.speaker) for s in transcript.segments],
                "talk": {str(s.speaker): s.talk_seconds for s in transcript.speakers},
                "centroids": {str(k): list(v) for k, v in transcript.speaker_centroids.items()},
                "model_name": model.name if model else None,
                "model_revision": model.revision if model else None,
                "seconds": seconds,
            })
            print(f"  {case['name']}: {'+'.join(case['voices'])}, {dialog.speech_seconds:.0f} s speech, "
                  f"{len(transcript.speaker_centroids)} clusters, {seconds:.1f} s", flush=True)
    out_file.write_text(json.dumps(out))


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Cluster:
    dialog: str
    library: int
    speaker: int
    talk_seconds: float
    truth: str | None  # the voice it overlaps most; None: no true speech under it
    enrolled: bool  # its true voice is in the library
    centroid: tuple[float, ...]
    model: tuple[str | None, str | None, int]  # name, revision, dimension


def clusters_of(results: dict[str, Any]) -> list[Cluster]:
    """Every speaker cluster of every dialog, with the true voice it overlaps most."""
    from tests.support.dialog import overlap_seconds

    out = []
    for d in results["dialogs"]:
        enrolled = {e["voice"] for e in results["libraries"][d["library"]]}
        for key, centroid in sorted(d["centroids"].items(), key=lambda kv: int(kv[0])):
            speaker = int(key)
            by_voice: dict[str, float] = {}
            for start, end, who in d["segments"]:
                if who != speaker:
                    continue
                for t_start, t_end, voice in d["turns"]:
                    by_voice[voice] = by_voice.get(voice, 0.0) + overlap_seconds((start, end), (t_start, t_end))
            truth = max(sorted(by_voice), key=lambda v: by_voice[v]) if any(by_voice.values()) else None
            out.append(Cluster(dialog=d["name"], library=d["library"], speaker=speaker,
                               talk_seconds=float(d["talk"].get(key, 0.0)), truth=truth, enrolled=truth in enrolled,
                               centroid=tuple(centroid),
                               model=(d["model_name"], d["model_revision"], len(centroid))))
    return out


def samples_of(results: dict[str, Any]) -> list[list[Any]]:
    """Each library's enrolment embeddings as store rows (what daemon.voices.matching.library reads)."""
    from daemon.store import SampleRow

    now = dt.datetime(2026, 1, 1)
    return [[SampleRow(id=i + 1, voice_id=i + 1, name=e["voice"], embedding=tuple(e["embedding"]),
                       model_name=e["model_name"], model_revision=e["model_revision"],
                       dimension=len(e["embedding"]), sha256=None, speech_seconds=e["speech_seconds"],
                       origin="cli", source=None, job_id=None, created_at=now)
             for i, e in enumerate(enrolled)] for enrolled in results["libraries"]]


def outcome(cluster: Cluster, named: str | None) -> str:
    if named is None:
        return "missed" if cluster.enrolled else "unnamed_right"
    return "correct" if cluster.enrolled and named == cluster.truth else "false"


@dataclass(frozen=True)
class Naming:
    cluster: Cluster
    named: str | None
    score: float | None  # of the name given
    outcome: str
    split: bool  # missed, and another cluster of the same dialog got its voice's name


def name_all(clusters: Sequence[Cluster], samples: Sequence[Sequence[Any]], *, threshold: float,
             margin: float, merge: bool = True) -> list[Naming]:
    """daemon.voices.matching.library + match, one dialog at a time (one to one
    within a recording, as the worker names them), against the dialog's own library.
    `merge` (speakers.refine, the default): a cluster that passes threshold and margin
    for a voice that names another cluster of its dialog is merged into it
    (matching.merge_known_voices), so it carries that name too: a false name when that
    is not its voice."""
    from daemon.voices import matching

    by_dialog: dict[str, list[Cluster]] = {}
    for c in clusters:
        by_dialog.setdefault(c.dialog, []).append(c)
    out = []
    for group in by_dialog.values():
        name, revision, dimension = group[0].model
        library = matching.library(samples[group[0].library], model_name=name, model_revision=revision,
                                 dimension=dimension)
        scored = matching.match({c.speaker: c.centroid for c in group}, library, threshold=threshold, margin=margin)
        given = {s.chosen.name for s in scored.values() if s.chosen is not None}
        for c in group:
            chosen = scored[c.speaker].chosen
            if merge and chosen is None:
                chosen = scored[c.speaker].qualified
            result = outcome(c, chosen.name if chosen else None)
            out.append(Naming(cluster=c, named=chosen.name if chosen else None,
                              score=chosen.score if chosen else None, outcome=result,
                              split=result == "missed" and c.truth in given))
    return out


Counts = dict[str, int]


def tally(namings: Sequence[Naming]) -> Counts:
    """How many clusters came out correct, false, missed, unnamed right;
    `false_enrolled` / `false_unknown` split the false names, `missed_split` the missed
    ones whose voice named another cluster of the same recording (one to one);
    `false_dialogs`: dialogs with at least one false name."""
    counts = dict.fromkeys((*OUTCOMES, "false_enrolled", "false_unknown", "missed_split"), 0)
    for n in namings:
        counts[n.outcome] += 1
        if n.outcome == "false":
            counts["false_enrolled" if n.cluster.enrolled else "false_unknown"] += 1
        counts["missed_split"] += n.split
    counts["false_dialogs"] = len({n.cluster.dialog for n in namings if n.outcome == "false"})
    return counts


def grid(clusters: Sequence[Cluster], samples: Sequence[Sequence[Any]]) -> dict[tuple[float, float], Counts]:
    return {(t, m): tally(name_all(clusters, samples, threshold=t, margin=m)) for t in THRESHOLDS for m in MARGINS}


def choose(counts: dict[tuple[float, float], Counts], appearances: int) -> tuple[float, float]:
    """Among the points naming at least MIN_NAMED_SHARE of the enrolled voices'
    `appearances` (all points when none does): the fewest false names (within sqrt of
    the fewest: noise), then the most correct names, then the fewest false names; among
    points that tie on all that, the middle of the tied thresholds (the farthest from
    both edges of the safe range), then the larger margin."""
    usable = {k: c for k, c in counts.items() if c["correct"] >= MIN_NAMED_SHARE * appearances} or counts
    fewest = min(c["false"] for c in usable.values())
    safe = {k: c for k, c in usable.items() if c["false"] <= fewest + math.sqrt(fewest)}
    most = max(c["correct"] for c in safe.values())
    best = {k: c for k, c in safe.items() if c["correct"] == most}
    least = min(c["false"] for c in best.values())
    tied = sorted(k for k, c in best.items() if c["false"] == least)
    thresholds = sorted({t for t, _ in tied})
    middle = thresholds[(len(thresholds) - 1) // 2]
    return max((k for k in tied if k[0] == middle), key=lambda k: k[1])


def score_spread(clusters: Sequence[Cluster], samples: Sequence[Sequence[Any]]) -> dict[str, list[float]]:
    """Cosine of each cluster with its own enrolled voice (genuine) and with the best
    other voice of its library (impostor), and own minus best other for genuine ones."""
    from daemon.voices import matching

    out: dict[str, list[float]] = {"genuine": [], "impostor_enrolled": [], "impostor_unknown": [], "gap": [],
                                   "genuine_long": [], "impostor_unknown_long": []}
    for c in clusters:
        name, revision, dimension = c.model
        library = matching.library(samples[c.library], model_name=name, model_revision=revision,
                                 dimension=dimension, warn=False)
        scored = matching.match({c.speaker: c.centroid}, library, threshold=2.0, margin=0.0)[c.speaker]
        others = [s.score for s in scored.candidates if s.name != c.truth]
        if c.enrolled:
            own = next(s.score for s in scored.candidates if s.name == c.truth)
            out["genuine"].append(own)
            out["impostor_enrolled"].append(max(others))
            out["gap"].append(own - max(others))
            if c.talk_seconds >= LONG_CLUSTER_SECONDS:
                out["genuine_long"].append(own)
        else:
            out["impostor_unknown"].append(max(others))
            if c.talk_seconds >= LONG_CLUSTER_SECONDS:
                out["impostor_unknown_long"].append(max(others))
    return out


def describe_false(namings: Sequence[Naming]) -> str:
    """The false names by (true voice, name given): how often, the highest score."""
    pairs: dict[tuple[str, str], list[float]] = {}
    for n in namings:
        if n.outcome == "false" and n.named is not None and n.score is not None:
            pairs.setdefault((n.cluster.truth or "(no speech)", n.named), []).append(n.score)
    ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), -max(kv[1]), kv[0]))
    return "; ".join(f"{truth} as {named} x{len(scores)} (up to {max(scores):.3f})"
                     for (truth, named), scores in ranked) or "none"


def main(quick: bool = False, results_file: Path | None = None) -> Result:
    """`results_file`: the child's raw results, kept there (or, when it exists, read from
    there instead of transcribing again: for re-scoring)."""
    from daemon.config import SpeakersConfig

    libraries, rounds = (1, 2) if quick else (LIBRARIES, ROUNDS)
    started = header("voices", quick, f"{libraries} libraries of {ENROLLED} held-out voices x {rounds} rounds of "
                                      "2- and 3-voice dialogs of enrolled and unknown voices, threshold x margin")
    if results_file is not None and results_file.is_file():
        results = json.loads(results_file.read_text())
        print(f"results read from {results_file}")
    else:
        from tests.support.models import cached_tiny_models

        models = cached_tiny_models()
        work = plan(libraries, rounds)
        with tempfile.TemporaryDirectory(prefix="spkd-bench-voices-") as tmp:
            plan_file, out_file = Path(tmp) / "plan.json", Path(tmp) / "results.json"
            plan_file.write_text(json.dumps(work))
            subprocess.run([PYTHON, "-m", "bench.voices", "--child", str(models), str(plan_file), str(out_file)],
                           check=True, env=clean_env(OMP_WAIT_POLICY="PASSIVE"), cwd=REPO)
            results = json.loads(out_file.read_text())
        if results_file is not None:
            results_file.write_text(json.dumps(results))
    clusters = clusters_of(results)
    samples = samples_of(results)
    counts = grid(clusters, samples)
    enrolled_clusters = sum(c.enrolled for c in clusters)
    unknown_clusters = len(clusters) - enrolled_clusters
    dialogs = results["dialogs"]
    appearances = sum(1 for d in dialogs for v in d["voices"]
                      if v in {e["voice"] for e in results["libraries"][d["library"]]})
    rows = [[f"{t:g}", f"{m:g}", c["correct"], f"{c['correct'] / appearances:.0%}" if appearances else "-",
             c["false"], c["false_enrolled"], c["false_unknown"], c["false_dialogs"], c["missed"], c["missed_split"],
             c["unnamed_right"]] for (t, m), c in counts.items()]
    table(f"Naming {len(clusters)} clusters of {len(dialogs)} dialogs ({enrolled_clusters} clusters of an enrolled "
          f"voice, {unknown_clusters} of an unknown one; {appearances} appearances of an enrolled voice); "
          f"{len(results['libraries'])} libraries of {ENROLLED} voices",
          ["threshold", "margin", "correct", "enrolled voices named", "false", "false: enrolled as another",
           "false: unknown named", "dialogs with a false name", "missed", "missed: split", "unnamed right"], rows)
    print("enrolled voices named = correct / appearances of an enrolled voice in a dialog; missed: split = missed "
          "clusters whose voice named another cluster of the same dialog (the clusterer split one voice; one to one "
          "gives the name once)")
    spread = score_spread(clusters, samples)
    quantiles = (0, 5, 25, 50, 75, 95, 100)
    table("Cosine scores against the library (tiny CAM++)", ["scores", "clusters", *(f"p{q}" for q in quantiles)],
          [[label, len(spread[key]), *(percentile(spread[key], q) if spread[key] else float("nan")
                                       for q in quantiles)]
           for key, label in (("genuine", "own voice (enrolled)"),
                              ("genuine_long", f"own voice, clusters >= {LONG_CLUSTER_SECONDS:g} s"),
                              ("impostor_enrolled", "best other (enrolled)"),
                              ("impostor_unknown", "best voice (unknown)"),
                              ("impostor_unknown_long", f"best voice (unknown), >= {LONG_CLUSTER_SECONDS:g} s"),
                              ("gap", "own - best other (enrolled)"))])
    voices_true = sum(len(d["voices"]) for d in dialogs)
    split = sum(1 for d in dialogs if len(d["centroids"]) != len(d["voices"]))
    unmatched = sum(1 for c in clusters if c.truth is None)
    print(f"{len(dialogs)} dialogs of {voices_true} voices gave {len(clusters)} clusters ({split} dialogs with "
          f"another speaker count than voices; {unmatched} clusters with no true speech); "
          f"{sum(d['speech_seconds'] for d in dialogs):.0f} s of speech, transcribed in "
          f"{sum(d['seconds'] for d in dialogs):.0f} s", flush=True)
    chosen = choose(counts, appearances)
    configured = (SpeakersConfig().match_threshold, SpeakersConfig().match_margin)
    usable = {k: c for k, c in counts.items() if c["correct"] >= MIN_NAMED_SHARE * appearances} or counts
    strict = min(usable, key=lambda k: (usable[k]["false"], -usable[k]["correct"]))
    print(f"points naming >= {MIN_NAMED_SHARE:.0%} of the enrolled voices: {len(usable)}; the fewest false names "
          f"among them: {usable[strict]['false']}")
    points = [("recommended", chosen), ("configured (daemon.config.SpeakersConfig)", configured)]
    if strict != chosen:
        points.insert(1, ("strictly fewest false names (no noise allowance)", strict))
    for label, point in points:
        c = counts.get(point)
        if c is None:
            print(f"{label}: threshold {point[0]:g}, margin {point[1]:g} (not on the grid)")
            continue
        namings = name_all(clusters, samples, threshold=point[0], margin=point[1])
        print(f"{label}: threshold {point[0]:g}, margin {point[1]:g}: {c['correct']}/{appearances} enrolled voices "
              f"named ({enrolled_clusters} clusters of them), {c['false']} false names in {c['false_dialogs']}/"
              f"{len(dialogs)} dialogs, {c['missed']} missed ({c['missed_split']} of them split), "
              f"{c['unnamed_right']}/{unknown_clusters} unknown left unnamed\n"
              f"  false names (true voice as name): {describe_false(namings)}", flush=True)
    if configured in counts:
        merged, kept = (tally(name_all(clusters, samples, threshold=configured[0], margin=configured[1], merge=m))
                        for m in (True, False))
        print(f"known voices merging split clusters (speakers.refine) at the configured defaults: {merged['false']} "
              f"false names with it, {kept['false']} without; {merged['missed_split']} split clusters missed with "
              f"it, {kept['missed_split']} without", flush=True)
    result = Result("voices")
    result.ratio("enrolled voices named at the recommended default",
                 counts[chosen]["correct"] / appearances if appearances else 0.0,
                 f"threshold {chosen[0]:g}, margin {chosen[1]:g}")
    if configured in counts:
        c = counts[configured]
        result.ratio("enrolled voices named at the configured defaults",
                     c["correct"] / appearances if appearances else 0.0,
                     f"threshold {configured[0]:g}, margin {configured[1]:g}")
        result.ratio("dialogs with a false name at the configured defaults", c["false_dialogs"] / len(dialogs),
                     "the worst error; 0 is the aim")
    if configured != chosen:
        result.notes.append(f"the configured defaults ({configured[0]:g}, {configured[1]:g}) are not the "
                            f"recommended ({chosen[0]:g}, {chosen[1]:g})")
    result.report()
    footer("voices", started)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("MODELS", "PLAN", "OUT"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results", type=Path, default=None,
                        help="keep the raw results in this file; score from it when it exists")
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), Path(args.child[2]))
    else:
        main(quick=args.quick, results_file=args.results)
