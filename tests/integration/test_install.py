"""spkd installed as a package, not run from its checkout: a wheel built from the
project files, installed (not editable) into a fresh venv outside the repository,
runs `spkd db upgrade`, `spkd service print` and a one-shot `spkd transcribe` from
another folder. Migrations and unit templates must come from the installed package.

To stay fast the fresh venv borrows this venv's dependencies (torch, funasr, …)
through a .pth line; spkd itself comes only from the wheel, which the test proves
with `daemon.__file__`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from daemon.store import db
from daemon.engine.models import ModelDirs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# What a source distribution of spkd holds: everything the wheel is built from.
PROJECT_FILES = ("pyproject.toml", "README.md", "daemon", "migrations", "systemd", "launchd")


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv with spkd installed from a wheel."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    wheels = root / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(wheels), str(source)], cwd=root, env=env)
    wheel = next(wheels.glob("spkd-*.whl"))

    target = root / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(target)
    python = target / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       cwd=root, env=env).stdout.strip())
    # Only a plain path line: the .pth files over there (this venv's editable spkd) are not run.
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "spkd-test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    # --ignore-installed: this venv's editable spkd is visible there too and must stay untouched.
    run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
         str(wheel)], cwd=root, env=env)
    return target / "bin"


@pytest.fixture()
def elsewhere(tmp_path: Path, tiny_models: ModelDirs) -> tuple[Path, dict[str, str]]:
    """A folder outside the repository with a config of its own, and a clean environment."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"models": {"dir": str(tiny_models.asr.parent)},
                                                    "workers": {"device": "cpu"}}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SPKD_")}
    return folder, env


def test_spkd_comes_from_the_wheel(installed: Path, elsewhere: tuple[Path, dict[str, str]]) -> None:
    folder, env = elsewhere
    where = run([str(installed / "python"), "-c", "import daemon, daemon.migrations, daemon.systemd; "
                 "print(daemon.__file__); print(daemon.migrations.__file__); print(daemon.systemd.__file__)"],
                cwd=folder, env=env).stdout.split()
    venv_root = installed.parent.resolve()
    for path in where:
        assert Path(path).resolve().is_relative_to(venv_root), path
        assert not Path(path).resolve().is_relative_to(REPO), path


def test_db_upgrade_and_service_print(installed: Path, elsewhere: tuple[Path, dict[str, str]]) -> None:
    folder, env = elsewhere
    spkd = str(installed / "spkd")
    upgraded = run([spkd, "--config", "config.json", "db", "upgrade"], cwd=folder, env=env)
    assert f"at revision {db.head_revision()}" in upgraded.stdout
    assert (folder / "var" / "state" / "spkd.db").is_file()

    unit = run([spkd, "--config", "config.json", "service", "print", "--platform", "systemd"], cwd=folder,
               env=env).stdout
    assert f"ExecStart={installed / 'spkd'} --config {folder / 'config.json'} run" in unit
    assert "PYTHONPATH" not in unit and "Documentation=" not in unit  # nothing points into a checkout
    assert "Type=notify" in unit and "RestartPreventExitStatus=2" in unit
    system_unit = run([spkd, "--config", "config.json", "service", "print", "--system", "--platform", "systemd"],
                      cwd=folder, env=env).stdout
    assert "ProtectSystem=strict" in system_unit
    plist = run([spkd, "--config", "config.json", "service", "print", "--platform", "launchd"], cwd=folder,
                env=env).stdout
    assert f"<string>{installed / 'spkd'}</string>" in plist


def test_one_shot_transcribe(installed: Path, elsewhere: tuple[Path, dict[str, str]], two_voice_wav: Path) -> None:
    folder, env = elsewhere
    audio = folder / "meeting.wav"
    shutil.copy2(two_voice_wav, audio)
    proc = run([str(installed / "spkd"), "--config", "config.json", "transcribe", "meeting.wav", "--out", "out",
                "--formats", "json,srt", "--no-progress"], cwd=folder, env=env, timeout=600)
    written = [Path(line) for line in proc.stdout.split()]
    assert sorted(p.name for p in written) == ["meeting.json", "meeting.srt"]
    result = json.loads((folder / "out" / "meeting.json").read_text(encoding="utf-8"))
    assert result["source"]["name"] == "meeting.wav" and result["source"]["sha256"] and result["audio_seconds"] > 20
