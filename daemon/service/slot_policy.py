"""What becomes of a worker slot when its worker exits: a pure function.

`decide(history, exit, policy)` looks at the slot's history (its device, the devices
left to fall back to, boot failures and crashes so far) and at how the worker ended
(exit code, whether it had booted, how long it ran, whether the supervisor stopped it),
and returns a `Decision`: restart after N seconds, fall back to the next device, mark
the slot failed, or leave it stopped. It reads no clock and touches no process or
database, so every branch is a unit test (tests/unit/test_slot_policy.py), the way
gunicorn's arbiter is tested; the supervisor only applies the decision.

The rules:

* The daemon is stopping, or the pool shrank and this slot goes: stopped.
* A clean exit (ExitCode.OK, not stopped by the supervisor: recycled after
  `workers.max_jobs` or `workers.max_rss_mb`): restart at once, crashes forgotten.
* A worker that never reported ready while the disk guard found the disk too full
  (its models may have failed to load for want of space): restart after a backoff,
  without counting a boot failure, so a full disk never moves a slot off its device.
* A worker that never reported ready (ExitCode.BOOT_FAILED, or died while booting):
  a boot failure. Below `workers.max_boot_failures` restart after an exponential
  backoff; at the limit fall back to the next device in the chain (boot failures
  start again from zero there), or, with none left, mark the slot failed.
* Any other exit after booting is a crash: restart after an exponential backoff over
  the crashes in a row; a worker that ran `stable_run_seconds` or longer first resets
  that count, so a crash a day never backs off.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from daemon.errors import ExitCode

__all__ = ["Action", "Cause", "Decision", "RestartPolicy", "SlotHistory", "WorkerExit", "decide"]


@dataclass(frozen=True)
class SlotHistory:
    device: str
    fallbacks: tuple[str, ...] = ()  # where the slot goes when `device` cannot boot, in order
    boot_failures: int = 0
    crashes: int = 0  # in a row, each within stable_run_seconds of its start


@dataclass(frozen=True)
class WorkerExit:
    code: int  # the process's exit code; negative: killed by that signal
    booted: bool  # the worker reported ready before it ended
    ran_seconds: float
    killed: bool = False  # the supervisor stopped it (hung, past its time limit, boot too slow)
    stopping: bool = False  # the daemon is shutting down
    retiring: bool = False  # the pool shrank (SIGHUP) and this slot goes
    disk_low: bool = False  # the disk guard found the outbox or state disk too full meanwhile

    @property
    def clean(self) -> bool:
        """Stopped as asked or recycled: the job it held goes back without counting an attempt."""
        return self.stopping or self.retiring or (self.code == ExitCode.OK and not self.killed)


@dataclass(frozen=True)
class RestartPolicy:
    max_boot_failures: int = 5
    backoff_max_seconds: float = 60.0
    backoff_start_seconds: float = 1.0
    stable_run_seconds: float = 60.0

    def backoff_seconds(self, failures: int) -> float:
        """1 s, 2 s, 4 s, … for the 1st, 2nd, 3rd failure in a row, at most backoff_max_seconds."""
        return min(self.backoff_max_seconds, self.backoff_start_seconds * 2 ** max(0, failures - 1))


class Action(enum.Enum):
    RESTART = "restart"  # spawn again after delay_seconds
    FALL_BACK = "fall back"  # spawn at once on history.device, the next device of the chain
    FAIL = "fail"  # never spawn this slot again
    STOP = "stop"  # leave it stopped


class Cause(enum.Enum):
    STOPPED = "stopped"  # shutdown, or the slot retires
    EXITED = "exited"  # a clean exit
    BOOT_FAILURE = "boot failure"
    CRASH = "crash"


@dataclass(frozen=True)
class Decision:
    action: Action
    cause: Cause
    history: SlotHistory  # the slot's history after this exit
    delay_seconds: float = 0.0


def decide(history: SlotHistory, exit: WorkerExit, policy: RestartPolicy) -> Decision:
    if exit.stopping or exit.retiring:
        return Decision(Action.STOP, Cause.STOPPED, history)
    if exit.code == ExitCode.OK and not exit.killed:
        return Decision(Action.RESTART, Cause.EXITED, dataclasses.replace(history, crashes=0))
    if (exit.code == ExitCode.BOOT_FAILED or not exit.booted) and exit.disk_low:
        return Decision(Action.RESTART, Cause.BOOT_FAILURE, history,
                        delay_seconds=policy.backoff_seconds(history.boot_failures + 1))
    if exit.code == ExitCode.BOOT_FAILED or not exit.booted:
        failures = history.boot_failures + 1
        if failures < policy.max_boot_failures:
            return Decision(Action.RESTART, Cause.BOOT_FAILURE, dataclasses.replace(history, boot_failures=failures),
                            delay_seconds=policy.backoff_seconds(failures))
        if history.fallbacks:
            moved = dataclasses.replace(history, device=history.fallbacks[0], fallbacks=history.fallbacks[1:],
                                        boot_failures=0)
            return Decision(Action.FALL_BACK, Cause.BOOT_FAILURE, moved)
        return Decision(Action.FAIL, Cause.BOOT_FAILURE, dataclasses.replace(history, boot_failures=failures))
    crashes = 1 if exit.ran_seconds >= policy.stable_run_seconds else history.crashes + 1
    return Decision(Action.RESTART, Cause.CRASH, dataclasses.replace(history, crashes=crashes),
                    delay_seconds=policy.backoff_seconds(crashes))
