"""`spkd models make-tiny` shows what it does, and tiny test models never pass for real
ones: `models list`, `doctor` and `status` say so. Without torch: the builders are
stood in for, the model directories are written by hand with make-tiny's marker."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from daemon.cli.main import main
from daemon.cli.models import StepPrinter
from daemon.engine import models, speaker_training, tiny_models
from daemon.engine.models import PINNED, TINY_NOTE, configured_model_dirs, tiny_roles, write_meta
from daemon.engine.tiny_models import BuildStep, build_stages
from daemon.service import devices
from daemon.service.doctor import diagnose
from tests.support.config import make_config, write_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def steps(trained: bool) -> list[BuildStep]:
    titles = build_stages(trained=trained)
    return [BuildStep(i + 1, len(titles), t) for i, t in enumerate(titles)]


def test_piped_one_line_per_stage_and_the_total_time():
    clock, out = Clock(), io.StringIO()
    printer = StepPrinter(out, live=False, clock=clock)
    for step in steps(trained=True):
        printer(step)
        for done in range(0, 101, 10):  # counts within a stage add no line
            printer(BuildStep(step.index, step.stages, step.title, done, 100, "windows"))
        clock.now += 20
    printer.note("WARNING: something to know")
    printer.finish("built tiny test models in models")
    lines = out.getvalue().splitlines()
    at = ["0 s", "20 s", "40 s", "1 min", "1 min 20 s", "1 min 40 s", "2 min"]
    assert lines[:7] == [f"[{i + 1}/7] {t} (at {at[i]})" for i, t in enumerate(build_stages(trained=True))]
    assert lines[7:] == ["WARNING: something to know", "built tiny test models in models in 2 min 20 s"]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_one_line_updated_in_place():
    clock, out = Clock(), io.StringIO()
    printer = StepPrinter(out, live=True, clock=clock, tick_seconds=None)
    title = "speaker model: synthesising training speech with espeak-ng"
    printer(BuildStep(5, 7, title, 0, 200, "utterances"))
    clock.now += 0.01
    printer(BuildStep(5, 7, title, 1, 200, "utterances"))  # too soon: not redrawn
    clock.now += 65
    printer(BuildStep(5, 7, title, 100, 200, "utterances"))
    printer.note("WARNING: a line of its own")
    printer.finish("built tiny test models in models")
    text = out.getvalue()
    assert "\n" not in text.split("WARNING")[0]  # the progress stayed on one line
    assert text.count("\r\x1b[K") >= 3
    assert f"\r\x1b[K[5/7] {title}: 100/200 utterances (50%)  1 min 5 s" in text
    assert "1/200" not in text
    # the note interrupts the line and the line is drawn again below it
    assert "\r\x1b[KWARNING: a line of its own\n\r\x1b[K[5/7]" in text
    assert text.endswith("\r\x1b[Kbuilt tiny test models in models in 1 min 5 s\n")


def test_a_terminal_sees_the_time_go_on_while_a_stage_counts_nothing():
    import time

    clock, out = Clock(), io.StringIO()
    printer = StepPrinter(out, live=True, clock=clock, tick_seconds=0.02)
    printer(BuildStep(1, 7, "loading FunASR"))
    clock.now += 12
    deadline = time.monotonic() + 5
    while "loading FunASR  12 s" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    printer.finish("built")
    assert "\r\x1b[K[1/7] loading FunASR  0 s" in out.getvalue()
    assert "\r\x1b[K[1/7] loading FunASR  12 s" in out.getvalue()


def test_the_builder_reports_every_stage_in_order(tmp_path, monkeypatch):
    """build_tiny_models calls back at each stage and through the speaker model's
    training phases; the engine room prints nothing."""
    seen: list[BuildStep] = []
    monkeypatch.setattr(speaker_training, "espeak_available", lambda: True)
    monkeypatch.setattr(tiny_models, "import_funasr", lambda: None)
    for name in ("_build_tiny_asr", "_build_tiny_punc"):
        monkeypatch.setattr(tiny_models, name, lambda d, real: None)
    monkeypatch.setattr(tiny_models, "_build_vad", lambda d: None)

    def spk(directory, real, *, trained, on_phase):
        if not trained:
            return
        on_phase("speech", 0, 2)
        on_phase("speech", 2, 2)
        on_phase("features", 0, 60)
        on_phase("features", 60, 60)
        on_phase("fitting", None, None)

    monkeypatch.setattr(tiny_models, "_build_tiny_spk", spk)
    dirs = tiny_models.build_tiny_models(tmp_path / "models", progress=seen.append)
    assert dirs.spk == tmp_path / "models" / "cam++" and dirs.spk.is_dir()
    assert [s.index for s in seen] == [1, 2, 3, 4, 5, 5, 5, 6, 6, 7]
    assert {s.stages for s in seen} == {7}
    assert [(s.done, s.total, s.unit) for s in seen if s.index == 6] == [(0, 60, "windows"), (60, 60, "windows")]
    monkeypatch.setattr(speaker_training, "espeak_available", lambda: False)
    seen.clear()
    tiny_models.build_tiny_models(tmp_path / "again", progress=seen.append)
    assert [s.title for s in seen][-1] == "speaker model (CAM++, random weights)" and seen[-1].stages == 5


# --- tiny test models are said to be such -------------------------------------------------

def fake_models(root: Path, *, tiny: bool) -> Path:
    """Model directories that pass the presence check, marked as make-tiny marks them."""
    for role, pinned in PINNED.items():
        directory = root / pinned.name
        directory.mkdir(parents=True)
        (directory / "configuration.json").write_text(json.dumps(pinned.configuration()))
        for name in pinned.files:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text("x")
        write_meta(directory, role=role, model_id=pinned.model_id, revision="tiny" if tiny else pinned.revision,
                   tiny=tiny and role != "vad")
    return root


def test_tiny_roles(tmp_path):
    config = make_config(tmp_path, models={"dir": str(fake_models(tmp_path / "m", tiny=True))})
    assert tiny_roles(configured_model_dirs(config.models)) == ["asr", "punc", "spk"]
    real = make_config(tmp_path, models={"dir": str(fake_models(tmp_path / "r", tiny=False))})
    assert tiny_roles(configured_model_dirs(real.models)) == []


def test_models_list_says_tiny_and_shows_the_pinned_ids_and_revisions(tmp_path, capsys):
    path = write_config(tmp_path, models={"dir": str(fake_models(tmp_path / "m", tiny=True))})
    assert main(["--config", str(path), "models", "list"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:5]]
    assert [r[:4] for r in rows] == [["asr", "paraformer-zh", "yes", "tiny"], ["vad", "fsmn-vad", "yes", "real"],
                                    ["punc", "ct-punc-c", "yes", "tiny"], ["spk", "cam++", "yes", "tiny"]]
    assert f"asr, punc, spk: {TINY_NOTE}" in out
    # what `spkd models fetch`'s error sends a reader here for
    for pinned in PINNED.values():
        assert f"{pinned.model_id} @ {pinned.revision} -> {pinned.name}" in out
    assert "see `spkd models list` for the ids and revisions" in str(models._unreachable(tmp_path, "offline"))


def test_doctor_warns_about_tiny_models(tmp_path):
    config = make_config(tmp_path, models={"dir": str(fake_models(tmp_path / "m", tiny=True))})
    report = diagnose(config, inventory=devices.Inventory(cpu_cores=2))
    [warning] = [c for c in report.checks if c.get("warning")]
    assert warning["check"] == "models" and warning["ok"] and "tiny test models" in warning["detail"]
    assert "gibberish" in warning["detail"] and report.info["tiny_models"] == ["asr", "punc", "spk"]
    real = make_config(tmp_path, models={"dir": str(fake_models(tmp_path / "r", tiny=False))})
    assert not [c for c in diagnose(real, inventory=devices.Inventory(cpu_cores=2)).checks if c.get("warning")]


def test_fetch_replaces_tiny_models_but_keeps_real_ones(tmp_path, monkeypatch):
    root = fake_models(tmp_path / "m", tiny=True)
    fetched: list[str] = []
    monkeypatch.setattr(models, "probe_modelscope", lambda: None)
    monkeypatch.setattr(models, "_fetch_one", lambda d, role, **kw: fetched.append(role))
    monkeypatch.setattr(models, "_quiet_modelscope", __import__("contextlib").nullcontext)
    models.fetch_models(root, progress=False)
    assert fetched == ["asr", "punc", "spk"]  # the VAD is the real FSMN-VAD already


@pytest.fixture()
def status_config(tmp_path, store):
    return write_config(tmp_path, url=store.url, models={"dir": str(fake_models(tmp_path / "m", tiny=True))})


def test_status_says_tiny_test_models(status_config, capsys):
    main(["--config", str(status_config), "status"])
    out = capsys.readouterr().out
    assert f"models: {TINY_NOTE} (asr, punc, spk in " in out
    main(["--config", str(status_config), "status", "--json"])
    assert json.loads(capsys.readouterr().out)["tiny_models"] == ["asr", "punc", "spk"]


def test_models_list_sizes_are_readable_and_wide_works_as_on_every_table(tmp_path, capsys):
    root = fake_models(tmp_path / ("a-long-folder-name-for-models-" * 3), tiny=True)
    (root / "paraformer-zh" / "model.pt").write_bytes(b"\0" * (3 * 2**20 // 2))  # 1.5 MB
    path = write_config(tmp_path, models={"dir": str(root)})
    assert main(["--config", str(path), "models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    size = lines[0].split().index("size_mb")  # cells are apart by two spaces or more ("tiny test" is one)
    sizes = {cells[0]: cells[size] for cells in (re.split(r"\s{2,}", line) for line in lines[1:5])}
    assert sizes == {"asr": "1.5", "vad": "<0.01", "punc": "<0.01", "spk": "<0.01"}  # never 0.000
    assert "…" in lines[1] and str(root) not in lines[1]
    assert main(["--config", str(path), "models", "list", "--wide"]) == 0
    assert str(root / "paraformer-zh") in capsys.readouterr().out.splitlines()[1]


def test_status_shows_whole_megabytes_and_takes_wide(status_config, store, capsys):
    trouble = "CUDA error: an illegal memory access was encountered, and then some more words"
    store.worker_update(0, pid=5, device="cpu", state="ready", rss_mb=540.8, last_error=trouble)
    main(["--config", str(status_config), "status"])
    out = capsys.readouterr().out
    [header, row] = [line for line in out.splitlines() if line.startswith(("host ", store.host))]
    assert row[header.index("rss_mb"):].split()[0] == "541" and trouble not in row  # not 540.800
    main(["--config", str(status_config), "status", "--wide"])
    assert trouble in capsys.readouterr().out


def test_doctor_says_the_daemon_would_not_start(tmp_path, capsys, monkeypatch):
    from daemon.service import doctor

    real = doctor.diagnose
    monkeypatch.setattr(doctor, "diagnose", lambda config: real(config, inventory=devices.Inventory(cpu_cores=2)))
    (tmp_path / "hostname").write_text("")
    path = write_config(tmp_path, paths={"inbox": "hostname/inbox"})
    assert main(["--config", str(path), "doctor"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "the daemon would not start: fix the BAD lines above"
