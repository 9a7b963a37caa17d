"""The whole house with real parts: `spkd run` as a process, real FunASR on the tiny
models, real files dropped into the inbox, checked from outside."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.audio import make_silence_wav
from tests.support.daemon import REPO, Daemon

pytestmark = pytest.mark.e2e


def real_daemon(root: Path, tiny_models, **config) -> Daemon:
    base = {"models": {"dir": str(tiny_models.asr.parent)}, "workers": {"count": 1},
            "jobs": {"lease_seconds": 60, "heartbeat_seconds": 2},
            "output": {"formats": ["json", "txt", "srt", "vtt", "sentences"]}}
    for section, values in config.items():
        base.setdefault(section, {}).update(values)
    return Daemon(root, config=base, fake_engine=False)


def spkd(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), *args],
                          capture_output=True, text=True, env=d.env, cwd=REPO, timeout=120)


def test_dropped_wav_and_m4a_become_speaker_labelled_transcripts(tmp_path, tiny_models, two_voice_wav,
                                                                 two_voice_m4a):
    with real_daemon(tmp_path, tiny_models) as d:
        d.start(timeout=120)
        (d.inbox / "meeting.wav").write_bytes(two_voice_wav.read_bytes())
        (d.inbox / "call.m4a").write_bytes(two_voice_m4a.read_bytes())
        jobs = d.wait_finished(2, timeout=300)
        for job in jobs:
            assert job["state"] == "done", job
            assert job["device"] == "cpu" and job["speakers"] >= 1
            assert 20 < job["audio_seconds"] < 40 and job["processing_seconds"] > 0
            assert job["rtf"] == pytest.approx(job["processing_seconds"] / job["audio_seconds"])
            stem = Path(job["source_name"]).stem
            for ext in (".json", ".txt", ".srt", ".vtt", ".sentences.txt"):
                assert (d.outbox / f"{stem}{ext}").stat().st_size > 0
            payload = json.loads((d.outbox / f"{stem}.json").read_text())
            assert payload["schema"] == "spkd.transcript/1" and payload["segments"]
            assert payload["source"]["name"] == job["source_name"] and payload["source"]["sha256"] == job["sha256"]
            assert payload["engine"]["device"] == "cpu" and payload["engine"]["funasr_version"]
            assert all(re.fullmatch(r"Speaker\d+", s["speaker_label"]) for s in payload["segments"])
            srt_text = (d.outbox / f"{stem}.srt").read_text()
            cue_texts = [block.split("\n", 2)[2] for block in srt_text.strip().split("\n\n")]
            assert cue_texts and all(re.match(r"Speaker\d+: ", t) for t in cue_texts)
            assert all(p.startswith("Speaker") for p in (d.outbox / f"{stem}.txt").read_text().split("\n\n") if p)
            d.wait((tmp_path / "archive" / job["source_name"]).exists, what="archived source")
            # What was said is in the database too: one row per segment of the json.
            rows = d.query("SELECT idx, start_seconds, end_seconds, speaker, text FROM segments WHERE job_id = ? "
                           "ORDER BY idx", job["id"])
            assert [(r["start_seconds"], r["end_seconds"], r["speaker"], r["text"]) for r in rows] == [
                (s["start"], s["end"], s["speaker_label"], s["text"]) for s in payload["segments"]]
            longest = max(payload["segments"], key=lambda s: len(s["text"]))
            found = json.loads(spkd(d, "search", longest["text"], "--job", str(job["id"]), "--json").stdout)
            assert {(h["start_seconds"], h["text"]) for h in found} >= {(longest["start"], longest["text"])}
        # History is plain SQL, read-only.
        out = spkd(d, "sql", "SELECT state, count(*) AS n FROM jobs GROUP BY state", "--json")
        assert json.loads(out.stdout) == [{"state": "done", "n": 2}]
        refused = spkd(d, "sql", "DELETE FROM jobs")
        assert refused.returncode != 0 and "read-only" in refused.stderr
        assert len(d.jobs()) == 2
        listing = spkd(d, "jobs", "--json")
        assert {j["source_name"] for j in json.loads(listing.stdout)} == {"meeting.wav", "call.m4a"}
        assert d.stop() == 0


def test_bad_input_catalogue_ends_in_defined_states(tmp_path, tiny_models, two_voice_m4a):
    with real_daemon(tmp_path, tiny_models, watch={"empty_fail_seconds": 3}) as d:
        d.start(timeout=120)
        data = two_voice_m4a.read_bytes()
        drops = {
            "empty.wav": b"",
            "truncated.m4a": data[: len(data) // 3],
            "random.wav": os.urandom(64_000),
            "text.mp3": b"not audio at all\n" * 500,
        }
        for name, payload in drops.items():
            (d.inbox / name).write_bytes(payload)
        (tmp_path / "src").mkdir()
        make_silence_wav(tmp_path / "src" / "silence.wav", 60)
        (d.inbox / "silence.wav").write_bytes((tmp_path / "src" / "silence.wav").read_bytes())
        subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(tmp_path / "src" / "blip.wav"), "synth", "0.2",
                        "sine", "440"], check=True)
        (d.inbox / "blip.wav").write_bytes((tmp_path / "src" / "blip.wav").read_bytes())
        jobs = {j["source_name"]: j for j in d.wait_finished(6, timeout=120)}
        assert jobs["silence.wav"]["state"] == "done" and jobs["silence.wav"]["speakers"] == 0
        assert json.loads((d.outbox / "silence.json").read_text())["segments"] == []
        assert (d.outbox / "silence.srt").read_text() == ""
        expected_kinds = {"empty.wav": {"empty"}, "truncated.m4a": {"not_audio", "bad_audio"},
                          "random.wav": {"not_audio"}, "text.mp3": {"not_audio"}, "blip.wav": {"too_short"}}
        for name, kinds in expected_kinds.items():
            job = jobs[name]
            assert job["state"] == "failed" and job["error_kind"] in kinds, job
            assert job["error_message"]
            error_file = tmp_path / "failed" / f"{name}.error.json"
            d.wait(error_file.exists, what=str(error_file))  # the row is written first, then the file moves
            error = json.loads(error_file.read_text())
            assert error["job_id"] == job["id"] and error["error_message"] == job["error_message"]
        assert d.proc.poll() is None
        assert d.stop() == 0


def test_an_hour_long_recording(tmp_path, tiny_models, two_voice_wav):
    src = tmp_path / "src"
    src.mkdir()
    make_silence_wav(src / "gap.wav", 3600)  # 27 s + 1 h + 27 s: past the hour mark
    long_flac = src / "long.flac"
    subprocess.run(["sox", str(two_voice_wav), str(src / "gap.wav"), str(two_voice_wav), str(long_flac)],
                   check=True)
    with real_daemon(tmp_path, tiny_models) as d:
        d.start(timeout=120)
        (d.inbox / "long.flac").write_bytes(long_flac.read_bytes())
        [job] = d.wait_finished(1, timeout=400)
        assert job["state"] == "done" and job["audio_seconds"] > 3600
        payload = json.loads((d.outbox / "long.json").read_text())
        assert payload["segments"][0]["start"] < 60 and payload["segments"][-1]["end"] > 3600
        srt_text = (d.outbox / "long.srt").read_text()
        assert re.search(r"^01:0\d:\d\d,\d{3} --> ", srt_text, re.M)
        assert d.stop() == 0


def test_run_refuses_to_start_when_models_are_missing(tmp_path):
    d = Daemon(tmp_path, config={"models": {"dir": str(tmp_path / "no-models")}}, fake_engine=False)
    started = time.monotonic()
    out = spkd(d, "run")
    assert out.returncode == 2 and time.monotonic() - started < 30
    assert "paraformer-zh" in out.stderr and "spkd models fetch" in out.stderr and "make-tiny" in out.stderr
