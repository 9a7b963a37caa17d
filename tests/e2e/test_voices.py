"""Speakers with names, from outside: `spkd voices add`, a running daemon, `spkd
speakers`, the watched voices folder; held-out voices only (tests/support/dialog.py
TEST_VOICES: A m3, B f1, C victor, D m7) with the tiny speaker model that separates
them. And the enrolment queue's crash safety, with the fast fake engine: a worker
SIGKILLed mid-enrolment leaves exactly one sample once the job is retried."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import writers
from tests.support.audio import require_tools
from tests.support.daemon import REPO, Daemon, write_wav
from tests.support.dialog import TEST_VOICES, Dialog, attribution, make_dialog

pytestmark = pytest.mark.e2e

A, B, C, D = TEST_VOICES
FORMATS = ["json", "txt", "srt", "vtt", "sentences", "md"]


def spkd(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=300)


def names_by_voice(json_path: Path, dialog: Dialog) -> dict[str, str]:
    """True voice -> how the outputs show its speaker, by time overlap."""
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    mapping = attribution([(s["start"], s["end"], s["speaker_label"]) for s in doc["segments"]],
                          dialog.turns).mapping
    shown = {s["label"]: s["display"] for s in doc["speakers"]}
    return {voice: shown[label] for label, voice in mapping.items()}


def shown_speakers(d: Daemon, stem: str) -> dict[str, set[str]]:
    """Per format, the speaker names its file shows."""
    import re

    found = {}
    txt = (d.outbox / f"{stem}.txt").read_text(encoding="utf-8")
    found["txt"] = set(re.findall(r"^(\S+) \[\d\d:\d\d:\d\d\]:", txt, re.MULTILINE))
    srt = (d.outbox / f"{stem}.srt").read_text(encoding="utf-8")
    found["srt"] = set(re.findall(r"^\d\d:\d\d:\d\d,\d{3} --> .*\n([^:\n]+): ", srt, re.MULTILINE))
    vtt = (d.outbox / f"{stem}.vtt").read_text(encoding="utf-8")
    found["vtt"] = set(re.findall(r"<v ([^>]+)>", vtt))
    doc = json.loads((d.outbox / f"{stem}.json").read_text(encoding="utf-8"))
    found["json"] = {s["speaker_name"] for s in doc["segments"]}
    return found


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dialog]:
    require_tools("espeak-ng")
    folder = tmp_path_factory.mktemp("voices-e2e")
    return {
        "solo A": make_dialog(folder / "solo-a.wav", [A], seed=21, min_speech_seconds=15),
        "solo C": make_dialog(folder / "solo-c.wav", [C], seed=22, min_speech_seconds=15),
        "A again": make_dialog(folder / "a-again.wav", [A], seed=27, min_speech_seconds=30),
        "A B": make_dialog(folder / "a-b.wav", [A, B], seed=23),
        "B C": make_dialog(folder / "b-c.wav", [B, C], seed=24),
        "B D": make_dialog(folder / "b-d.wav", [B, D], seed=25),
        "C D": make_dialog(folder / "c-d.wav", [C, D], seed=26),
    }


def test_names_from_the_library_renaming_and_the_next_recording(tmp_path, tiny_models, recordings):
    config = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
              "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2}, "output": {"formats": FORMATS}}
    with Daemon(tmp_path, config=config, fake_engine=False) as d:
        added = spkd(d, "voices", "add", "王总", str(recordings["solo A"].path), "--json")
        assert added.returncode == 0, added.stderr[-2000:]
        assert json.loads(added.stdout)[0]["name"] == "王总"
        d.start(timeout=180)
        for name in ("A B", "B C"):
            (d.inbox / f"{name.replace(' ', '-')}.wav").write_bytes(recordings[name].path.read_bytes())
        jobs = d.wait_finished(2, timeout=300)
        assert all(j["state"] == "done" for j in jobs), jobs
        ids = {Path(j["source_name"]).stem: j["id"] for j in jobs}

        # A is named in every format; B, unknown, is an unnamed speaker, and there is no
        # third (a voice split by the clusterer is one speaker again)
        a_b = names_by_voice(d.outbox / "A-B.json", recordings["A B"])
        assert a_b[A] == "王总" and a_b[B].startswith("Speaker"), a_b
        assert len(json.loads((d.outbox / "A-B.json").read_text())["speakers"]) == 2
        shown = shown_speakers(d, "A-B")
        assert "王总" in shown["json"] and all(found == shown["json"] for found in shown.values()), shown
        assert all(n == "王总" or n.startswith("Speaker") for n in shown["json"])
        # two unknown voices: nobody is named
        assert all(s["name"] is None for s in json.loads((d.outbox / "B-C.json").read_text())["speakers"])
        assert all(n.startswith("Speaker") for found in shown_speakers(d, "B-C").values() for n in found)

        # rename B (as the outputs show it) in A-B with --enrol: every output rewritten
        before = {fmt: (d.outbox / f"A-B{writers.extension(fmt)}").read_bytes() for fmt in FORMATS}
        renamed = spkd(d, "speakers", str(ids["A-B"]), f"{a_b[B]}=李雷", "--enrol")
        assert renamed.returncode == 0, renamed.stderr[-2000:]
        assert "李雷" in renamed.stdout
        for fmt in FORMATS:
            after = (d.outbox / f"A-B{writers.extension(fmt)}").read_bytes()
            assert after != before[fmt] and "李雷".encode() in after, fmt
        shown = shown_speakers(d, "A-B")
        assert {"王总", "李雷"} <= shown["json"] and all(found == shown["json"] for found in shown.values()), shown
        listing = json.loads(spkd(d, "speakers", str(ids["A-B"]), "--json").stdout)
        assert {r["shown_as"]: r["renamed"] for r in listing if r["shown_as"] in ("王总", "李雷")} == {
            "王总": False, "李雷": True}
        assert [e["kind"] for e in d.events(ids["A-B"])][-1] == "renamed"
        assert d.query("SELECT count(*) AS n FROM segments WHERE job_id = ? AND speaker = '李雷'",
                       ids["A-B"])[0]["n"] > 0

        # the next recording of B names B; a new recording of A alone is 王总 and nobody else
        (d.inbox / "B-D.wav").write_bytes(recordings["B D"].path.read_bytes())
        (d.inbox / "A-again.wav").write_bytes(recordings["A again"].path.read_bytes())
        jobs = d.wait_finished(4, timeout=300)
        assert all(j["state"] == "done" for j in jobs), jobs
        again = json.loads((d.outbox / "A-again.json").read_text(encoding="utf-8"))
        assert [s["display"] for s in again["speakers"]] == ["王总"], again["speakers"]
        b_d = names_by_voice(d.outbox / "B-D.json", recordings["B D"])
        assert b_d[B] == "李雷" and b_d[D].startswith("Speaker"), b_d

        # spkd voices match explains the scores
        matched = spkd(d, "voices", "match", str(recordings["B D"].path), "--json")
        assert matched.returncode == 0, matched.stderr[-2000:]
        assert "李雷" in {e["name"] for e in json.loads(matched.stdout)}
        assert d.stop() == 0


def test_the_voices_folder_enrols_and_forgets_under_a_running_daemon(tmp_path, tiny_models, recordings):
    config = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
              "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2}, "output": {"formats": ["json", "txt"]}}
    with Daemon(tmp_path, config=config, fake_engine=False) as d:
        d.start(timeout=180)
        (d.voices / "Victor").mkdir(parents=True)
        shutil.copyfile(recordings["solo C"].path, d.voices / "Victor" / "intro.wav")
        [job] = d.wait_finished(1, timeout=300)
        assert (job["state"], job["task"], job["source_name"]) == ("done", "enrol", "voices/Victor/intro.wav")
        listed = json.loads(spkd(d, "voices", "list", "--json").stdout)
        assert [(v["name"], v["origins"]) for v in listed] == [("Victor", ["folder"])]
        assert (d.voices / "Victor" / "intro.wav").exists()  # the library's source of truth stays
        (d.inbox / "C-D.wav").write_bytes(recordings["C D"].path.read_bytes())
        d.wait_finished(2, timeout=300)
        assert names_by_voice(d.outbox / "C-D.json", recordings["C D"])[C] == "Victor"

        shutil.rmtree(d.voices / "Victor")
        d.wait(lambda: json.loads(spkd(d, "voices", "list", "--json").stdout) == [], timeout=60,
               what="the voice gone with its folder")
        rematched = spkd(d, "voices", "rematch")
        assert rematched.returncode == 0 and "1 job(s) re-rendered" in rematched.stdout, rematched.stdout
        assert "Victor" not in (d.outbox / "C-D.txt").read_text(encoding="utf-8")
        assert d.stop() == 0


def test_a_worker_killed_mid_enrolment_enrols_the_file_once(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "2"}, config={"workers": {"count": 1}}) as d:
        d.start()
        write_wav(d.voices / "王总" / "slow-intro.wav", seconds=12.0)
        job = d.wait(lambda: next((j for j in d.jobs() if j["state"] == "running"), None), what="a running enrolment")
        assert job["task"] == "enrol"
        os.kill(job["pid"], signal.SIGKILL)
        [done] = d.wait_finished(1, timeout=60)
        assert (done["state"], done["attempts"]) == ("done", 2)
        samples = d.query("SELECT s.origin, s.source, s.job_id, v.name FROM voice_samples s "
                          "JOIN voices v ON v.id = s.voice_id")
        assert samples == [{"origin": "folder", "source": "王总/slow-intro.wav", "job_id": done["id"],
                            "name": "王总"}]
        kinds = [e["kind"] for e in d.events(done["id"])]
        assert kinds == ["queued", "claimed", "requeued", "claimed", "done"], kinds
        assert (d.voices / "王总" / "slow-intro.wav").exists()
        d.wait((tmp_path / "archive" / "voices" / "王总" / "slow-intro.wav").exists, what="the copy archived")
        assert not [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]
        # a broken file fails its enrolment with a reason and leaves the others alone
        write_wav(d.voices / "王总" / "bad-take.wav", seconds=12.0)
        jobs = d.wait_finished(2, timeout=60)
        failed = next(j for j in jobs if j["state"] == "failed")
        assert failed["error_kind"] == "bad_audio" and "fake bad audio" in failed["error_message"]
        error_file = tmp_path / "failed" / "voices" / "王总" / "bad-take.wav.error.json"
        d.wait(error_file.exists, what="the .error.json")
        assert json.loads(error_file.read_text())["job_id"] == failed["id"]
        assert (d.voices / "王总" / "bad-take.wav").exists()
        assert d.stop() == 0
