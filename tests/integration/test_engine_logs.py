"""A worker's model load, as the daemon logs it: FunASR's hub chatter (`download models
from model hub: ms`, `trust_remote_code: False` per model, its version banner on stdout)
appears nowhere, neither on stderr nor stdout nor in the log file, and spkd's own lines
are there. The filter itself is fed FunASR's exact messages in tests/unit/test_cli_output.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.engine.models import ModelDirs
from tests.support.config import write_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHATTER = ("model hub", "trust_remote_code", "funasr version")

LOAD = """
import sys
from daemon.config import load
from daemon.engine.transcriber import load_configured
from daemon.logs import setup_logging

config = load(sys.argv[1], env={})
setup_logging(config, role="worker0")  # as daemon.jobs.worker.run_worker does
load_configured(config, "cpu", threads=2)
"""


def test_a_worker_s_model_load_logs_no_hub_chatter(tmp_path: Path, tiny_models: ModelDirs) -> None:
    config = write_config(tmp_path, models={"dir": str(tiny_models.asr.parent)}, workers={"device": "cpu"})
    proc = subprocess.run([sys.executable, "-c", LOAD, str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    logged = (tmp_path / "state" / "logs" / "worker0.log").read_text(encoding="utf-8")
    assert "models loaded in" in proc.stderr and "models loaded in" in logged
    assert proc.stdout == ""
    for text in (proc.stderr, logged):
        assert not [line for line in text.splitlines() if any(c in line for c in CHATTER)], text
