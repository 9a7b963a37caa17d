"""Talking to the service manager: sd_notify, the runtime file `spkd status` reads, and
the systemd unit / launchd agent that `spkd service install|uninstall|print` renders.

sd_notify is a datagram to `$NOTIFY_SOCKET`; without systemd there is no socket
and every call is a no-op.

The unit and plist templates are the files in `systemd/` and `launchd/` at the top of
the repository, shipped as package data of `daemon.systemd` and `daemon.launchd`
(`string.Template` placeholders); rendering fills in the absolute paths of this
installation: the venv's `spkd` script (else `python -m daemon`) and the config.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Callable, Sequence
from xml.sax.saxutils import escape as xml_escape

from daemon.config import Config
from daemon.errors import ServiceError
from daemon.files import atomic_write

__all__ = ["DEFAULT_SERVICE_USER", "PLATFORMS", "SCOPES", "ServiceFile", "clear_runtime", "detect_platform",
           "install", "notify", "pid_alive", "program_arguments", "read_runtime", "render", "running_daemon",
           "runtime_path", "stop_timeout_seconds", "uninstall", "watchdog_interval_seconds", "writable_paths", "write_runtime"]


def notify(*messages: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    payload = "\n".join(messages).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
        return True
    except OSError:
        return False


def watchdog_interval_seconds() -> float | None:
    """How often to send WATCHDOG=1 when systemd asks for it: half of `$WATCHDOG_USEC`
    (as sd_watchdog_enabled(3) recommends), or None when no watchdog is set for this
    process (`$WATCHDOG_PID`, when set, must be ours)."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


def runtime_path(config: Config) -> Path:
    return config.paths.state / "spkd.json"


def write_runtime(config: Config, *, pid: int) -> None:
    from daemon.store.db import display_url

    # The runtime file is world-readable: never write the database password into it.
    database = display_url(config.database_url)
    info = {"pid": pid, "started_at": time.time(), "config": str(config.source) if config.source else None,
            "database": database}
    atomic_write(runtime_path(config), json.dumps(info, indent=2) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (for the runtime file, orphaned workers)."""
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - psutil missing or the process vanished meanwhile
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_runtime(config: Config) -> dict[str, Any] | None:
    try:
        info = json.loads(runtime_path(config).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info


def running_daemon(config: Config) -> dict[str, Any] | None:
    """The runtime file of this host's daemon while its process lives, else None."""
    runtime = read_runtime(config)
    try:
        pid = int((runtime or {}).get("pid") or 0)
    except (TypeError, ValueError):
        return None
    return runtime if pid > 0 and pid_alive(pid) else None


def clear_runtime(config: Config) -> None:
    try:
        runtime_path(config).unlink()
    except FileNotFoundError:
        pass


# --- rendering the unit / plist ------------------------------------------------------

# The folder that holds the `daemon` package: the source tree of a checkout, site-packages of a wheel.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding daemon/
UNIT_NAME = "spkd.service"
LAUNCHD_LABEL = "local.spkd"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_SERVICE_USER = "spkd"
PLATFORMS = ("systemd", "launchd")
SCOPES = ("user", "system")
# Far above the supervisor's 5 s WATCHDOG=1 period: only a main loop that is truly stuck trips it.
WATCHDOG_SECONDS = 60
# Beyond the daemon's own drain (shutdown grace + kill grace): joining workers, closing the store.
STOP_MARGIN_SECONDS = 30
# launchd starts agents with PATH=/usr/bin:/bin:/usr/sbin:/sbin; ffmpeg comes from Homebrew.
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class ServiceFile:
    """A rendered unit or plist and where `install` puts it."""

    platform: str  # "systemd" or "launchd"
    scope: str  # "user" or "system"
    path: Path
    text: str
    name: str  # the systemd unit name or the launchd label
    log_file: Path | None = None  # launchd's StandardOutPath/StandardErrorPath


def detect_platform() -> str:
    if sys.platform.startswith("linux"):
        return "systemd"
    if sys.platform == "darwin":
        return "launchd"
    raise ServiceError(f"spkd service supports Linux (systemd) and macOS (launchd), not {sys.platform}")


def stop_timeout_seconds(config: Config) -> int:
    """TimeoutStopSec / ExitTimeOut: longer than the daemon takes to drain on SIGTERM."""
    d = config.daemon
    return math.ceil(d.shutdown_grace_seconds + d.kill_grace_seconds + STOP_MARGIN_SECONDS)


def program_arguments(config: Config) -> tuple[list[str], dict[str, str]]:
    """The command that runs this installation's daemon, and any environment it needs.

    sys.executable is taken as is, never resolved: resolving a venv's python symlink
    would escape the venv to the base interpreter, which lacks our packages."""
    config_path = _config_path(config)
    python = Path(os.path.abspath(sys.executable))
    script = python.parent / "spkd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), "--config", str(config_path), "run"], {}
    # No console script (running from a source tree): `python -m daemon` with the package on the path.
    return ([str(python), "-m", "daemon", "--config", str(config_path), "run"], {"PYTHONPATH": str(PACKAGE_PARENT)})


def writable_paths(config: Config) -> list[Path]:
    """What the daemon writes: every configured folder, the SQLite file's folder, the models."""
    p = config.paths
    found = [p.inbox, p.outbox, p.archive, p.failed, p.spool, p.state, p.voices]
    db_file = _sqlite_file(config.database_url)
    if db_file is not None:
        found.append(db_file.parent)
    found.append(config.models.dir)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def render(config: Config, *, platform: str | None = None, scope: str = "user",
           service_user: str = DEFAULT_SERVICE_USER, home: Path | None = None,
           unit_dir: Path | None = None) -> ServiceFile:
    """The unit (systemd) or agent plist (launchd) for this installation and config.
    `home` and `unit_dir` move the target away from the real home / /etc (tests)."""
    platform = platform or detect_platform()
    if platform not in PLATFORMS:
        raise ServiceError(f"unknown service platform {platform!r}; known: {', '.join(PLATFORMS)}")
    if scope not in SCOPES:
        raise ServiceError(f"unknown service scope {scope!r}; known: {', '.join(SCOPES)}")
    home = home or Path.home()
    if platform == "launchd":
        if scope == "system":
            raise ServiceError("on macOS spkd installs a LaunchAgent for the logged-in user only; drop --system")
        return _render_launchd(config, home=home, unit_dir=unit_dir)
    return _render_systemd(config, scope=scope, service_user=service_user, home=home, unit_dir=unit_dir)


def _config_path(config: Config) -> Path:
    if config.source is None:
        raise ServiceError("the service needs a config file: pass --config PATH")
    return Path(os.path.abspath(config.source))


def _sqlite_file(url: str) -> Path | None:
    from daemon.store.db import sqlite_path

    path = sqlite_path(url)
    return Path(os.path.abspath(path)) if path is not None else None


def _template(package: str, *parts: str) -> Template:
    resource = importlib.resources.files(package).joinpath(*parts)
    try:
        return Template(resource.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServiceError(f"service template missing: {resource} (a broken installation: reinstall spkd)") from None


def _documentation() -> str:
    """Documentation= of the unit: the README of a source checkout; an installed wheel has none."""
    readme = PACKAGE_PARENT / "README.md"
    return f"Documentation={_sd_escape(readme.as_uri())}" if readme.is_file() else ""


def _cache_environment(config: Config) -> dict[str, str]:
    # The service's home is read-only (ProtectSystem=strict) or not its own; libraries
    # that cache (numba, modelscope, torch) write under the state folder instead.
    cache = config.paths.state / "cache"
    return {"XDG_CACHE_HOME": str(cache), "MODELSCOPE_CACHE": str(cache / "modelscope"),
            "NUMBA_CACHE_DIR": str(cache / "numba")}


# systemd quoting: `%` starts a specifier everywhere; in command lines `$` starts a
# variable; values with blanks or quotes go in double quotes with C escapes.

def _sd_escape(value: str) -> str:
    return value.replace("%", "%%")


def _sd_quote(value: str, *, command: bool = False) -> str:
    value = _sd_escape(value)
    if command:
        value = value.replace("$", "$$")
    if value and not re.search(r"[\s\"'\\;]", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_systemd(config: Config, *, scope: str, service_user: str, home: Path,
                    unit_dir: Path | None) -> ServiceFile:
    if scope == "system" and not _USER_NAME.match(service_user):
        raise ServiceError(f"not a valid user name for the service: {service_user!r}")
    if unit_dir is None:
        unit_dir = SYSTEM_UNIT_DIR if scope == "system" else _user_unit_dir(home)
    unit_path = unit_dir / UNIT_NAME
    argv, env = program_arguments(config)
    env = {"PYTHONUNBUFFERED": "1", **_cache_environment(config), **env}
    paths = writable_paths(config)
    rw_lines = [f"ReadWritePaths={_sd_quote(str(p))}" for p in paths]
    values = {
        "unit_path": str(unit_path),
        "config_path": str(_config_path(config)),
        "documentation": _documentation(),
        "exec_start": " ".join(_sd_quote(a, command=True) for a in argv),
        "working_directory": _sd_escape(str(config.paths.state)),
        "environment": "\n".join(f"Environment={_sd_quote(f'{k}={v}')}" for k, v in env.items()),
        "watchdog_sec": str(WATCHDOG_SECONDS),
        "timeout_stop_sec": str(stop_timeout_seconds(config)),
        "service_user": service_user,
        "mounts": " ".join(_sd_quote(str(p)) for p in paths),
        "read_write_paths": "\n".join(rw_lines),
        "read_write_paths_commented": "\n".join("#" + line for line in rw_lines),
    }
    text = _template("daemon.systemd", scope, UNIT_NAME).substitute(values)
    return ServiceFile(platform="systemd", scope=scope, path=unit_path, text=text, name=UNIT_NAME)


def _user_unit_dir(home: Path) -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "systemd" / "user"


def launchd_log_dir(home: Path | None = None) -> Path:
    return (home or Path.home()) / "Library" / "Logs" / "spkd"


def _render_launchd(config: Config, *, home: Path, unit_dir: Path | None) -> ServiceFile:
    plist_path = (unit_dir or home / "Library" / "LaunchAgents") / f"{LAUNCHD_LABEL}.plist"
    log_file = launchd_log_dir(home) / "spkd.log"
    argv, env = program_arguments(config)
    env = {"PYTHONUNBUFFERED": "1", **env}
    values = {
        "plist_path": xml_escape(str(plist_path)).replace("--", "- -"),  # inside an XML comment
        "config_path": xml_escape(str(_config_path(config))).replace("--", "- -"),
        "label": LAUNCHD_LABEL,
        "program_arguments": "\n".join(f"    <string>{xml_escape(a)}</string>" for a in argv),
        "working_directory": xml_escape(str(config.paths.state)),
        "path": LAUNCHD_PATH,
        "environment": "\n".join(f"    <key>{xml_escape(k)}</key>\n    <string>{xml_escape(v)}</string>"
                                 for k, v in env.items()),
        "exit_timeout": str(stop_timeout_seconds(config)),
        "log_file": xml_escape(str(log_file)),
    }
    text = _template("daemon.launchd", "spkd.plist").substitute(values)
    return ServiceFile(platform="launchd", scope="user", path=plist_path, text=text, name=LAUNCHD_LABEL,
                       log_file=log_file)


# --- installing ------------------------------------------------------------------------

def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")


def _checked(runner: Runner, argv: Sequence[str], log: Callable[[str], None]) -> None:
    log("$ " + " ".join(argv))
    result = runner(argv)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip()
        raise ServiceError(f"`{' '.join(argv)}` failed ({result.returncode}): {detail}")


def _systemctl(scope: str) -> list[str]:
    return ["systemctl", "--user"] if scope == "user" else ["systemctl"]


def install(config: Config, service: ServiceFile, *, runner: Runner = _run, log: Callable[[str], None] = print,
            service_user: str = DEFAULT_SERVICE_USER, require_root: bool = True) -> None:
    """Write the unit or plist, then load, enable and start it (restarting a running one)."""
    if service.platform == "systemd":
        if service.scope == "system":
            _prepare_system(config, service_user, require_root=require_root, log=log)
        else:
            _prepare_folders(config, owner=None, log=log)
        systemctl = _systemctl(service.scope)
        was_active = runner([*systemctl, "is-active", "--quiet", service.name]).returncode == 0
        atomic_write(service.path, service.text)
        log(f"wrote {service.path}")
        _checked(runner, [*systemctl, "daemon-reload"], log)
        _checked(runner, [*systemctl, "enable", "--now", service.name], log)
        if was_active:  # enable --now leaves a running service on its old unit
            _checked(runner, [*systemctl, "restart", service.name], log)
        journal = "journalctl --user -u spkd" if service.scope == "user" else "journalctl -u spkd"
        log(f"spkd is running as {service.name}; logs: {journal} -f")
        if service.scope == "user":
            log(f"to keep it running while you are logged out: loginctl enable-linger {_login_name()}")
        return
    _prepare_folders(config, owner=None, log=log)
    log_dir = (service.log_file or launchd_log_dir() / "spkd.log").parent
    log_dir.mkdir(parents=True, exist_ok=True)  # launchd does not create the log file's folder
    domain = f"gui/{os.getuid()}"
    target = f"{domain}/{service.name}"
    if runner(["launchctl", "print", target]).returncode == 0:
        log(f"$ launchctl bootout {target}")
        runner(["launchctl", "bootout", target])
        _wait_gone(runner, target, timeout=stop_timeout_seconds(config) + 5)
    atomic_write(service.path, service.text)
    log(f"wrote {service.path}")
    _checked(runner, ["launchctl", "bootstrap", domain, str(service.path)], log)
    _checked(runner, ["launchctl", "enable", target], log)
    _checked(runner, ["launchctl", "kickstart", target], log)
    log(f"spkd is running as {service.name}; logs: {log_dir}")


def uninstall(service: ServiceFile, *, runner: Runner = _run, log: Callable[[str], None] = print,
              require_root: bool = True) -> bool:
    """Stop, disable and remove the unit or plist; False when nothing was installed."""
    if service.platform == "systemd":
        if service.scope == "system" and require_root:
            _require_root("uninstall", "--system")
        systemctl = _systemctl(service.scope)
        log(f"$ {' '.join(systemctl)} disable --now {service.name}")
        runner([*systemctl, "disable", "--now", service.name])  # fails harmlessly when not loaded
        existed = _remove(service.path, log)
        _checked(runner, [*systemctl, "daemon-reload"], log)
        return existed
    target = f"gui/{os.getuid()}/{service.name}"
    log(f"$ launchctl bootout {target}")
    runner(["launchctl", "bootout", target])  # fails harmlessly when not loaded
    return _remove(service.path, log)


def _remove(path: Path, log: Callable[[str], None]) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        log(f"{path} was not installed")
        return False
    log(f"removed {path}")
    return True


def _wait_gone(runner: Runner, target: str, *, timeout: float) -> None:
    """bootout returns before a draining daemon has exited; bootstrap would then fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runner(["launchctl", "print", target]).returncode != 0:
            return
        time.sleep(0.5)
    raise ServiceError(f"{target} did not stop within {timeout:.0f} s; try again once it has")


def _login_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "$USER")


def _require_root(verb: str, flag: str) -> None:
    if os.geteuid() != 0:
        raise ServiceError(f"{verb} {flag} needs root: sudo {sys.argv[0]} … service {verb} {flag}")


def _prepare_system(config: Config, service_user: str, *, require_root: bool, log: Callable[[str], None]) -> None:
    if require_root:
        _require_root("install", "--system")
    import pwd

    try:
        account = pwd.getpwnam(service_user)
    except KeyError:
        raise ServiceError(
            f"the service user {service_user!r} does not exist; create it with: "
            f"sudo useradd --system --user-group --home-dir {config.paths.state} --shell /usr/sbin/nologin "
            f"{service_user}  (and add it to the render/video groups for ROCm or Intel GPUs)") from None
    _prepare_folders(config, owner=(account.pw_uid, account.pw_gid), log=log)


def _prepare_folders(config: Config, *, owner: tuple[int, int] | None, log: Callable[[str], None]) -> None:
    """ReadWritePaths= of a missing folder stops the unit from starting, and under
    ProtectSystem=strict the daemon could not create it: create them now. Folders we
    create for a system unit belong to its user; existing ones are left as they are."""
    for path in writable_paths(config):
        if path.exists():
            if owner is not None and path.stat().st_uid != owner[0]:
                log(f"note: {path} is not owned by the service user; make sure it can write there")
            continue
        path.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(path, *owner)
        log(f"created {path}")
