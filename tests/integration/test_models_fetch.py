"""`spkd models fetch` from a ModelScope endpoint serving repositories in the real layout
(the tiny models' files, see tests/support/modelscope_hub.py), then the engine on what
arrived: a fetched directory loads through the same FunASR branch as the tiny ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.engine.transcriber import Engine
from daemon.engine.models import META_FILE, PINNED, ROLES, ModelDirs, read_model_meta, resolve_model_dirs
from tests.support.modelscope_hub import FakeModelScope

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_fetched_models_load_and_transcribe(tmp_path: Path, tiny_models: ModelDirs, two_voice_wav: Path) -> None:
    repos = {}
    for role, path in tiny_models.items():
        files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
        files.pop(META_FILE)  # ours, not the repository's
        repos[(PINNED[role].model_id, PINNED[role].revision)] = files
    hub = FakeModelScope(repos).start()
    try:
        config = tmp_path / "spkd.json"
        config.write_text(json.dumps({"models": {"dir": "models"}, "paths": {
            name: f"var/{name}" for name in ("inbox", "outbox", "archive", "failed", "spool", "state")}}))
        env = {**os.environ, "MODELSCOPE_ENDPOINT": hub.url, "HOME": str(tmp_path / "home"),
               "MODELSCOPE_CACHE": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        proc = subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "models", "fetch"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        hub.stop()
    assert proc.returncode == 0, proc.stderr
    dirs = resolve_model_dirs(tmp_path / "models")
    for role, path in dirs.items():
        assert read_model_meta(path)["revision"] == PINNED[role].revision
        assert (path / PINNED[role].weights).read_bytes() == (getattr(tiny_models, role) / PINNED[role].weights).read_bytes()
    engine = Engine.load(dirs, device="cpu")
    assert [m.revision for m in engine.models] == [PINNED[r].revision for r in ROLES]
    assert engine.model.spk_kwargs["init_param"] == str(dirs.spk / "campplus_cn_common.bin")
    t = engine.transcribe(two_voice_wav)
    assert len(t.segments) >= 2 and len(t.speakers) >= 1
