"""The inbox people actually use, against the real daemon process (fake engine)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.daemon import Daemon, write_wav

pytestmark = pytest.mark.e2e


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def slow_copy(src: Path, dst: Path, *, chunk: int, pause: float) -> None:
    data = src.read_bytes()
    with open(dst, "wb") as out:
        for i in range(0, len(data), chunk):
            out.write(data[i:i + chunk])
            out.flush()
            time.sleep(pause)


def by_name(d: Daemon) -> dict[str, dict]:
    return {j["source_name"]: j for j in d.jobs()}


def test_slow_copy_in_pieces_is_taken_only_when_complete(tmp_path):
    with Daemon(tmp_path, config={"watch": {"settle_seconds": 1.0}}) as d:
        d.start()
        src = write_wav(tmp_path / "src" / "long.wav", seconds=3.0)
        # 96 KB in 12 pieces with pauses shorter than settle_seconds: about 5 s of copying.
        slow_copy(src, d.inbox / "long.wav", chunk=8192, pause=0.4)
        [job] = d.wait_finished(1)
        assert job["state"] == "done" and job["sha256"] == sha(src) and job["size_bytes"] == src.stat().st_size
        d.wait((tmp_path / "archive" / "long.wav").exists, what="archived source")
        assert (tmp_path / "archive" / "long.wav").read_bytes() == src.read_bytes()
        assert d.stop() == 0


def test_download_that_renames_itself_when_done(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        src = write_wav(tmp_path / "src" / "talk.wav", seconds=2.0)
        partial = d.inbox / "talk.wav.crdownload"
        slow_copy(src, partial, chunk=16384, pause=0.3)
        time.sleep(1.0)  # longer than settle: the partial name alone must never be taken
        assert d.jobs() == []
        os.rename(partial, d.inbox / "talk.wav")
        [job] = d.wait_finished(1)
        assert job["source_name"] == "talk.wav" and job["sha256"] == sha(src)
        assert d.stop() == 0


def test_ignored_names_stay_untouched(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        names = [".hidden.wav", "a.wav.part", "b.tmp", "~$c.wav", ".DS_Store", "notes.txt", "d.wav.crdownload",
                 "photo.jpg"]
        for name in names:
            write_wav(d.inbox / name)
        (d.inbox / ".git").mkdir()
        write_wav(d.inbox / ".git" / "e.wav")
        write_wav(d.inbox / "real.wav")
        [job] = d.wait_finished(1)
        assert job["source_name"] == "real.wav"
        time.sleep(2.5)  # a rescan later, still nothing else
        assert len(d.jobs()) == 1
        assert sorted(p.name for p in d.inbox.iterdir()) == sorted(names + [".git"])
        assert d.stop() == 0


def test_empty_file_waits_then_fails_with_a_reason(tmp_path):
    with Daemon(tmp_path, config={"watch": {"empty_fail_seconds": 2}}) as d:
        d.start()
        (d.inbox / "empty.wav").touch()
        late = d.inbox / "late.wav"
        late.touch()
        time.sleep(1.0)
        write_wav(late)  # the copy started after a while: not an empty file after all
        jobs = {j["source_name"]: j for j in d.wait_finished(2, timeout=30)}
        assert jobs["empty.wav"]["state"] == "failed" and jobs["empty.wav"]["error_kind"] == "empty"
        assert jobs["late.wav"]["state"] == "done"
        d.wait((tmp_path / "failed" / "empty.wav.error.json").exists, what="empty.wav.error.json")
        assert d.stop() == 0


def test_folders_mirror_and_names_never_collide(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        write_wav(d.inbox / "team" / "a.wav", seed=1)
        write_wav(d.inbox / "a.wav", seed=2)
        wav = write_wav(tmp_path / "src" / "a.wav", seed=3)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(d.inbox / "a.mp3")], check=True)
        write_wav(d.inbox / "会议 记录" / "第一 次.wav", seed=4)
        jobs = d.wait_finished(4)
        assert all(j["state"] == "done" for j in jobs)
        stems = sorted(j["output_stem"] for j in jobs)
        assert stems == sorted(["team/a", "a", "a (2)", "会议 记录/第一 次"])
        outputs = sorted(p.relative_to(d.outbox).as_posix() for p in d.outbox.rglob("*.json"))
        assert outputs == sorted(["team/a.json", "a.json", "a (2).json", "会议 记录/第一 次.json"])
        texts = {json.loads(p.read_text())["source"]["name"] for p in d.outbox.rglob("*.json")}
        assert texts == {"team/a.wav", "a.wav", "a.mp3", "会议 记录/第一 次.wav"}
        d.wait((tmp_path / "archive" / "会议 记录" / "第一 次.wav").exists, what="archived source")
        assert d.stop() == 0


def test_not_audio_fails_at_once_without_a_worker(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        (d.inbox / "readme.mp3").write_text("this is not audio\n" * 100)
        (d.inbox / "noise.wav").write_bytes(os.urandom(50_000))
        write_wav(d.inbox / "blip.wav", seconds=0.2)
        jobs = by_name(d) if len(d.wait_finished(3)) == 3 else {}
        for name in ("readme.mp3", "noise.wav"):
            assert jobs[name]["state"] == "failed" and jobs[name]["error_kind"] == "not_audio", jobs[name]
        assert jobs["blip.wav"]["error_kind"] == "too_short" and "0.20 s" in jobs["blip.wav"]["error_message"]
        for job in jobs.values():
            assert job["attempts"] == 0 and job["slot"] is None and job["device"] is None
            error_file = tmp_path / "failed" / f"{job['source_name']}.error.json"
            d.wait(error_file.exists, what=str(error_file))  # the row is written first, then the file moves
            error = json.loads(error_file.read_text())
            assert error["error_kind"] == job["error_kind"] and error["job_id"] == job["id"]
        assert d.stop() == 0


def test_duplicates_are_transcribed_once(tmp_path):
    with Daemon(tmp_path, env={"SPKD_FAKE_SLOW_SECONDS": "1.5"}) as d:
        d.start()
        src = write_wav(tmp_path / "src" / "slow.wav", seconds=1.0)
        for name in ("slow.wav", "slow copy.wav", "again/slow.wav"):
            (d.inbox / name).parent.mkdir(parents=True, exist_ok=True)
            (d.inbox / name).write_bytes(src.read_bytes())
        jobs = d.wait_finished(3, timeout=60)
        assert all(j["state"] == "done" for j in jobs)
        originals = [j for j in jobs if j["reused_from"] is None]
        assert len(originals) == 1
        assert all(j["reused_from"] == originals[0]["id"] for j in jobs if j is not originals[0])
        # Dropped again later: done at once by the watcher, no worker involved.
        (d.inbox / "later.wav").write_bytes(src.read_bytes())
        later = d.wait(lambda: by_name(d).get("later.wav", {}).get("state") == "done" and by_name(d)["later.wav"])
        assert later["reused_from"] == originals[0]["id"] and later["slot"] is None
        payload = json.loads((d.outbox / "later.json").read_text())
        assert payload["source"]["name"] == "later.wav" and payload["segments"]
        assert d.stop() == 0


def test_different_options_are_not_duplicates(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        src = write_wav(tmp_path / "src" / "a.wav")
        (d.inbox / "one.wav").write_bytes(src.read_bytes())
        d.wait_finished(1)
        (d.inbox / "two.wav.spkd.json").write_text(json.dumps({"speakers": 3}))
        (d.inbox / "two.wav").write_bytes(src.read_bytes())
        jobs = by_name(d) if len(d.wait_finished(2)) == 2 else {}
        assert jobs["two.wav"]["reused_from"] is None and jobs["two.wav"]["options"] == json.dumps({"speakers": 3})
        assert d.stop() == 0


def test_sidecar_options_are_validated_stored_and_used(tmp_path):
    with Daemon(tmp_path) as d:
        d.start()
        sidecar = {"speakers": 2, "hotwords": ["魔搭", "FunASR"], "formats": ["srt", "json"], "priority": 5}
        (d.inbox / "meeting.m4a.spkd.json").write_text(json.dumps(sidecar, ensure_ascii=False))
        wav = write_wav(tmp_path / "src" / "m.wav", seconds=1.0)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(wav), str(d.inbox / "meeting.m4a")],
                       check=True)
        (d.inbox / "bad.wav.spkd.json").write_text(json.dumps({"speakers": "two"}))
        write_wav(d.inbox / "bad.wav", seed=1)
        (d.inbox / "typo.wav.spkd.json").write_text(json.dumps({"speaker": 2}))
        write_wav(d.inbox / "typo.wav", seed=2)
        (d.inbox / "many.wav.spkd.json").write_text(json.dumps({"speakers": 30}))  # more than FunASR can give
        write_wav(d.inbox / "many.wav", seed=3)
        jobs = by_name(d) if len(d.wait_finished(4)) == 4 else {}
        good = jobs["meeting.m4a"]
        assert good["state"] == "done" and json.loads(good["options"]) == sidecar and good["priority"] == 5
        assert sorted(p.name for p in d.outbox.iterdir()) == ["meeting.json", "meeting.srt"]
        text = json.loads((d.outbox / "meeting.json").read_text())["text"]
        assert "speakers=2" in text and "hotwords=魔搭,FunASR" in text
        d.wait((tmp_path / "archive" / "meeting.m4a.spkd.json").exists, what="archived sidecar")
        assert jobs["bad.wav"]["error_kind"] == "bad_options" and "speakers" in jobs["bad.wav"]["error_message"]
        assert "speaker: unknown key" in jobs["typo.wav"]["error_message"]
        assert (jobs["many.wav"]["error_kind"], jobs["many.wav"]["error_message"]) == (
            "bad_options", "many.wav.spkd.json: speakers: expected an integer from 1 to 20, got 30")
        d.wait((tmp_path / "failed" / "bad.wav.error.json").exists, what="bad.wav.error.json")
        assert (tmp_path / "failed" / "bad.wav").exists() and (tmp_path / "failed" / "bad.wav.spkd.json").exists()
        assert d.stop() == 0


def test_channel_settings_that_cannot_apply_fail_before_queueing(tmp_path):
    """The probe knows a file's channel count: splitting a mono file, or naming more
    channels than a file has, fails at once as bad_options; a fitting setting reaches
    the engine. The config's audio.channels applies where a file has no sidecar."""
    from tests.support.dialog import write_wav as write_channels

    with Daemon(tmp_path, config={"audio": {"channels": "split"}}) as d:
        d.start()
        tone = [0.3 * np.sin(np.arange(16000, dtype=np.float32) * f / 16000 * 2 * np.pi) for f in (440, 660)]
        write_wav(d.inbox / "mono.wav", seconds=1.0, seed=3)  # config: split
        (d.inbox / "three.wav.spkd.json").write_text(json.dumps({"channels": ["a", "b", "c"]}))
        write_channels(d.inbox / "three.wav", tone)
        (d.inbox / "call.wav.spkd.json").write_text(json.dumps({"channels": ["客服", "客户"]}, ensure_ascii=False))
        write_channels(d.inbox / "call.wav", tone[::-1])
        jobs = by_name(d) if len(d.wait_finished(3)) == 3 else {}
        for name, why in (("mono.wav", "mono"), ("three.wav", "3 names for a recording with 2 channels")):
            assert jobs[name]["state"] == "failed" and jobs[name]["error_kind"] == "bad_options", jobs[name]
            assert why in jobs[name]["error_message"]
            d.wait((tmp_path / "failed" / f"{name}.error.json").exists, what=f"{name}.error.json")
        assert jobs["call.wav"]["state"] == "done"
        assert "channels=['客服', '客户']" in json.loads((d.outbox / "call.json").read_text())["text"]
        assert d.stop() == 0


def test_symlink_out_of_the_inbox_is_rejected(tmp_path):
    outside = write_wav(tmp_path / "secret" / "private.wav")
    with Daemon(tmp_path) as d:
        d.start()
        os.symlink(outside, d.inbox / "link.wav")
        [job] = d.wait_finished(1)
        assert job["state"] == "failed" and job["error_kind"] == "symlink"
        assert outside.exists() and not (d.inbox / "link.wav").exists()
        assert (tmp_path / "failed" / "link.wav").is_symlink()
        assert d.stop() == 0


def test_output_folders_inside_the_inbox_are_refused(tmp_path):
    with Daemon(tmp_path, config={"paths": {"outbox": "inbox/out"}}) as d:
        d.start(wait_ready=False)
        assert d.proc.wait(timeout=30) == 2
        assert "paths.outbox" in d.log() and "inside paths.inbox" in d.log()


def test_polling_observer_and_rescan(tmp_path):
    with Daemon(tmp_path, config={"watch": {"polling": True, "rescan_seconds": 1}}) as d:
        d.start()
        write_wav(d.inbox / "a.wav")
        [job] = d.wait_finished(1)
        assert job["state"] == "done"
        assert d.stop() == 0


def test_burst_of_1000_files_becomes_1000_jobs(tmp_path):
    n = 1000
    config = {"output": {"formats": ["json"]}, "workers": {"count": 2}}
    with Daemon(tmp_path, config=config, env={"SPKD_FAKE_SECONDS": "0"}) as d:
        d.start()
        staging = tmp_path / "staging"
        for i in range(n):
            write_wav(staging / f"b{i:04}.wav", seconds=0.5, seed=i, freq=200)
        drop = threading.Thread(target=lambda: [os.rename(p, d.inbox / p.name) for p in sorted(staging.iterdir())])
        drop.start()
        drop.join()
        jobs = d.wait_finished(n, timeout=400)
        assert len(jobs) == n and len({j["source_name"] for j in jobs}) == n
        assert all(j["state"] == "done" for j in jobs)
        assert len(list(d.outbox.glob("*.json"))) == n
        assert d.stop() == 0
