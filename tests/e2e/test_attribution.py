"""Who said what, end to end: synthetic dialogs of held-out voices (the tiny CAM++ never
heard them) through the real daemon and through `spkd transcribe`, with no speaker
hint, scored by time against the true turns (tests/support/dialog.py).

Asserted: two and three voices (alternating turns, 2-s pauses, >= 30 s of speech), a
person who says only two short sentences (about 3 s) beside another's eight turns, and
a dominant speaker (85 % of the time) give exactly that many speakers, >= 90 % of the
speech time carries the right one under the best one-to-one mapping, and no segment runs
across the 2-s pause between two turns (sentences are cut at pauses over
`output.max_pause_seconds`), and the transcript's time outside every turn is at most 3 %
of the speech time (sentence ends moved to the speech, not left in FSMN-VAD's margin,
which the tiny ASR's evenly spread token times fill); `speakers: N` still fixes the
count. Reported, not asserted: short turns (1-2 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.audio import require_tools
from tests.support.daemon import REPO, Daemon
from tests.support.dialog import (
    TEST_VOICES,
    Attribution,
    Dialog,
    attribution,
    interjection_script,
    make_dialog,
    make_scripted_dialog,
    outside_seconds,
)

pytestmark = pytest.mark.e2e

MIN_SHARE = 0.90
MAX_OUTSIDE = 0.03  # transcript time over no turn, share of the speech time (issue 32)
ASSERTED = ("two", "three", "interjector", "dominant")


@pytest.fixture(scope="module")
def dialogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dialog]:
    require_tools("espeak-ng")
    folder = tmp_path_factory.mktemp("dialogs")
    two, three = list(TEST_VOICES[:2]), list(TEST_VOICES[:3])
    return {
        "two": make_dialog(folder / "two.wav", two, seed=1),
        "three": make_dialog(folder / "three.wav", three, seed=2),
        "short": make_dialog(folder / "short.wav", two, seed=3, turn_seconds=(1.0, 2.0)),
        "dominant": make_dialog(folder / "dominant.wav", two, seed=4, dominant_share=0.85, min_speech_seconds=60),
        "interjector": make_scripted_dialog(folder / "interjector.wav", interjection_script(*two, seed=5), seed=5),
    }


def segments_of(json_path: Path) -> list[tuple[float, float, str]]:
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    return [(s["start"], s["end"], s["speaker_label"]) for s in payload["segments"]]


def score(json_path: Path, dialog: Dialog) -> Attribution:
    return attribution(segments_of(json_path), dialog.turns)


def outside_share(json_path: Path, dialog: Dialog) -> float:
    """The transcript's time over no turn, as a share of the speech time."""
    return outside_seconds(segments_of(json_path), dialog.turns) / dialog.speech_seconds


def check(name: str, json_path: Path, dialog: Dialog) -> None:
    result = score(json_path, dialog)
    assert dialog.speech_seconds >= 30, dialog.speech_seconds
    assert result.speakers == len(dialog.voices), f"{name}: {result}"
    assert result.share >= MIN_SHARE, f"{name}: {result}"
    for start, end, speaker in segments_of(json_path):
        turns = [t for t in dialog.turns if min(end, t.end) - max(start, t.start) > 0.05]
        assert len(turns) <= 1, f"{name}: {speaker} {start:.2f}-{end:.2f} runs across turns {turns}"
    assert outside_share(json_path, dialog) <= MAX_OUTSIDE, f"{name}: {outside_share(json_path, dialog):.1%} outside"


def report(name: str, json_path: Path, dialog: Dialog, record_property) -> None:
    line = (f"{name}: {len(dialog.voices)} voices {dialog.voices}, {len(dialog.turns)} turns, "
            f"{dialog.speech_seconds:.0f} s speech, first voice {dialog.share(dialog.voices[0]):.0%}: "
            f"{score(json_path, dialog)}, {outside_share(json_path, dialog):.1%} of the transcript's time outside turns")
    print(line)
    record_property(name, line)


def test_daemon_attributes_turns_without_a_hint(tmp_path: Path, tiny_models, dialogs: dict[str, Dialog],
                                                record_property) -> None:
    config = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
              "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2}, "output": {"formats": ["json", "txt"]}}
    with Daemon(tmp_path, config=config, fake_engine=False) as d:
        d.start(timeout=180)
        for name, dialog in dialogs.items():
            (d.inbox / f"{name}.wav").write_bytes(dialog.path.read_bytes())
        # the hint still works: three speakers asked of a two-voice dialog
        (d.inbox / "hinted.wav.spkd.json").write_text(json.dumps({"speakers": 3}))
        (d.inbox / "hinted.wav").write_bytes(dialogs["two"].path.read_bytes())
        jobs = d.wait_finished(len(dialogs) + 1, timeout=600)
        assert all(j["state"] == "done" for j in jobs), jobs
        by_name = {Path(j["source_name"]).stem: j for j in jobs}
        for name in dialogs:
            report(f"daemon {name}", d.outbox / f"{name}.json", dialogs[name], record_property)
        for name in ASSERTED:
            check(name, d.outbox / f"{name}.json", dialogs[name])
            assert by_name[name]["speakers"] == len(dialogs[name].voices)
        assert by_name["hinted"]["speakers"] == 3
        assert score(d.outbox / "short.json", dialogs["short"]).speakers >= 1
        assert d.stop() == 0


def test_spkd_transcribe_attributes_turns_without_a_hint(tmp_path: Path, tiny_models, dialogs: dict[str, Dialog],
                                                         record_property) -> None:
    config = tmp_path / "spkd.json"
    config.write_text(json.dumps({
        "models": {"dir": str(tiny_models.asr.parent)},
        "paths": {n: str(tmp_path / "var" / n) for n in ("inbox", "outbox", "archive", "failed", "spool", "state")},
    }))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(config), "transcribe", "--device", "cpu",
         "--formats", "json", "--out", str(out), *(str(d.path) for d in dialogs.values())],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in dialogs:
        report(f"transcribe {name}", out / f"{name}.json", dialogs[name], record_property)
    for name in ASSERTED:
        check(name, out / f"{name}.json", dialogs[name])
