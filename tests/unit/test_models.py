"""daemon.engine.models without torch: pinned table, path resolution, directory checks, fetch errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.engine import models
from daemon.errors import FetchError, ModelsMissingError
from daemon.engine.models import (
    DEFAULT_NAMES,
    PINNED,
    ROLES,
    ModelDirs,
    check_model_dirs,
    fetch_models,
    list_models,
    model_dir_problem,
    read_model_meta,
    require_model_dirs,
    resolve_model_dirs,
)

from tests.support.modelscope_hub import FakeModelScope, real_layout_repo

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
        "import sys, daemon.engine.models, daemon.engine.transcriber; "
        "heavy = [m for m in ('torch', 'funasr', 'modelscope', 'numpy') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_funasr_is_pinned_to_the_version_the_hooks_were_tested_on() -> None:
    # daemon/engine/speaker_batching.py (and the engine's guards) read FunASR's internals; any
    # other version silently loses the speed-ups, so the package pins exactly that one
    import re
    from importlib.metadata import version

    from daemon.engine.speaker_batching import TESTED_FUNASR_VERSIONS

    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    funasr = [d.replace(" ", "") for d in re.findall(r'^\s*"(funasr\b[^"]*)"', pyproject, re.MULTILINE)]
    assert len(funasr) == 1 and funasr[0].startswith("funasr==")
    assert funasr[0].removeprefix("funasr==") in TESTED_FUNASR_VERSIONS
    assert version("funasr") == funasr[0].removeprefix("funasr==")  # what this venv runs


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


def _with_configuration(path: Path, conf: Any) -> Path:
    _complete(path)  # config.yaml + model.pt, which FunASR ignores once configuration.json exists
    (path / "configuration.json").write_text(conf if isinstance(conf, str) else json.dumps(conf))
    return path


@pytest.mark.parametrize(
    ("conf", "problem"),
    [
        ({"framework": "pytorch"}, "has a configuration.json whose file_path_metas name no config "
                                   "(FunASR could not build it)"),
        ({"file_path_metas": {"config": "config.yaml"}},
         "has a configuration.json whose file_path_metas name no init_param (FunASR would run it with random weights)"),
        ({"file_path_metas": {"init_param": "model.pt"}},
         "has a configuration.json whose file_path_metas name no config (FunASR could not build it)"),
        ("{not json", "has a configuration.json that is not valid JSON"),
        # FunASR skips a named file that is missing: the tokenizer would then get no vocabulary
        ({"file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                              "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"}}},
         "is incomplete (missing seg_dict, tokens.json)"),
        ({"file_path_metas": {"init_param": "model.pt", "config": "config.yaml"}}, None),
    ],
)
def test_configuration_json_decides_like_funasr(tmp_path: Path, conf: Any, problem: str | None) -> None:
    assert model_dir_problem(_with_configuration(tmp_path / "m", conf)) == problem


@pytest.mark.parametrize("role", ROLES)
def test_real_layouts_pass(tmp_path: Path, role: str) -> None:
    # the repositories as the fetch tests serve them (tests/support/modelscope_hub.py)
    directory = tmp_path / role
    for name, content in real_layout_repo(role).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
    assert model_dir_problem(directory) is None
    (directory / PINNED[role].weights).unlink()
    assert model_dir_problem(directory) == f"is incomplete (missing {PINNED[role].weights})"


def test_relative_model_paths_are_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.config import from_dict

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = from_dict({"models": {"dir": "models", "spk": "./cam++", "punc": "../shared/ct-punc-c"}},
                       base_dir=tmp_path / "conf")
    dirs = models.configured_model_dirs(config.models)
    assert dirs.spk == tmp_path / "conf" / "cam++"  # not "cam++", which FunASR takes for a hub alias
    assert dirs.punc == tmp_path / "shared" / "ct-punc-c"
    assert dirs.asr == tmp_path / "conf" / "models" / "paraformer-zh"  # a bare name stays a name
    assert all(p.is_absolute() for _, p in dirs.items())


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
    assert time.monotonic() - started < models.MODELSCOPE_PROBE_TIMEOUT_SECONDS + 5
    message = str(info.value)
    assert message.startswith("cannot reach ModelScope (http://127.0.0.1:9): ")
    assert f"copy the model directories by hand into {tmp_path / 'models'}" in message
    assert "paraformer-zh" in message and "cam++" in message
    assert sorted(os.listdir(tmp_path / "models")) == []  # nothing half-made left behind


# The fetch tests below talk to tests/support/modelscope_hub.py: a real HTTP server on
# 127.0.0.1 that answers the listing and download requests modelscope itself makes.


def _hub_env(tmp_path: Path, hub: FakeModelScope) -> dict[str, str]:
    """Environment for a fetch against `hub`: modelscope's credentials and lock files go
    to the test's folder, not to this machine's home."""
    return {
        "MODELSCOPE_ENDPOINT": hub.url,
        "HOME": str(tmp_path / "home"),
        "MODELSCOPE_CACHE": str(tmp_path / "modelscope-cache"),
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


@pytest.fixture()
def hub() -> Iterator[FakeModelScope]:
    server = FakeModelScope(
        {(p.model_id, p.revision): real_layout_repo(role) for role, p in PINNED.items()}
    ).start()
    yield server
    server.stop()


@pytest.fixture()
def hub_env(tmp_path: Path, hub: FakeModelScope, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = _hub_env(tmp_path, hub)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _spkd_fetch(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`spkd models fetch` in a fresh process (modelscope reads its settings at import)."""
    config = tmp_path / "spkd.json"
    config.write_text(json.dumps({"models": {"dir": str(tmp_path / "models")}, "paths": {
        name: str(tmp_path / "var" / name) for name in ("inbox", "outbox", "archive", "failed", "spool", "state")}}))
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "models", "fetch", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def _assert_fetched(models_dir: Path, hub: FakeModelScope, role: str) -> None:
    pinned = PINNED[role]
    target = models_dir / pinned.name
    served = hub.repos[(pinned.model_id, pinned.revision)]
    on_disk = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert on_disk.pop(models.META_FILE)
    assert on_disk == served
    assert model_dir_problem(target) is None
    meta = read_model_meta(target)
    assert (meta["model_id"], meta["revision"], meta["tiny"]) == (pinned.model_id, pinned.revision, False)


@pytest.mark.parametrize("progress", [None, "--no-progress"])
def test_spkd_models_fetch_downloads_the_pinned_models(
    tmp_path: Path, hub: FakeModelScope, progress: str | None
) -> None:
    # without a terminal (as here, and under `make run` from a service) there are no
    # progress bars: fetch_models(progress=False), whose quiet settings once made
    # modelscope's import fail (it reads MODELSCOPE_LOG_LEVEL as an integer)
    proc = _spkd_fetch(tmp_path, _hub_env(tmp_path, hub), *([progress] if progress else []))
    assert proc.returncode == 0, proc.stderr
    models_dir = tmp_path / "models"
    assert proc.stdout.splitlines() == [f"ok  {models_dir / PINNED[r].name}" for r in ROLES]
    assert sorted(os.listdir(models_dir)) == sorted(p.name for p in PINNED.values())  # no staging left
    for role in ROLES:
        _assert_fetched(models_dir, hub, role)
    # every file of every pinned repository, each requested once, at the pinned revision
    assert sorted(hub.downloads()) == sorted(
        (p.model_id, path, None) for p in PINNED.values() for path in hub.repos[(p.model_id, p.revision)])
    assert {r.query.get("Revision") for r in hub.requests if r.model_id} == {p.revision for p in PINNED.values()}
    # quiet: our own log lines only, no modelscope ones and no bars
    assert [line for line in proc.stderr.splitlines() if "| daemon.engine.models:" not in line] == [], proc.stderr

    # present models are not fetched again, and the hub is not even asked
    hub.clear()
    again = _spkd_fetch(tmp_path, _hub_env(tmp_path, hub), "--if-missing")
    assert again.returncode == 0, again.stderr
    assert hub.requests == []


def test_fetch_without_progress_in_process(tmp_path: Path, hub: FakeModelScope, hub_env: dict[str, str]) -> None:
    paths = fetch_models(tmp_path / "models", roles=["spk", "punc"], progress=False)
    assert paths == [tmp_path / "models" / "cam++", tmp_path / "models" / "ct-punc-c"]
    for role in ("spk", "punc"):
        _assert_fetched(tmp_path / "models", hub, role)
    assert (tmp_path / "models" / "cam++" / "campplus_cn_common.bin").stat().st_size > 0
    assert "TQDM_DISABLE" not in os.environ and os.environ.get("MODELSCOPE_LOG_LEVEL") is None


def test_interrupted_fetch_resumes_where_it_stopped(tmp_path: Path, hub: FakeModelScope) -> None:
    asr = PINNED["asr"]
    weights = hub.repos[(asr.model_id, asr.revision)][asr.weights]
    cut = len(weights) // 3
    hub.cut_after(asr.weights, cut)
    # modelscope retries a dropped connection itself (5 times, with backoff); with its
    # retries off, one drop ends this run the way a long outage ends a real one
    env = {**_hub_env(tmp_path, hub), "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "0"}
    first = _spkd_fetch(tmp_path, env)
    assert first.returncode == 2
    staging = models.staging_dir(tmp_path / "models", "asr")
    assert f"stay in {staging}, and `spkd models fetch` resumes from them" in first.stderr, first.stderr
    assert not (tmp_path / "models" / asr.name).exists()
    # the completed files and the received part are kept
    assert (staging / f"{asr.weights}.incomplete").stat().st_size == cut
    for path, content in hub.repos[(asr.model_id, asr.revision)].items():
        if path != asr.weights:
            assert (staging / path).read_bytes() == content

    hub.clear()
    second = _spkd_fetch(tmp_path, env)
    assert second.returncode == 0, second.stderr
    # of the ASR repository only the rest of the weights was asked for, from where it broke off
    assert [d for d in hub.downloads() if d[0] == asr.model_id] == [(asr.model_id, asr.weights, f"bytes={cut}-")]
    for role in ROLES:
        _assert_fetched(tmp_path / "models", hub, role)
    assert not staging.exists()


def test_staging_of_another_revision_is_not_resumed(
    tmp_path: Path, hub: FakeModelScope, hub_env: dict[str, str]
) -> None:
    staging = models.staging_dir(tmp_path / "models", "spk")
    staging.mkdir(parents=True)
    models.write_meta(staging, role="spk", model_id=PINNED["spk"].model_id, revision="v1.0.0", tiny=False)
    (staging / "leftover.bin").write_bytes(b"old")
    fetch_models(tmp_path / "models", roles=["spk"], progress=False)
    _assert_fetched(tmp_path / "models", hub, "spk")  # exactly the served files: the leftover is gone


def test_unknown_revision_fails_and_names_it(tmp_path: Path, hub: FakeModelScope, hub_env: dict[str, str]) -> None:
    pinned = PINNED["vad"]
    hub.repos[(pinned.model_id, "v9.9.9")] = hub.repos.pop((pinned.model_id, pinned.revision))
    with pytest.raises(FetchError, match=rf"downloading {pinned.model_id} @ v2.0.4 failed: .*not exist"):
        fetch_models(tmp_path / "models", roles=["vad"], progress=False)
    assert not (tmp_path / "models" / pinned.name).exists()


def test_fetch_rejects_a_download_funasr_cannot_load(
    tmp_path: Path, hub: FakeModelScope, hub_env: dict[str, str]
) -> None:
    pinned = PINNED["asr"]
    del hub.repos[(pinned.model_id, pinned.revision)]["tokens.json"]
    with pytest.raises(FetchError, match=r"download of .* @ v2.0.4 is incomplete \(missing tokens.json\)"):
        fetch_models(tmp_path / "models", roles=["asr"], progress=False)
    assert sorted(os.listdir(tmp_path / "models")) == []  # nothing to resume: the repository is wrong


def test_fetch_unknown_role(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model role"):
        fetch_models(tmp_path, roles=["lm"])


def test_fetch_asks_for_byte_progress_only_where_offered() -> None:
    def old_style(model_id: str, revision: str, local_dir: str) -> str:
        return local_dir

    def new_style(model_id: str, revision: str, local_dir: str, progress_callbacks: Any = None) -> str:
        return local_dir

    assert models.download_options(old_style, True) == {}
    assert models.download_options(new_style, False) == {}
    options = models.download_options(new_style, True)
    if options:  # modelscope with modelscope.hub.callback (>= 1.2x)
        assert [cb.__name__ for cb in options["progress_callbacks"]] == ["TqdmCallback"]

    def with_endpoint(model_id: str, revision: str, local_dir: str, endpoint: str | None = None) -> str:
        return local_dir

    # the probed endpoint goes to modelscope too, which reads the environment only once
    assert models.download_options(with_endpoint, False, "http://127.0.0.1:1") == {"endpoint": "http://127.0.0.1:1"}
    assert models.download_options(old_style, False, "http://127.0.0.1:1") == {}
