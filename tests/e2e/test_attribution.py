"""Who said what, end to end: synthetic dialogs of held-out voices (the tiny CAM++ never
heard them) through the real daemon and through `spkd transcribe`, with no speaker
hint, scored by time against the true turns (tests/support/dialog.py).

Asserted: two and three voices (alternating turns, 2-s pauses, >= 30 s of speech) give
exactly that many speakers and >= 90 % of the speech time carries the right one under
the best one-to-one mapping; `speakers: N` still fixes the count. Reported, not
asserted: short turns (1-2 s) and a dominant speaker (80 % of the time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.audio import require_tools
from tests.support.daemon import REPO, Daemon
from tests.support.dialog import TEST_VOICES, Attribution, Dialog, attribution, make_dialog

pytestmark = pytest.mark.e2e

MIN_SHARE = 0.90


@pytest.fixture(scope="module")
def dialogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dialog]:
    require_tools("espeak-ng")
    folder = tmp_path_factory.mktemp("dialogs")
    two, three = list(TEST_VOICES[:2]), list(TEST_VOICES[:3])
    return {
        "two": make_dialog(folder / "two.wav", two, seed=1),
        "three": make_dialog(folder / "three.wav", three, seed=2),
        "short": make_dialog(folder / "short.wav", two, seed=3, turn_seconds=(1.0, 2.0)),
        "dominant": make_dialog(folder / "dominant.wav", two, seed=4, dominant_share=0.8),
    }


def score(json_path: Path, dialog: Dialog) -> Attribution:
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    return attribution([(s["start"], s["end"], s["speaker_label"]) for s in payload["segments"]], dialog.turns)


def check(name: str, result: Attribution, dialog: Dialog) -> None:
    assert dialog.speech_seconds >= 30, dialog.speech_seconds
    assert result.speakers == len(dialog.voices), f"{name}: {result}"
    assert result.share >= MIN_SHARE, f"{name}: {result}"


def report(name: str, result: Attribution, dialog: Dialog, record_property) -> None:
    line = (f"{name}: {len(dialog.voices)} voices {dialog.voices}, {len(dialog.turns)} turns, "
            f"{dialog.speech_seconds:.0f} s speech, first voice {dialog.share(dialog.voices[0]):.0%}: {result}")
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
        for name in ("two", "three"):
            result = score(d.outbox / f"{name}.json", dialogs[name])
            report(f"daemon {name}", result, dialogs[name], record_property)
            check(name, result, dialogs[name])
            assert by_name[name]["speakers"] == len(dialogs[name].voices)
        assert by_name["hinted"]["speakers"] == 3
        for name in ("short", "dominant"):
            result = score(d.outbox / f"{name}.json", dialogs[name])
            report(f"daemon {name}", result, dialogs[name], record_property)
            assert result.speakers >= 1
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
    for name in ("two", "three"):
        result = score(out / f"{name}.json", dialogs[name])
        report(f"transcribe {name}", result, dialogs[name], record_property)
        check(name, result, dialogs[name])
    for name in ("short", "dominant"):
        report(f"transcribe {name}", score(out / f"{name}.json", dialogs[name]), dialogs[name], record_property)
