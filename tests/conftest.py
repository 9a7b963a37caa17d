"""Shared fixtures: tiny FunASR models, synthetic two-voice recordings, and the store.

The tiny models are built once per checkout into tests/.cache/ (about a minute, most of
it training the speaker model; see tests/support/models.py); the audio is made once per
session in pytest's temporary directory, in under a second with espeak-ng/sox/ffmpeg.

The store (`store`, `make_store`, `url`, `empty_url`) runs every test that asks for it
on each database backend, SQLite and PostgreSQL; the PostgreSQL server is started once
per session and its tests skip, saying why, where none can be started. A module or test
marked `@pytest.mark.backends("sqlite")` runs on the named backends only. Configs for
tests are made by tests/support/config.py.
"""

from __future__ import annotations

import os

# As in the daemon's workers (daemon.service.devices.worker_env): OpenMP threads that spin while
# waiting turn second-long tests into minute-long ones on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.audio import Turn, make_two_voice_wav, require_tools, to_m4a

if TYPE_CHECKING:
    from daemon.store import Store

BACKENDS = ("sqlite", "postgres")


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


# --- a real OpenAI-compatible LLM server (llama.cpp's, SmolLM2-135M) for the summary tests ---
# Defined in tests/support/llm_server.py: one server per session, skipping only where
# llama-cpp-python or the model is not installed (`make test` installs both).
from tests.support.llm_server import llm_server  # noqa: E402,F401


# --- the store, on every backend --------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run this test's store on these database backends only "
                                       f"(default: all of {', '.join(BACKENDS)})")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrised here rather than by `params=` on the fixture, so that a module or a test
    # can narrow the backends with a marker while sharing the one fixture.
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = tuple(marker.args) if marker else BACKENDS
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown or not names:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends{names}: each must be one of {BACKENDS}")
    metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture()
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend this test runs on: "sqlite" or "postgres"."""
    return str(request.param)


@pytest.fixture()
def sqlite_path(tmp_path: Path) -> Path:
    """Where the SQLite variant keeps its database file; a module that needs it elsewhere
    overrides this fixture."""
    return tmp_path / "spkd.db"


@pytest.fixture()
def empty_url(backend: str, sqlite_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database with no schema (for tests of migrations)."""
    if backend == "sqlite":
        return f"sqlite:///{sqlite_path}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture()
def url(empty_url: str) -> str:
    """The URL of a fresh database migrated to the latest schema."""
    from daemon.store import db

    db.migrate(empty_url)
    return empty_url


@pytest.fixture()
def make_store(url: str) -> Iterator[Callable[..., Store]]:
    """`make_store(host="h1")`: a Store on the test's database as `host` sees it (several
    hosts share one database); each is closed at the end of the test."""
    from daemon.store import Store

    made: list[Store] = []

    def make(host: str = "h1") -> Store:
        store = Store(url, host=host)
        made.append(store)
        return store

    yield make
    for store in reversed(made):
        store.close()


@pytest.fixture()
def store(make_store: Callable[..., Store]) -> Store:
    """The store of host "h1" on a fresh, migrated database, on each backend."""
    return make_store("h1")
