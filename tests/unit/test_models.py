"""daemon.models without torch: pinned table, path resolution, directory checks, fetch errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from daemon import models
from daemon.errors import FetchError, ModelsMissingError
from daemon.models import (
    DEFAULT_NAMES,
    PINNED,
    ROLES,
    ModelDirs,
    check_model_dirs,
    check_or_raise,
    fetch_models,
    list_models,
    model_dir_problem,
    read_model_meta,
    require_model_dirs,
    resolve_model_dirs,
)

REPO = Path(__file__).resolve().parents[2]


def _complete(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text("model: Dummy\n")
    (path / "model.pt").write_bytes(b"\0" * 16)
    return path


def _complete_set(models_dir: Path) -> ModelDirs:
    for name in DEFAULT_NAMES.values():
        _complete(models_dir / name)
    return resolve_model_dirs(models_dir)


# --------------------------------------------------------------------------- pinned table


def test_pinned_table_has_the_four_real_models() -> None:
    assert ROLES == ("asr", "vad", "punc", "spk")
    assert {r: (p.name, p.model_id, p.revision) for r, p in PINNED.items()} == {
        "asr": (
            "paraformer-zh",
            "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
            "v2.0.4",
        ),
        "vad": ("fsmn-vad", "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch", "v2.0.4"),
        "punc": ("ct-punc-c", "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch", "v2.0.4"),
        "spk": ("cam++", "iic/speech_campplus_sv_zh-cn_16k-common", "v2.0.2"),
    }
    assert all(p.role == r for r, p in PINNED.items())
    assert DEFAULT_NAMES == {"asr": "paraformer-zh", "vad": "fsmn-vad", "punc": "ct-punc-c", "spk": "cam++"}


def test_importing_models_and_engine_stays_light() -> None:
    # the supervisor imports these; torch/funasr/modelscope must only load inside functions
    code = (
        "import sys, daemon.models, daemon.engine; "
        "heavy = [m for m in ('torch', 'funasr', 'modelscope', 'numpy') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- resolution


def test_names_resolve_under_the_models_dir(tmp_path: Path) -> None:
    dirs = resolve_model_dirs(tmp_path)
    assert dirs == ModelDirs(
        asr=tmp_path / "paraformer-zh",
        vad=tmp_path / "fsmn-vad",
        punc=tmp_path / "ct-punc-c",
        spk=tmp_path / "cam++",
    )
    assert [role for role, _ in dirs.items()] == ["asr", "vad", "punc", "spk"]


def test_paths_are_taken_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    dirs = resolve_model_dirs(
        tmp_path / "models",
        asr=str(tmp_path / "elsewhere" / "asr"),
        vad="relative/vad",
        punc="~/punc",
        spk="my-spk",
    )
    assert dirs.asr == tmp_path / "elsewhere" / "asr"
    assert dirs.vad == Path("relative/vad")
    assert dirs.punc == tmp_path / "home" / "punc"
    assert dirs.spk == tmp_path / "models" / "my-spk"


@pytest.mark.parametrize("spk", [None, ""])
def test_no_speaker_model(tmp_path: Path, spk: str | None) -> None:
    dirs = resolve_model_dirs(tmp_path, spk=spk)
    assert dirs.spk is None
    assert [role for role, _ in dirs.items()] == ["asr", "vad", "punc"]


def test_resolution_touches_no_file(tmp_path: Path) -> None:
    resolve_model_dirs(tmp_path / "does-not-exist")
    assert not (tmp_path / "does-not-exist").exists()


# --------------------------------------------------------------------------- checks


def test_complete_dirs_pass(tmp_path: Path) -> None:
    dirs = _complete_set(tmp_path)
    assert check_model_dirs(dirs) == []
    assert require_model_dirs(dirs) is dirs
    assert check_or_raise(dirs) is dirs


def test_each_missing_dir_gets_a_message(tmp_path: Path) -> None:
    _complete(tmp_path / "paraformer-zh")
    (tmp_path / "ct-punc-c").mkdir()
    (tmp_path / "ct-punc-c" / "config.yaml").write_text("model: X\n")
    (tmp_path / "cam++").write_text("not a directory")
    problems = check_model_dirs(resolve_model_dirs(tmp_path))
    assert problems == [
        f"vad model directory {tmp_path / 'fsmn-vad'} does not exist",
        f"punc model directory {tmp_path / 'ct-punc-c'} is incomplete (missing model.pt)",
        f"spk model directory {tmp_path / 'cam++'} is not a directory",
    ]


def test_configuration_json_may_name_the_files(tmp_path: Path) -> None:
    # how ModelScope ships cam++: no model.pt, configuration.json points at the weights
    spk = tmp_path / "cam++"
    spk.mkdir()
    (spk / "configuration.json").write_text(
        json.dumps({"file_path_metas": {"init_param": "campplus_cn_common.bin", "config": "config.yaml"}})
    )
    (spk / "config.yaml").write_text("model: CAMPPlus\n")
    assert model_dir_problem(spk) == "is incomplete (missing campplus_cn_common.bin)"
    (spk / "campplus_cn_common.bin").write_bytes(b"\0")
    assert model_dir_problem(spk) is None


def test_missing_models_error_names_every_dir_and_the_fix(tmp_path: Path) -> None:
    _complete(tmp_path / "ct-punc-c")
    dirs = resolve_model_dirs(tmp_path)
    with pytest.raises(ModelsMissingError) as info:
        require_model_dirs(dirs)
    message = str(info.value)
    for name in ("paraformer-zh", "fsmn-vad", "cam++"):
        assert str(tmp_path / name) in message
    assert "ct-punc-c" not in message
    assert "spkd models fetch" in message and "spkd models make-tiny DIR" in message
    assert info.value.kind == "models_missing" and info.value.permanent


def test_disabled_speaker_model_is_not_required(tmp_path: Path) -> None:
    for name in ("paraformer-zh", "fsmn-vad", "ct-punc-c"):
        _complete(tmp_path / name)
    assert check_model_dirs(resolve_model_dirs(tmp_path, spk=None)) == []


# --------------------------------------------------------------------------- listing and metadata


def test_list_models_rows(tmp_path: Path) -> None:
    _complete(tmp_path / "paraformer-zh")
    models.write_meta(tmp_path / "paraformer-zh", role="asr", model_id="x/y", revision="v2.0.4", tiny=False)
    rows = list_models(tmp_path)
    assert [r["role"] for r in rows] == list(ROLES)
    asr = rows[0]
    assert asr["name"] == "paraformer-zh" and asr["path"] == str(tmp_path / "paraformer-zh")
    assert asr["present"] is True and asr["size_bytes"] > 0 and asr["revision"] == "v2.0.4"
    assert asr["model_id"] == PINNED["asr"].model_id and asr["pinned_revision"] == "v2.0.4"
    assert all(r["present"] is False and r["size_bytes"] == 0 for r in rows[1:])
    assert rows[1]["problem"] == "does not exist"
    json.dumps(rows)  # `spkd models list --json` prints them as they are


def test_read_model_meta(tmp_path: Path) -> None:
    plain = _complete(tmp_path / "plain")
    assert read_model_meta(plain) == {"name": "plain", "model_id": None, "revision": None, "tiny": False}
    hub = _complete(tmp_path / "hub")
    (hub / "configuration.json").write_text(
        json.dumps({"model_name_in_hub": {"ms": "iic/x"}, "revision": "v9"})
    )
    assert read_model_meta(hub)["model_id"] == "iic/x" and read_model_meta(hub)["revision"] == "v9"
    models.write_meta(hub, revision="tiny", tiny=True)
    assert read_model_meta(hub)["revision"] == "tiny" and read_model_meta(hub)["tiny"] is True


# --------------------------------------------------------------------------- fetch


def test_fetch_fails_fast_and_clearly_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an endpoint that refuses at once, whatever this machine's network is like
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_models(tmp_path / "models")
    assert time.monotonic() - started < models.PROBE_TIMEOUT_S + 5
    message = str(info.value)
    assert message.startswith("cannot reach ModelScope (http://127.0.0.1:9): ")
    assert f"copy the model directories by hand into {tmp_path / 'models'}" in message
    assert "paraformer-zh" in message and "cam++" in message
    assert sorted(os.listdir(tmp_path / "models")) == []  # nothing half-made left behind


def test_fetch_download_network_error_is_classified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NetworkError(ConnectionError):
        pass

    def snapshot_download(model_id: str, revision: str, local_dir: str) -> str:
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "partial.bin").write_bytes(b"\0")
        raise NetworkError("Connection reset")

    fake = types.ModuleType("modelscope.hub.snapshot_download")
    fake.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", fake)
    monkeypatch.setattr(models, "probe_modelscope", lambda timeout=0: None)
    with pytest.raises(FetchError, match=r"cannot reach ModelScope .*NetworkError: Connection reset; copy"):
        fetch_models(tmp_path, roles=["vad"])
    assert sorted(os.listdir(tmp_path)) == []


def test_fetch_installs_verified_download_with_pinned_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def snapshot_download(model_id: str, revision: str, local_dir: str) -> str:
        calls.append((model_id, revision))
        _complete(Path(local_dir))
        return local_dir

    fake = types.ModuleType("modelscope.hub.snapshot_download")
    fake.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", fake)
    monkeypatch.setattr(models, "probe_modelscope", lambda timeout=0: None)
    paths = fetch_models(tmp_path, roles=["spk", "punc"], progress=False)
    assert paths == [tmp_path / "cam++", tmp_path / "ct-punc-c"]
    assert calls == [(PINNED["spk"].model_id, "v2.0.2"), (PINNED["punc"].model_id, "v2.0.4")]
    assert read_model_meta(tmp_path / "cam++")["revision"] == "v2.0.2"
    assert sorted(os.listdir(tmp_path)) == ["cam++", "ct-punc-c"]
    # present models are not fetched again (and the hub is not even probed)
    monkeypatch.setattr(models, "probe_modelscope", lambda timeout=0: pytest.fail("probed"))
    assert fetch_models(tmp_path, roles=["spk"]) == [tmp_path / "cam++"]
    assert len(calls) == 2


def test_fetch_rejects_incomplete_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def snapshot_download(model_id: str, revision: str, local_dir: str) -> str:
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.yaml").write_text("model: X\n")
        return local_dir

    fake = types.ModuleType("modelscope.hub.snapshot_download")
    fake.snapshot_download = snapshot_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", fake)
    monkeypatch.setattr(models, "probe_modelscope", lambda timeout=0: None)
    with pytest.raises(FetchError, match="is incomplete"):
        fetch_models(tmp_path, roles=["asr"])
    assert not (tmp_path / "paraformer-zh").exists()


def test_fetch_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model role"):
        fetch_models(tmp_path, roles=["lm"])


def test_fetch_asks_for_byte_progress_only_where_offered() -> None:
    def old_style(model_id: str, revision: str, local_dir: str) -> str:
        return local_dir

    def new_style(model_id: str, revision: str, local_dir: str, progress_callbacks: Any = None) -> str:
        return local_dir

    assert models._download_options(old_style, True) == {}
    assert models._download_options(new_style, False) == {}
    options = models._download_options(new_style, True)
    if options:  # modelscope with modelscope.hub.callback (>= 1.2x)
        assert [cb.__name__ for cb in options["progress_callbacks"]] == ["TqdmCallback"]
