"""Rendering and installing the systemd unit / launchd agent, and sd_notify."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.service import manager as service
from daemon.cli.main import main
from daemon.config import load
from daemon.errors import ServiceError
from tests.support.config import write_config


# An installation's site: folder names unlike the defaults, so a unit that names a folder
# is seen to take it from the config.
SITE = {"paths": {"inbox": "in", "outbox": "out", "archive": "arch", "failed": "fail", "spool": "spool",
                  "state": "state", "voices": "voices"},
        "models": {"dir": "models"},
        "daemon": {"shutdown_grace_seconds": 45, "kill_grace_seconds": 7}}


def site_config(root: Path, extra: dict | None = None) -> Path:
    return write_config(root, SITE, extra or {}, name="config.json")


@pytest.fixture()
def config(tmp_path):
    return load(site_config(tmp_path / "site"), env={})


def directives(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in text.splitlines()
            if line and not line.startswith(("#", "[")) and "=" in line]


def values(text: str, key: str) -> list[str]:
    return [v for k, v in directives(text) if k == key]


# --- systemd ---------------------------------------------------------------------------

def test_system_unit_runs_this_installation_as_a_notify_service_with_a_watchdog(config, tmp_path):
    unit = service.render(config, platform="systemd", scope="system")
    text = unit.text
    assert unit.path == Path("/etc/systemd/system/spkd.service")
    assert values(text, "Type") == ["notify"]
    assert values(text, "User") == ["spkd"]
    assert values(text, "Restart") == ["on-failure"]
    assert values(text, "KillMode") == ["mixed"]
    watchdog = int(values(text, "WatchdogSec")[0])
    assert watchdog >= 30  # comfortably above the supervisor's 5 s ping
    stop = int(values(text, "TimeoutStopSec")[0])
    assert stop > 45 + 7  # longer than the daemon's own drain
    assert values(text, "WantedBy") == ["multi-user.target"]
    exec_start = values(text, "ExecStart")[0].split()
    assert Path(exec_start[0]).is_absolute() and os.access(exec_start[0], os.X_OK)
    assert exec_start[-3:] == ["--config", str(tmp_path / "site" / "config.json"), "run"]
    assert "$" not in text.replace("$MAINPID", "")  # every placeholder was filled


def test_system_unit_hardening_keeps_the_gpus_and_opens_exactly_the_configured_folders(config, tmp_path):
    text = service.render(config, platform="systemd", scope="system").text
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
        assert values(text, key) == [value]
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert not values(text, key), key
    site = tmp_path / "site"
    expected = {site / n for n in ("in", "out", "arch", "fail", "spool", "state", "voices", "models")}
    assert {Path(v) for v in values(text, "ReadWritePaths")} == expected
    # The caches of numba / modelscope / torch go to the (writable) state folder.
    env = dict(v.split("=", 1) for v in values(text, "Environment"))
    assert env["XDG_CACHE_HOME"] == str(site / "state" / "cache")


def test_without_a_console_script_the_unit_runs_python_m_daemon(config, tmp_path, monkeypatch):
    bare = tmp_path / "bare" / "bin" / "python3"
    bare.parent.mkdir(parents=True)
    bare.symlink_to(sys.executable)  # a venv-like symlink: used as is, not resolved
    monkeypatch.setattr(sys, "executable", str(bare))
    argv, env = service.program_arguments(config)
    assert argv[:3] == [str(bare), "-m", "daemon"] and argv[-1] == "run"
    assert (Path(env["PYTHONPATH"]) / "daemon" / "__init__.py").is_file()
    text = service.render(config, platform="systemd", scope="user").text
    assert values(text, "ExecStart")[0].startswith(f"{bare} -m daemon --config ")
    assert f"PYTHONPATH={env['PYTHONPATH']}" in values(text, "Environment")


def test_database_folder_outside_the_state_folder_is_writable_too(tmp_path):
    cfg = load(site_config(tmp_path / "site", {"database": {"url": f"sqlite:///{tmp_path}/db/jobs.db"}}), env={})
    text = service.render(cfg, platform="systemd", scope="system").text
    assert str(tmp_path / "db") in values(text, "ReadWritePaths")


def test_timeout_stop_follows_the_configured_grace(tmp_path):
    cfg = load(site_config(tmp_path / "site", {"daemon": {"shutdown_grace_seconds": 600,
                                                            "kill_grace_seconds": 20}}), env={})
    text = service.render(cfg, platform="systemd", scope="user").text
    assert int(values(text, "TimeoutStopSec")[0]) == 600 + 20 + service.STOP_MARGIN_SECONDS


def test_user_unit_goes_to_the_users_config_dir_without_a_user_line(config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    unit = service.render(config, platform="systemd", scope="user")
    assert unit.path == tmp_path / "xdg" / "systemd" / "user" / "spkd.service"
    assert not values(unit.text, "User")
    assert values(unit.text, "WantedBy") == ["default.target"]
    assert values(unit.text, "Type") == ["notify"] and values(unit.text, "NoNewPrivileges") == ["yes"]
    # The namespace sandbox is offered, commented out, with the same folders.
    assert "#ProtectSystem=strict" in unit.text
    assert len(re.findall(r"^#ReadWritePaths=", unit.text, re.MULTILINE)) == 8


def test_strange_paths_are_quoted_and_escaped_for_systemd(tmp_path):
    cfg = load(site_config(tmp_path / "we ird%dir", {"paths": {"inbox": "in box", "outbox": "o$ut"}}), env={})
    text = service.render(cfg, platform="systemd", scope="system").text
    assert f'ReadWritePaths="{tmp_path}/we ird%%dir/in box"' in text
    assert f'ReadWritePaths="{tmp_path}/we ird%%dir/o$ut"' in text
    assert f'--config "{tmp_path}/we ird%%dir/config.json" run' in values(text, "ExecStart")[0]


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if sys.platform.startswith("linux"):
            pytest.fail("systemd-analyze is missing: `make test` installs it (Debian package systemd)")
        pytest.skip("systemd-analyze exists on Linux only")
    return found


@pytest.mark.parametrize("scope", ["system", "user"])
@pytest.mark.parametrize("site", ["site", "we ird%dir"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path, scope, site):
    analyze = _systemd_analyze()
    cfg = load(site_config(tmp_path / site, {"paths": {"inbox": "in box"}}), env={})
    unit_dir = tmp_path / "units"
    unit = service.render(cfg, platform="systemd", scope=scope, unit_dir=unit_dir)
    unit_dir.mkdir()
    unit.path.write_text(unit.text)
    # --man=no: no man pages in a container. A --user manager needs a runtime dir of its own.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    argv = [analyze, *(["--user"] if scope == "user" else []), "verify", "--man=no", str(unit.path)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 and str(unit.path) not in output:
        pytest.skip(f"systemd-analyze cannot run here: {output[:300]}")
    # verify exits 0 even for unknown keys or values it ignores: any line about our file is a failure.
    assert result.returncode == 0 and str(unit.path) not in output, output


# --- launchd ---------------------------------------------------------------------------

def test_launch_agent_plist_parses_and_has_the_required_keys(tmp_path):
    cfg = load(site_config(tmp_path / "a & <b>"), env={})
    home = tmp_path / "home"
    agent = service.render(cfg, platform="launchd", home=home)
    assert agent.path == home / "Library" / "LaunchAgents" / "local.spkd.plist"
    plist = plistlib.loads(agent.text.encode())
    assert plist["Label"] == "local.spkd"
    assert plist["ProgramArguments"][-3:] == ["--config", str(tmp_path / "a & <b>" / "config.json"), "run"]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] > cfg.daemon.shutdown_grace_seconds + cfg.daemon.kill_grace_seconds
    assert plist["ProcessType"] == "Standard"
    assert plist["EnvironmentVariables"]["PATH"].startswith("/opt/homebrew/bin:/usr/local/bin:")
    log_dir = home / "Library" / "Logs" / "spkd"
    assert Path(plist["StandardOutPath"]).parent == log_dir
    assert Path(plist["StandardErrorPath"]).parent == log_dir


def test_launchd_has_no_system_scope(config):
    with pytest.raises(ServiceError, match="LaunchAgent"):
        service.render(config, platform="launchd", scope="system")


# --- install / uninstall (with a recording runner) ---------------------------------------

class Runner:
    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.calls: list[list[str]] = []
        self.failing = failing

    def __call__(self, argv):
        self.calls.append(list(argv))
        bad = any(word in argv for word in self.failing)
        return subprocess.CompletedProcess(list(argv), 1 if bad else 0, "", "boom" if bad else "")


def test_install_user_unit_writes_reloads_enables_and_starts(config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    unit = service.render(config, platform="systemd", scope="user")
    runner = Runner(failing=("is-active",))  # not running yet
    lines: list[str] = []
    service.install(config, unit, runner=runner, log=lines.append)
    assert unit.path.read_text() == unit.text
    assert runner.calls == [["systemctl", "--user", "is-active", "--quiet", "spkd.service"],
                            ["systemctl", "--user", "daemon-reload"],
                            ["systemctl", "--user", "enable", "--now", "spkd.service"]]
    assert all(p.is_dir() for p in service.writable_paths(config))  # ReadWritePaths= must exist
    assert any("journalctl --user -u spkd" in line for line in lines)

    runner = Runner()  # now it runs: a re-install restarts it on the new unit
    service.install(config, unit, runner=runner, log=lines.append)
    assert runner.calls[-1] == ["systemctl", "--user", "restart", "spkd.service"]

    runner = Runner(failing=("disable",))
    assert service.uninstall(unit, runner=runner, log=lines.append)
    assert not unit.path.exists()
    assert runner.calls[-1] == ["systemctl", "--user", "daemon-reload"]
    assert not service.uninstall(unit, runner=Runner(), log=lines.append)


def test_install_reports_a_failing_systemctl(config, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    unit = service.render(config, platform="systemd", scope="user")
    with pytest.raises(ServiceError, match="enable --now spkd.service.*boom"):
        service.install(config, unit, runner=Runner(failing=("enable", "is-active")), log=lambda _: None)


def test_system_install_needs_root_and_the_service_user(config, tmp_path, monkeypatch):
    unit = service.render(config, platform="systemd", scope="system", unit_dir=tmp_path / "etc")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ServiceError, match="needs root"):
        service.install(config, unit, runner=Runner(), log=lambda _: None)
    with pytest.raises(ServiceError, match="useradd --system"):
        service.install(config, unit, runner=Runner(), log=lambda _: None, service_user="no-such-user-spkd",
                        require_root=False)


def test_install_launch_agent_bootstraps_and_kickstarts(config, tmp_path):
    home = tmp_path / "home"
    agent = service.render(config, platform="launchd", home=home)
    runner = Runner(failing=("print",))  # not loaded yet
    service.install(config, agent, runner=runner, log=lambda _: None)
    uid = os.getuid()
    assert plistlib.loads(agent.path.read_bytes())["Label"] == "local.spkd"
    assert (home / "Library" / "Logs" / "spkd").is_dir()
    assert runner.calls[1:] == [["launchctl", "bootstrap", f"gui/{uid}", str(agent.path)],
                                ["launchctl", "enable", f"gui/{uid}/local.spkd"],
                                ["launchctl", "kickstart", f"gui/{uid}/local.spkd"]]
    runner = Runner()
    assert service.uninstall(agent, runner=runner, log=lambda _: None)
    assert runner.calls == [["launchctl", "bootout", f"gui/{uid}/local.spkd"]] and not agent.path.exists()


# --- the CLI -------------------------------------------------------------------------

def test_cli_prints_either_platforms_file_for_review(tmp_path, capsys):
    config_path = site_config(tmp_path / "site")
    assert main(["--config", str(config_path), "service", "print", "--system", "--platform", "systemd",
                 "--service-user", "transcriber"]) == 0
    out = capsys.readouterr().out
    assert values(out, "User") == ["transcriber"] and values(out, "Type") == ["notify"]
    assert main(["service", "print", "--platform", "launchd", "--config", str(config_path)]) == 0
    assert plistlib.loads(capsys.readouterr().out.encode())["Label"] == "local.spkd"


def test_cli_rejects_user_and_system_together(tmp_path):
    with pytest.raises(SystemExit):
        main(["--config", str(site_config(tmp_path)), "service", "print", "--user", "--system"])


# --- sd_notify -------------------------------------------------------------------------

def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_notify_is_a_no_op_without_a_socket(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert service.notify("READY=1") is False  # a dead socket never raises


def test_notify_sends_one_datagram_to_a_path_socket(monkeypatch):
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # AF_UNIX paths are limited to ~100 bytes
        address = os.path.join(short, "n.sock")
        with _receiver(address) as sock:
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            assert service.notify("READY=1", "STATUS=0 queued")
            assert sock.recv(4096) == b"READY=1\nSTATUS=0 queued"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_notify_understands_abstract_sockets(monkeypatch):
    name = f"spkd-test-{os.getpid()}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert service.notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert service.watchdog_interval_seconds() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert service.watchdog_interval_seconds() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.watchdog_interval_seconds() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert service.watchdog_interval_seconds() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert service.watchdog_interval_seconds() is None
