"""The error tree (daemon/errors.py): one class per stored kind, told apart by class,
drawn in the module's docstring; and the out-of-memory retry every caller shares."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from daemon import errors
from daemon.engine.transcriber import OOM_RETRIES, transcribe_with_retries
from daemon.errors import ExitCode, OutOfMemoryError, SpkdError, UnexpectedError, as_spkd_error
from daemon.store.schema import jobs
from daemon.transcript import Transcript

DAEMON = Path(errors.__file__).parent
# What jobs.error_kind has always held: these strings never change.
STORED_KINDS = {"error", "config", "models_missing", "models_fetch", "bad_audio", "not_audio", "too_short", "empty",
                "symlink", "bad_options", "device", "oom", "device_missing", "ffmpeg_missing", "worker_lost",
                "lease_expired"}


def error_classes() -> list[type[SpkdError]]:
    found = [getattr(errors, name) for name in errors.__all__]
    return [c for c in found if isinstance(c, type) and issubclass(c, SpkdError) and c is not SpkdError]


def test_one_class_per_kind_and_every_stored_kind_has_its_class() -> None:
    kinds = [c.kind for c in error_classes()]
    assert len(kinds) == len(set(kinds)), kinds
    assert STORED_KINDS <= set(kinds)
    assert all(len(k) <= jobs.c.error_kind.type.length for k in kinds)


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^\s*[│├└─\s]*([A-Z][A-Za-z]+Error)\s+([a-z_]+)?", line)
        if match:
            drawn[match.group(1)] = match.group(2)
    for cls in error_classes():
        assert drawn.get(cls.__name__) == cls.kind, cls.__name__
        parent = cls.__mro__[1].__name__
        assert parent in drawn or parent == "SpkdError", cls.__name__
    assert "ReadOnlyError" in drawn


def _daemon_sources() -> list[tuple[Path, ast.AST]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(DAEMON.rglob("*.py"))]


def test_no_raise_site_invents_a_kind_and_nothing_compares_kinds() -> None:
    names = {c.__name__ for c in error_classes()} | {"SpkdError"}
    problems = []
    for path, tree in _daemon_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names \
                    and any(k.arg == "kind" for k in node.keywords):
                problems.append(f"{path.name}:{node.lineno}: {node.func.id}(kind=…)")
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Attribute) and side.attr == "kind":
                        problems.append(f"{path.name}:{node.lineno}: compares .kind")
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id == "SpkdError":
                problems.append(f"{path.name}:{node.lineno}: raises the abstract SpkdError")
    assert problems == []


def test_foreign_exceptions_become_unexpected_errors() -> None:
    ours = errors.TooShortError("0.2 s")
    assert as_spkd_error(ours) is ours
    wrapped = as_spkd_error(KeyError("x"))
    assert isinstance(wrapped, UnexpectedError) and wrapped.kind == "error" and not wrapped.permanent
    assert wrapped.message == "KeyError: 'x'" and isinstance(wrapped.__cause__, KeyError)


def test_permanence_by_class() -> None:
    assert errors.NotAudioError("x").permanent and isinstance(errors.NotAudioError("x"), errors.AudioError)
    assert errors.OptionsError("x").permanent
    assert not OutOfMemoryError("x").permanent and isinstance(OutOfMemoryError("x"), errors.DeviceError)
    assert not errors.FfmpegMissingError("x").permanent
    assert errors.LeaseExpiredError.kind == "lease_expired" and issubclass(errors.LeaseExpiredError,
                                                                           errors.WorkerLostError)


def test_out_of_memory_is_recognised_by_type_name_or_message() -> None:
    class OutOfMemoryErrorLike(Exception):
        pass

    OutOfMemoryErrorLike.__name__ = "OutOfMemoryError"
    assert errors.is_out_of_memory(OutOfMemoryErrorLike())
    assert errors.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not errors.is_out_of_memory(RuntimeError("device-side assert triggered"))
    assert not errors.is_out_of_memory(ValueError("out of memory"))


def test_exit_codes_keep_their_values() -> None:
    assert {c.name: int(c) for c in ExitCode} == {"OK": 0, "FAILED": 1, "ERROR": 2, "BOOT_FAILED": 3,
                                                  "LOST_PARENT": 4, "INTERRUPTED": 130, "BROKEN_PIPE": 141}


# --- the out-of-memory retry the worker and `spkd transcribe` share -----------------------

class Greedy:
    """An engine that runs out of memory until batch_size_s is at most `fits`."""

    def __init__(self, batch_size_s: int, fits: int) -> None:
        self.batch_size_s, self.fits = batch_size_s, fits
        self.calls: list[dict[str, Any]] = []
        self.released = 0

    def transcribe(self, audio_path: Path, **kwargs: Any) -> Transcript:
        self.calls.append({"batch_size_s": self.batch_size_s, **kwargs})
        if self.batch_size_s > self.fits:
            raise OutOfMemoryError(f"out of memory at batch_size_s={self.batch_size_s}")
        return Transcript(segments=(), audio_seconds=1.0)

    def release(self) -> None:
        self.released += 1


def test_out_of_memory_halves_the_batch_and_passes_the_options() -> None:
    engine, retried = Greedy(300, fits=75), []
    transcribe_with_retries(engine, Path("a.wav"), {"speakers": 2, "hotwords": ["魔搭"], "formats": ["srt"],
                                                  "channels": ["客服", "客户"]},
                            source_name="team/a.wav", on_retry=retried.append)
    assert [c["batch_size_s"] for c in engine.calls] == [300, 150, 75]
    assert retried == [150, 75] and engine.released == 2
    assert engine.calls[-1] == {"batch_size_s": 75, "speakers": 2, "hotwords": ("魔搭",), "source_name": "team/a.wav",
                                "progress": None, "channels": ["客服", "客户"]}


def test_out_of_memory_gives_up_after_the_retries() -> None:
    engine = Greedy(300, fits=1)
    with pytest.raises(OutOfMemoryError):
        transcribe_with_retries(engine, Path("a.wav"), {}, source_name="a.wav")
    assert len(engine.calls) == OOM_RETRIES + 1


def test_out_of_memory_never_goes_below_batch_1() -> None:
    engine = Greedy(1, fits=0)
    with pytest.raises(OutOfMemoryError):
        transcribe_with_retries(engine, Path("a.wav"), {}, source_name="a.wav")
    assert len(engine.calls) == 1


def test_a_database_that_cannot_be_used_now_leaves_the_store_as_one_error_with_one_line() -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from daemon.errors import DatabaseUnavailableError, DiskFullError
    from daemon.store.db import translate_errors

    driver = sqlite3.OperationalError("database is locked\n(a second line nobody needs)")
    with pytest.raises(DatabaseUnavailableError) as caught:
        with translate_errors():
            raise OperationalError("UPDATE jobs SET …", {}, driver)
    assert str(caught.value) == "database is locked" and not caught.value.permanent
    assert isinstance(caught.value.__cause__, OperationalError)
    assert as_spkd_error(caught.value) is caught.value
    with pytest.raises(DatabaseUnavailableError) as full:
        with translate_errors():
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = 13  # type: ignore[attr-defined]
            raise OperationalError("INSERT …", {}, error)
    # recorded on a job as what it is: a full disk, which the disk guard waits out
    assert isinstance(as_spkd_error(full.value), DiskFullError)
    with pytest.raises(KeyError):
        with translate_errors():
            raise KeyError("a bug stays a bug")
