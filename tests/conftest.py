"""Shared fixtures: tiny FunASR models and synthetic two-voice recordings.

The tiny models are built once per checkout into tests/.cache/ (about a minute, most of
it training the speaker model; see tests/support/models.py); the audio is made once per
session in pytest's temporary directory, in under a second with espeak-ng/sox/ffmpeg.
"""

from __future__ import annotations

import os

# As in the daemon's workers (daemon.service.devices.worker_env): OpenMP threads that spin while
# waiting turn second-long tests into minute-long ones on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path

import pytest

from tests.support.audio import Turn, make_two_voice_wav, require_tools, to_m4a


@pytest.fixture(scope="session")
def tiny_models():  # -> daemon.engine.models.ModelDirs
    """A complete tiny model set (asr, vad, punc, spk) under the default names: random
    ASR and punctuation, the real FSMN-VAD, a CAM++ trained on espeak-ng voices. Built
    once per checkout into tests/.cache/ (tests/support/models.py); read-only for tests."""
    from daemon.engine.models import ModelDirs
    from tests.support.models import NAMES, cached_tiny_models

    root = cached_tiny_models()
    return ModelDirs(**{role: root / name for role, name in NAMES.items()})


@pytest.fixture(scope="session")
def _two_voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Turn]]:
    require_tools("espeak-ng", "sox")
    path = tmp_path_factory.mktemp("audio") / "two_voices.wav"
    turns = make_two_voice_wav(path)
    return path, turns


@pytest.fixture(scope="session")
def two_voice_wav(_two_voice: tuple[Path, list[Turn]]) -> Path:
    """~27 s, 16 kHz mono: voices A and B alternate (A B A B), 2 s pauses, >= 16 s speech."""
    return _two_voice[0]


@pytest.fixture(scope="session")
def two_voice_turns(_two_voice: tuple[Path, list[Turn]]) -> list[Turn]:
    """Who speaks when in `two_voice_wav` (the ground truth)."""
    return _two_voice[1]


@pytest.fixture(scope="session")
def two_voice_m4a(two_voice_wav: Path) -> Path:
    require_tools("ffmpeg")
    return to_m4a(two_voice_wav, two_voice_wav.with_suffix(".m4a"))


# --- PostgreSQL (several hosts share one queue) ---------------------------------------

@pytest.fixture(scope="session")
def postgres_server():  # -> tests.support.postgres.PostgresServer
    """A private PostgreSQL server for this session (see tests/support/postgres.py);
    the tests that use it skip, saying why, where none can be started."""
    from tests.support.postgres import PostgresServer, Unavailable

    server = PostgresServer()
    try:
        server.start()
    except Unavailable as exc:
        server.stop()
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server):
    """The SQLAlchemy URL of a fresh, empty database on the session's server."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)
