"""`spkd jobs | head`: when the reader of spkd's output leaves before spkd is done
writing, spkd stops quietly with ExitCode.BROKEN_PIPE: no traceback, no "Exception
ignored" from the interpreter's own flush at exit.

The real command runs in a child process whose stdout is a pipe with its read end
already closed, with enough jobs in its database that it writes more than one buffer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import load
from daemon.errors import ExitCode
from daemon.store import Store, db
from tests.support.config import write_config

JOBS = 300


@pytest.fixture()
def config_path(tmp_path: Path) -> Path:
    path = write_config(tmp_path)
    config = load(path, env={})
    db.migrate(config.database_url)
    store = Store(config.database_url, host="h1")
    try:
        for i in range(JOBS):
            name = f"a fairly long recording name, so that each row is wide {i:04d}.wav"
            store.enqueue(source_name=name, spool_path=str(tmp_path / "spool" / name), output_stem=name[:-4],
                          sha256=None, size_bytes=1000 + i)
    finally:
        store.close()
    return path


def spkd_command() -> list[str]:
    """The installed console script where there is one (what a user runs), else `python -m daemon`."""
    script = Path(sys.executable).with_name("spkd")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "daemon"]


@pytest.mark.parametrize("extra", [[], ["--json"]], ids=["table", "json"])
def test_spkd_jobs_into_a_reader_that_left_exits_quietly(config_path: Path, extra: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before spkd writes a byte
    try:
        proc = subprocess.run([*spkd_command(), "--config", str(config_path), "jobs", "-n", str(JOBS), *extra],
                              stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE,
                              cwd=config_path.parent, env=env, timeout=120, check=False)
    finally:
        os.close(write_end)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == ExitCode.BROKEN_PIPE, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr and "Exception ignored" not in stderr
    assert stderr.strip() == ""
