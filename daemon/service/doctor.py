"""`spkd doctor`: everything that decides whether the daemon can start, in one report.

Imports no torch itself: versions and devices come from the same short-lived
probe process the supervisor uses.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from daemon.service import devices
from daemon.config import Config
from daemon.errors import SpkdError
from daemon.files import nearest_existing
from daemon.folders import folder_problems

__all__ = ["Report", "check_results", "check_summary", "diagnose"]


@dataclass
class Report:
    ok: bool = True
    checks: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, ok: bool, detail: str, *, fatal: bool = True, warning: bool = False) -> None:
        """One check; `warning`: it passes, but says something the reader must know
        (shown as WARN, not ok)."""
        self.checks.append({"check": name, "ok": ok, "detail": detail, **({"warning": True} if warning else {})})
        if not ok and fatal:
            self.ok = False


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _database_writable(url: str) -> tuple[bool, str]:
    from daemon.errors import UnusableDatabaseError
    from daemon.store.db import backend_name, check_usable, ping, sqlite_path

    backend = backend_name(url)
    if backend != "sqlite":
        try:
            ping(url)
            return True, f"{backend} database reachable"
        except Exception as exc:  # noqa: BLE001 - any reason is the check's answer
            return False, f"cannot connect: {exc}"
    try:
        check_usable(url)
    except UnusableDatabaseError as exc:
        return False, exc.message
    path = sqlite_path(url) or Path("")
    probe_dir = nearest_existing(path.parent)
    if not os.access(probe_dir, os.W_OK):
        return False, f"{probe_dir} is not writable"
    if path.exists():
        try:
            conn = sqlite3.connect(path, timeout=5)
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
            conn.close()
        except sqlite3.Error as exc:
            return False, f"{path}: {exc}"
        return True, f"{path} writable"
    return True, f"{path} will be created"


def diagnose(config: Config, *, inventory: devices.Inventory | None = None) -> Report:
    from daemon.engine.models import TINY_NOTE, check_model_dirs, configured_model_dirs, tiny_roles

    report = Report()
    inventory = inventory or devices.detect()
    report.info.update({
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "torch": inventory.torch_version or _version("torch"),
        "funasr": _version("funasr"),
        "spkd": _version("spkd"),
        "devices": inventory.to_dict(),
        "config": str(config.source) if config.source else None,
    })
    torch_version = inventory.torch_version or _version("torch")
    report.add("torch", torch_version is not None, torch_version or f"not importable ({inventory.probe_error})")
    funasr_version = _version("funasr")
    report.add("funasr", funasr_version is not None, funasr_version or "not installed (pip install funasr)")
    try:
        plans = devices.plan_slots(config.workers, inventory)
        report.info["slots"] = [{"slot": p.slot, "device": p.device, "threads": p.threads, "reason": p.reason,
                                 "fallbacks": list(p.fallbacks), "fallback_from": p.fallback_from} for p in plans]
        fallback = next((p for p in plans if p.fallback_from), None)
        report.add("devices", True, f"{len(plans)} slot(s) on {', '.join(sorted({p.device for p in plans}))}"
                   + (f" ({fallback.reason})" if fallback else ""))
        report.info["cards"] = cards = _cards(plans, inventory)
        for card in cards:
            memory = f", {card['memory_mb']:,} MB" if card["memory_mb"] else ""
            slots = ", ".join(map(str, card["slots"])) or "none (not in workers.device)"
            report.add("devices", True, f"{card['device']} {card['name']}{memory}: slot(s) {slots}")
    except SpkdError as exc:
        report.add("devices", False, str(exc))
    # The same questions `spkd run` asks before it makes the folders (daemon.folders),
    # each missing one really made and removed again: what only an attempt shows too.
    folder_trouble = folder_problems(config, try_create=True)
    for problem in folder_trouble:
        report.add("folders", False, str(problem))
    if not folder_trouble:
        report.add("folders", True, "every configured folder is a writable directory or can be made")
    dirs = configured_model_dirs(config.models)
    problems = check_model_dirs(dirs)
    report.info["models"] = {role: str(path) for role, path in dirs.items()}
    report.add("models", not problems, "; ".join(problems) or "all model directories present")
    tiny = tiny_roles(dirs)
    report.info["tiny_models"] = tiny
    if tiny:
        report.add("models", True, f"{', '.join(tiny)}: {TINY_NOTE}", warning=True)
    ffmpeg = shutil.which("ffmpeg")
    ffprobe = shutil.which("ffprobe")
    report.add("ffmpeg", bool(ffmpeg and ffprobe), f"{ffmpeg}, {ffprobe}" if ffmpeg and ffprobe else
               "ffmpeg/ffprobe not found (apt-get install ffmpeg, or brew install ffmpeg)")
    for name in ("outbox", "state"):
        existing = nearest_existing(getattr(config.paths, name))
        free_mb = shutil.disk_usage(existing).free // 2**20
        report.add(f"disk:{name}", free_mb >= config.daemon.min_free_mb,
                   f"{free_mb} MB free under {existing} (minimum {config.daemon.min_free_mb} MB)")
    check_summary(config, report, os.environ)
    writable, detail = _database_writable(config.database_url)
    report.add("database", writable, detail)
    if writable:
        check_results(config, report)
    return report


def _cards(plans: list[devices.SlotPlan], inventory: devices.Inventory) -> list[dict[str, Any]]:
    """Every GPU of the kinds the plan uses, with the slots bound to it (none for a card
    that an explicit `workers.device` list leaves out)."""
    kinds = {devices.device_kind(p.device) for p in plans} & set(devices.GPU_KINDS)
    return [{"device": f"{kind}:{gpu.index}", "name": gpu.name, "memory_mb": gpu.memory_mb,
             "slots": [p.slot for p in plans if p.device == f"{kind}:{gpu.index}"]}
            for kind in sorted(kinds) for gpu in inventory.gpus(kind)]


def check_summary(config: Config, report: Report, env: Mapping[str, str]) -> None:
    """Where summaries go (daemon/summary_config.py): off, this machine, or another one
    (allowed by summary.allow_remote, and said as a WARN line: transcripts leave the
    machine); a prompt file that cannot be read, an API key variable that is not set."""
    settings = config.summary
    report.info["summary"] = {"endpoint": settings.endpoint, "model": settings.model, "remote": settings.remote}
    if not settings.enabled:
        report.add("summary", True, "off (no summary.endpoint)")
        return
    where = (f"{settings.endpoint} is ANOTHER machine: every summarised transcript is sent there "
             "(summary.allow_remote)" if settings.remote else f"{settings.endpoint}, on this machine (loopback)")
    report.add("summary", True, f"model {settings.model} at {where}", warning=settings.remote)
    if settings.prompt is not None and not os.access(settings.prompt, os.R_OK):
        report.add("summary", False, f"summary.prompt: {settings.prompt} cannot be read", fatal=False)
    if settings.api_key_env and not env.get(settings.api_key_env):
        report.add("summary", True, f"summary.api_key_env: {settings.api_key_env} is not set here; the daemon needs "
                   "it in its environment", warning=True)


def check_results(config: Config, report: Report) -> None:
    """Done jobs whose outputs or segments disagree with their stored transcript (a
    re-render interrupted, a file changed by hand) are re-rendered from it
    (daemon.jobs.results.repair_results), and the report says which. Only on a database
    at spkd's revision: the doctor never migrates."""
    from daemon.jobs import results
    from daemon.store import Store
    from daemon.store.db import current_revision, head_revision, sqlite_path

    try:
        path = sqlite_path(config.database_url)
        if path is not None and not path.exists():
            return  # no database yet: no jobs to check
        revision = current_revision(config.database_url, read_only=path is not None)
        if revision is None:
            return
        if revision != head_revision():
            report.add("results", True, "not checked: the database is not at spkd's revision yet (spkd db upgrade)",
                       fatal=False, warning=True)
            return
        store = Store(config.database_url, host=config.host)
        try:
            repair = results.repair_results(config, store)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - any reason is the check's answer; the daemon may still start
        report.add("results", False, f"could not check the done jobs' outputs: {exc}", fatal=False)
        return
    fixed = sorted({*repair.finished, *repair.repaired})
    if fixed:
        shown = ", ".join(map(str, fixed[:20])) + (" …" if len(fixed) > 20 else "")
        report.add("results", True, f"repaired {len(fixed)} job(s) whose outputs or segments disagreed with their "
                   f"stored transcript (jobs {shown}); {repair.checked} checked", warning=True)
    else:
        report.add("results", True, f"{repair.checked} done job(s): outputs and segments agree with their stored "
                   "transcripts")
