"""Shared bits of the benchmarks: tables, percentiles, targets, machine facts."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SPKD_BENCH_CACHE", REPO / "bench" / ".cache"))
PYTHON = sys.executable


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def parse_utc(value: Any) -> dt.datetime:
    """A naive-UTC time as the store writes it (datetime or SQLite text)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table (readable in a terminal and pasteable into BENCHMARKS.md)."""
    raw = [list(row) for row in rows]
    cells = [[fmt(c) for c in row] for row in raw]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [f"\n### {title}\n",
             "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row, src in zip(cells, raw):
        lines.append("| " + " | ".join(c.ljust(w) if isinstance(v, str) else c.rjust(w)
                                       for c, w, v in zip(row, widths, src)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


@dataclass
class Target:
    name: str
    measured: float
    limit: float
    higher_is_better: bool
    unit: str = ""
    note: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured):
            return False
        return self.measured >= self.limit if self.higher_is_better else self.measured <= self.limit

    def line(self) -> str:
        op = "≥" if self.higher_is_better else "≤"
        verdict = "PASS" if self.passed else "MISS"
        note = f"  ({self.note})" if self.note else ""
        return f"{verdict}  {self.name}: {fmt(self.measured)}{self.unit} (target {op} {fmt(self.limit)}{self.unit}){note}"


@dataclass
class Result:
    """What one benchmark hands back to the runner: ratios and targets to print last."""

    name: str
    ratios: list[tuple[str, float, str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ratio(self, label: str, value: float, explain: str = "") -> None:
        self.ratios.append((label, value, explain))

    def report(self) -> None:
        print(f"\nRatios ({self.name}):", flush=True)
        for label, value, explain in self.ratios:
            print(f"  {label} = {fmt(value)}" + (f"   ({explain})" if explain else ""))
        for target in self.targets:
            print("  " + target.line())
        for note in self.notes:
            print(f"  note: {note}")
        sys.stdout.flush()


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except Exception:  # noqa: BLE001
        mem = "? RAM"
    return (f"{os.cpu_count()} logical CPUs, {cpu_model()}, {mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def header(name: str, quick: bool, what: str) -> float:
    print(f"\n{'=' * 78}\n== bench {name}{' (--quick)' if quick else ''}: {what}\n"
          f"== {utcnow().isoformat(timespec='seconds')}Z, load average {loadavg()}\n{'=' * 78}", flush=True)
    return time.monotonic()


def footer(name: str, started: float) -> None:
    print(f"-- bench {name} took {time.monotonic() - started:.1f} s (load average now {loadavg()})", flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for daemon and helper processes: no stray SPKD_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def ensure_models(real_sizes: bool) -> Path:
    """The tiny (or real-size random) model set under a cache, built once in a child
    process (so the benchmark runner itself never imports torch)."""
    from daemon.engine.models import check_model_dirs, resolve_model_dirs

    if not real_sizes:  # the tests' set, rebuilt when its builders change (trains the speaker model)
        from tests.support.models import cached_tiny_models

        return cached_tiny_models()
    directory = CACHE / "models-real"
    dirs = resolve_model_dirs(directory, asr="paraformer-zh", vad="fsmn-vad", punc="ct-punc-c", spk="cam++")
    if directory.exists() and not check_model_dirs(dirs):
        return directory
    print(f"building {'real-size' if real_sizes else 'tiny'} random models into {directory} …", flush=True)
    started = time.monotonic()
    subprocess.run([PYTHON, "-c", ("import sys; from pathlib import Path; "
                                   "from daemon.engine.tiny_models import build_tiny_models; "
                                   "build_tiny_models(Path(sys.argv[1]), real_sizes=sys.argv[2] == '1')"),
                    str(directory), "1" if real_sizes else "0"],
                   check=True, env=clean_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"  built in {time.monotonic() - started:.1f} s", flush=True)
    return directory


# Product defaults (config.json / README) for everything that shapes timing; the e2e
# harness (tests/support/daemon.py) uses faster test values, which the benchmarks undo.
PRODUCT_TIMING = {
    "watch": {"settle_seconds": 2.0, "rescan_seconds": 30},
    "workers": {"poll_seconds": 0.5, "restart_backoff_max_seconds": 60},
    "jobs": {"lease_seconds": 60, "heartbeat_seconds": 5, "retry_backoff_seconds": 10},
    "daemon": {"shutdown_grace_seconds": 60, "kill_grace_seconds": 10, "reap_seconds": 15},
}


def daemon_config(**sections: dict) -> dict:
    config = {k: dict(v) for k, v in PRODUCT_TIMING.items()}
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config
