"""The supervisor's children and the process plumbing around them: what it knows of each
worker slot and of the dashboard process, how it starts them, signals them and tells
its own workers from strangers, the signal inbox its main loop drains, and the lock
that keeps one supervisor per state folder.

Nothing here decides anything: what happens after a child exits is
daemon.service.slot_policy's decision, applied by daemon.service.supervisor.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.jobs.worker import WorkerSpec, run_worker
from daemon.service import devices
from daemon.service.slot_policy import SlotHistory

__all__ = ["SignalInbox", "Slot", "WebChild", "describe_exit", "is_spkd_worker", "kill", "lock_state_folder",
           "start_web_process", "start_worker"]


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"killed ({name}), possibly out of memory"
        return f"killed by {name}"
    return f"exited with code {code}"


@dataclass
class Slot:
    index: int
    plan: devices.SlotPlan
    history: SlotHistory  # device, fallbacks left, boot failures and crashes (daemon.service.slot_policy)
    fallback_from: str | None = None
    process: BaseProcess | None = None
    started_at: float = 0.0
    next_start_at: float = 0.0
    failed: bool = False
    retiring: bool = False  # stop after the current job and do not respawn (pool shrank)
    kill_reason: str | None = None
    term_sent_at: float | None = None
    last_error: str | None = None

    @classmethod
    def planned(cls, plan: devices.SlotPlan) -> "Slot":
        return cls(index=plan.slot, plan=plan, history=SlotHistory(device=plan.device, fallbacks=plan.fallbacks),
                   fallback_from=plan.fallback_from)

    @property
    def device(self) -> str:
        return self.history.device

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


@dataclass
class WebChild:
    """The dashboard process, supervised like a slot (its history: daemon.service.slot_policy)."""

    listen: str
    history: SlotHistory = field(default_factory=lambda: SlotHistory(device="web"))
    process: BaseProcess | None = None
    ready: Any = None  # a multiprocessing Event the child sets once it listens
    started_at: float = 0.0
    next_start_at: float = 0.0
    failed: bool = False
    retiring: bool = False  # stopped for a reload: started again with the new config

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class SignalInbox:
    """Filled by signal handlers, drained by the main loop. A handler only records the
    signal and writes a byte to a pipe the loop waits on (with the children's
    sentinels), so that the loop wakes at once and acts outside the handler."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) -> None:
        for sig in signals:
            signal.signal(sig, self._record)

    def _record(self, signum: int, _frame: Any) -> None:
        self.pending.append(signum)
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass

    def next(self) -> int | None:
        """The oldest signal not yet acted on (None when there is none); empties the
        wake-up pipe first, so that a signal arriving later wakes the loop again."""
        _drain(self.wake_fd)
        return self.pending.pop(0) if self.pending else None


def lock_state_folder(state: Path) -> int:
    """An exclusive lock on `state`/spkd.lock, held for the life of the process (the
    open descriptor), with this pid written in it. Raises ConfigError when another
    spkd holds it."""
    import fcntl

    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / "spkd.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"another spkd is already running with the state folder {state}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def start_worker(ctx: SpawnContext, config: Config, slot: Slot, *, engine_factory: str | None,
                 extra_env: dict[str, str]) -> None:
    """A worker process for `slot` on its current device (daemon.jobs.worker.run_worker)."""
    threads = slot.plan.threads
    spec = WorkerSpec(slot=slot.index, device=slot.device, env=devices.worker_env(slot.device, threads),
                      threads=threads, fallback_from=slot.fallback_from, fallbacks=slot.history.fallbacks,
                      engine_factory=engine_factory, extra_env=extra_env)
    process = ctx.Process(target=run_worker, args=(config, spec), name=f"spkd-worker-{slot.index}")
    process.start()
    slot.process, slot.started_at = process, time.monotonic()
    slot.kill_reason, slot.term_sent_at = None, None
    logger.info("slot {} spawned worker pid {} on {}", slot.index, process.pid, slot.device)


def start_web_process(ctx: SpawnContext, config: Config, web: WebChild) -> None:
    """The dashboard process (daemon.web.server.run_child), which sets `web.ready` once it listens."""
    from daemon.web.server import run_child

    web.ready = ctx.Event()
    web.process = ctx.Process(target=run_child, args=(config, web.listen, web.ready), name="spkd-web")
    web.process.start()
    web.started_at = time.monotonic()
    logger.info("dashboard process pid {} for {}", web.process.pid, web.listen)


def kill(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def is_spkd_worker(pid: int) -> bool:
    """Guard against pid reuse before killing a process we did not start."""
    try:
        import psutil

        cmdline = " ".join(psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001
        return False
    return "multiprocessing" in cmdline and "spawn_main" in cmdline


def _drain(fd: int) -> None:
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass
