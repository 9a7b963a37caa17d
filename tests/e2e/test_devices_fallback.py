"""Device selection and fallback, seen from outside the daemon (fake engine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.daemon import REPO, Daemon, write_wav

pytestmark = pytest.mark.e2e

TWO_FAKE_GPUS = json.dumps({"cuda": [{"index": 0, "name": "Fake GPU A", "memory_mb": 1000},
                                     {"index": 1, "name": "Fake GPU B", "memory_mb": 1000}]})


def test_explicit_cuda_on_a_cpu_machine_falls_back_to_the_cpu(tmp_path):
    with Daemon(tmp_path, config={"workers": {"device": "cuda", "count": 1}}) as d:
        d.start()
        [row] = d.workers()
        assert row["device"] == "cpu" and row["fallback_from"] == "cuda"
        assert "fallback: cuda is not available" in d.log()
        write_wav(d.inbox / "a.wav")
        [job] = d.wait_finished(1)
        assert job["device"] == "cpu"
        status = subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "status", "--json"],
                                capture_output=True, text=True, env=d.env, cwd=REPO)
        assert json.loads(status.stdout)["workers"][0]["fallback_from"] == "cuda"
        assert d.stop() == 0


def test_explicit_cuda_without_fallback_refuses_to_start(tmp_path):
    with Daemon(tmp_path, config={"workers": {"device": "cuda", "fallback": False}}) as d:
        d.start(wait_ready=False)
        assert d.proc.wait(timeout=60) == 2
        assert "workers.device: cuda is not available" in d.log()


def test_one_gpu_slot_that_cannot_boot_falls_back_while_the_other_serves(tmp_path):
    config = {"workers": {"max_boot_failures": 2, "per_device": 1}}
    env = {"SPKD_FAKE_DEVICES": TWO_FAKE_GPUS, "SPKD_FAKE_BOOT_FAIL_SLOTS": "1", "SPKD_FAKE_BOOT_FAIL": ""}
    with Daemon(tmp_path, config=config, env=env) as d:
        d.start(ready_slots=1)
        d.wait(lambda: any(w["slot"] == 1 and w["fallback_from"] == "cuda:1" for w in d.workers()),
               what="slot 1 fell back")
        rows = {w["slot"]: w for w in d.workers()}
        assert rows[0]["device"] == "cuda:0"
        assert rows[1]["device"] == "cpu" and "fell back from cuda:1" in rows[1]["last_error"]
        assert "slot 1 falls back from cuda:1 to cpu" in d.log()
        for i in range(4):
            write_wav(d.inbox / f"a{i}.wav", seed=i)
        jobs = d.wait_finished(4)
        assert all(j["state"] == "done" for j in jobs)
        assert {j["device"] for j in jobs} <= {"cuda:0", "cpu"}
        assert d.stop() == 0


def test_doctor_json_reports_the_plan(tmp_path):
    with Daemon(tmp_path, config={"workers": {"device": "cuda", "count": 1}}) as d:
        out = subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "doctor", "--json"],
                             capture_output=True, text=True, env=d.env, cwd=REPO)
        report = json.loads(out.stdout)
        assert report["slots"][0]["device"] == "cpu" and report["slots"][0]["fallback_from"] == "cuda"
        assert {c["check"] for c in report["checks"]} >= {"torch", "funasr", "devices", "models", "ffmpeg",
                                                          "database"}
        assert out.returncode == (0 if report["ok"] else 1)


def test_out_of_memory_halves_the_batch_then_runs_on_the_fallback_device(tmp_path):
    env = {"SPKD_FAKE_DEVICES": json.dumps({"cuda": [{"index": 0, "name": "Fake GPU", "memory_mb": 1000}]})}
    with Daemon(tmp_path, env=env) as d:
        d.start(ready_slots=1)
        write_wav(d.inbox / "oom.wav")
        [job] = d.wait_finished(1)
        assert job["state"] == "done" and job["device"] == "cpu" and job["attempts"] == 1
        kinds = [e["kind"] for e in d.events(job["id"])]
        assert kinds.count("oom_retry") == 2 and "oom_fallback" in kinds
        sizes = [json.loads(e["detail"])["batch_size_s"] for e in d.events(job["id"]) if e["kind"] == "oom_retry"]
        assert sizes == [150, 75]
        assert "still out of memory on cuda:0; running it on cpu" in d.log()
        assert d.stop() == 0


def test_a_list_of_cards_under_cuda_visible_devices_each_shown_and_serving(tmp_path):
    # three cards visible to the daemon (physical 5, 6, 7); the config takes the first and the third
    three = json.dumps({"cuda": [{"index": i, "name": f"Fake GPU {i}", "memory_mb": 1000} for i in range(3)]})
    config = {"workers": {"device": ["cuda:0", "cuda:2"], "per_device": 1}}
    env = {"SPKD_FAKE_DEVICES": three, "CUDA_VISIBLE_DEVICES": "5,6,7"}
    with Daemon(tmp_path, config=config, env=env) as d:
        d.start(ready_slots=2)
        rows = {w["slot"]: w for w in d.workers()}
        assert [rows[0]["device"], rows[1]["device"]] == ["cuda:0", "cuda:2"]
        shown = {slot: (d.root / "fake-state" / f"visible-slot-{slot}").read_text() for slot in rows}
        assert shown == {0: "5", 1: "7"}  # each worker's torch would see only its own physical card
        for i in range(6):
            write_wav(d.inbox / f"a{i}.wav", seed=i)
        jobs = d.wait_finished(6)
        assert sorted(j["source_name"] for j in jobs) == [f"a{i}.wav" for i in range(6)]
        assert all(j["state"] == "done" for j in jobs) and {j["device"] for j in jobs} <= {"cuda:0", "cuda:2"}
        status = json.loads(subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "status",
                                            "--json"], capture_output=True, text=True, env=d.env, cwd=REPO).stdout)
        cards = {c["device"]: c for c in status["devices"]}
        assert set(cards) == {"cuda:0", "cuda:2"} and cards["cuda:0"]["slots"] == [0]
        assert sum(c["jobs_done"] for c in cards.values()) == 6
        doctor = json.loads(subprocess.run([sys.executable, "-m", "daemon", "--config", str(d.config_path), "doctor",
                                            "--json"], capture_output=True, text=True, env=d.env, cwd=REPO).stdout)
        assert [(c["device"], c["slots"]) for c in doctor["cards"]] == [("cuda:0", [0]), ("cuda:1", []),
                                                                        ("cuda:2", [1])]
        assert any("cuda:1 Fake GPU 1, 1,000 MB: slot(s) none" in c["detail"] for c in doctor["checks"])
        assert d.stop() == 0
