"""The dashboard in tests: a config over a temporary tree with jobs in it (made by the
product's own functions: store, results, spool), and `spkd web` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.store import db
from daemon.jobs import results
from daemon.jobs import spool
from daemon.config import Config, load
from daemon.store import Store
from daemon.transcript import Segment, Source, Transcript
from tests.support.config import write_config as config_file
from tests.support.daemon import REPO, write_wav

XSS_NAME = "<img src=x onerror=alert(1)>.wav"
SEGMENTS = (
    Segment(0.5, 2.0, 1, "Good morning <b>everyone</b> & welcome."),
    Segment(2.5, 4.0, 2, "Thanks; shall we start?"),
    Segment(4.5, 5.5, 1, "<script>alert('x')</script> is just text here."),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(root: Path, **sections: dict[str, Any]) -> Path:
    """The dashboard tests' config file under `root`: tests/support/config.py's, with a
    settle time short enough that an uploaded file is taken within the test."""
    return config_file(root, {"watch": {"settle_seconds": 0.3}}, **sections)


@dataclass
class Jobs:
    done: int  # a transcribed job with its archived source, outputs and stored transcript
    failed: int  # a failed job whose source is in failed/ (a transient failure: Retry is offered)
    audio: Path  # the done job's archived source


def populate(config: Config, *, name: str = XSS_NAME, seconds: float = 6.0,
             formats: tuple[str, ...] = ("json", "txt", "srt", "vtt", "html", "docx")) -> Jobs:
    """One done and one failed job, on disk and in the database, as the daemon leaves them
    (the done job's outputs in `formats`)."""
    db.migrate(config.database_url)
    store = Store(config.database_url, host=config.host)
    try:
        paths = config.paths
        spooled = spool.new_slot(paths.spool, store.host) / name
        write_wav(spooled, seconds)
        done = store.enqueue(source_name=name, spool_path=str(spooled), output_stem=Path(name).stem, sha256="a" * 64,
                             size_bytes=spooled.stat().st_size, audio_seconds=seconds)
        job = store.claim(slot=0, pid=os.getpid(), device="cpu", lease_seconds=60)
        assert job is not None and job.id == done
        # as a clustering leaves it: each speaker with its centroid
        transcript = Transcript(segments=SEGMENTS, audio_seconds=seconds, source=Source(name=name),
                                speaker_centroids={k: (float(k), 1.0, 0.0) for k in range(1, 4)})
        written = results.write_outputs(config, done, transcript, output_stem=job.output_stem,
                                        formats=formats)
        store.complete(done, pid=os.getpid(), audio_seconds=seconds, processing_seconds=seconds / 10, speakers=2,
                       outputs=written, device="cpu", transcript=transcript)
        archived = results.retire_done(config, store, done, spool_path=spooled, source_name=name)
        assert archived is not None

        bad = spool.new_slot(paths.spool, store.host) / "broken.wav"
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"not audio at all")
        # A failure a retry may change (an unforeseen error, not the file's fault).
        failed = store.add_failed(source_name="broken.wav", spool_path=str(bad), output_stem="broken",
                                  sha256="b" * 64, size_bytes=16, kind="error",
                                  message="RuntimeError: cannot decode: <junk>")
        spool.fail(spool_path=bad, spool_root=paths.spool, failed_root=paths.failed, source_name="broken.wav",
                   job_id=failed, sha256="b" * 64, error_kind="error",
                   error_message="RuntimeError: cannot decode: <junk>", attempts=0)
        return Jobs(done=done, failed=failed, audio=archived)
    finally:
        store.close()


class WebProcess:
    """`spkd web --listen 127.0.0.1:PORT` over a config file, as a real process."""

    def __init__(self, config_path: Path, *, port: int | None = None) -> None:
        self.config_path = config_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = config_path.parent / "web.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> "WebProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "--config", str(self.config_path), "web",
                                          "--listen", f"127.0.0.1:{self.port}"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_listening(self.port, timeout=timeout, proc=self.proc, log=self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> "WebProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_listening(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None,
                   log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"spkd web exited ({proc.returncode}):\n"
                                 + (log.read_text(errors="replace")[-3000:] if log else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def loaded(config_path: Path) -> Config:
    return load(config_path, env={})
