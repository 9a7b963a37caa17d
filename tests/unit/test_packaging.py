"""What a built wheel contains is what pyproject.toml lists: every subpackage of daemon/,
and the top-level migrations/, systemd/ and launchd/ folders as package data (found
through importlib.resources). tests/integration/test_install.py installs a real wheel."""

from __future__ import annotations

import fnmatch
import importlib.resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
MAPPED = {"daemon.migrations": "migrations", "daemon.systemd": "systemd", "daemon.launchd": "launchd"}


def setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def test_every_subpackage_of_daemon_is_listed() -> None:
    listed = set(setuptools_config()["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "daemon").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_the_top_level_folders_ship_as_packages_with_all_their_files() -> None:
    config = setuptools_config()
    assert config["package-dir"] == MAPPED
    for package, folder in MAPPED.items():
        root = REPO / folder
        patterns = config["package-data"].get(package, [])
        for path in root.rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            if path.suffix == ".py":
                assert ".".join((package, *path.parent.relative_to(root).parts)) in config["packages"], rel
            else:
                assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{folder}/{rel} is not package data"


def test_the_dashboard_ships_its_templates_and_static_files() -> None:
    patterns = setuptools_config()["package-data"]["daemon.web"]
    root = REPO / "daemon" / "web"
    shipped = [p for folder in ("templates", "static") for p in (root / folder).rglob("*") if p.is_file()]
    assert shipped
    for path in shipped:
        rel = path.relative_to(root).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"daemon/web/{rel} is not package data"


def test_the_installed_package_finds_them() -> None:
    from daemon.store import db

    assert (db.migrations_dir() / "env.py").is_file()
    assert (db.migrations_dir() / "script.py.mako").is_file()
    for scope in ("user", "system"):
        assert "[Service]" in importlib.resources.files("daemon.systemd").joinpath(scope, "spkd.service").read_text()
    assert "<plist" in importlib.resources.files("daemon.launchd").joinpath("spkd.plist").read_text()
