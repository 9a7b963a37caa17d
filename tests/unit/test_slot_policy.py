"""The slot restart policy, branch by branch (daemon/service/slot_policy.py): no processes, no
clock, no database. The supervisor's use of it is covered end to end by
tests/e2e/test_durability.py and tests/e2e/test_devices_fallback.py."""

import signal

import pytest

from daemon.errors import ExitCode
from daemon.service.slot_policy import Action, Cause, RestartPolicy, SlotHistory, WorkerExit, decide

POLICY = RestartPolicy(max_boot_failures=3, backoff_max_seconds=8.0, backoff_start_seconds=1.0,
                       stable_run_seconds=60.0)
GPU = SlotHistory(device="cuda:0", fallbacks=("cpu",))
KILLED = -signal.SIGKILL


def booted(code: int, ran: float = 5.0, **kw: bool) -> WorkerExit:
    return WorkerExit(code=code, booted=True, ran_seconds=ran, **kw)


@pytest.mark.parametrize("how", [{"stopping": True}, {"retiring": True}])
@pytest.mark.parametrize("code", [ExitCode.OK, ExitCode.FAILED, KILLED, ExitCode.BOOT_FAILED])
def test_a_stopping_daemon_or_a_retiring_slot_stays_stopped(how: dict[str, bool], code: int) -> None:
    history = SlotHistory(device="cpu", boot_failures=2, crashes=4)
    decision = decide(history, booted(code, **how), POLICY)
    assert (decision.action, decision.cause) == (Action.STOP, Cause.STOPPED)
    assert decision.history == history  # nothing counted
    assert booted(code, **how).clean


def test_a_clean_exit_restarts_at_once_and_forgets_crashes() -> None:
    decision = decide(SlotHistory(device="cpu", boot_failures=1, crashes=3), booted(ExitCode.OK), POLICY)
    assert (decision.action, decision.cause, decision.delay_seconds) == (Action.RESTART, Cause.EXITED, 0.0)
    assert decision.history == SlotHistory(device="cpu", boot_failures=1, crashes=0)
    assert booted(ExitCode.OK).clean


def test_a_worker_the_supervisor_stopped_is_a_crash_even_with_exit_0() -> None:
    ended = booted(ExitCode.OK, killed=True)  # hung: SIGTERM, and it finished politely
    decision = decide(GPU, ended, POLICY)
    assert (decision.action, decision.cause) == (Action.RESTART, Cause.CRASH)
    assert decision.history.crashes == 1 and decision.delay_seconds == 1.0
    assert not ended.clean  # its job's attempt counts


@pytest.mark.parametrize("ended", [
    WorkerExit(code=ExitCode.BOOT_FAILED, booted=False, ran_seconds=2.0),
    WorkerExit(code=KILLED, booted=False, ran_seconds=2.0),  # died while loading the models
    WorkerExit(code=ExitCode.BOOT_FAILED, booted=True, ran_seconds=2.0),  # the code alone says so
])
def test_a_boot_failure_below_the_limit_backs_off(ended: WorkerExit) -> None:
    first = decide(GPU, ended, POLICY)
    assert (first.action, first.cause) == (Action.RESTART, Cause.BOOT_FAILURE)
    assert first.history.boot_failures == 1 and first.delay_seconds == 1.0
    second = decide(first.history, ended, POLICY)
    assert second.history.boot_failures == 2 and second.delay_seconds == 2.0
    assert second.history.device == "cuda:0"


def test_the_last_boot_failure_falls_back_to_the_next_device() -> None:
    history = SlotHistory(device="cuda:0", fallbacks=("rocm:0", "cpu"), boot_failures=2, crashes=1)
    decision = decide(history, WorkerExit(code=ExitCode.BOOT_FAILED, booted=False, ran_seconds=1.0), POLICY)
    assert (decision.action, decision.cause, decision.delay_seconds) == (Action.FALL_BACK, Cause.BOOT_FAILURE, 0.0)
    assert decision.history == SlotHistory(device="rocm:0", fallbacks=("cpu",), boot_failures=0, crashes=1)


def test_the_last_boot_failure_without_fallbacks_fails_the_slot() -> None:
    history = SlotHistory(device="cpu", boot_failures=2)
    decision = decide(history, WorkerExit(code=ExitCode.BOOT_FAILED, booted=False, ran_seconds=1.0), POLICY)
    assert (decision.action, decision.cause) == (Action.FAIL, Cause.BOOT_FAILURE)
    assert decision.history.boot_failures == 3


def test_falling_back_along_the_whole_chain_ends_failed() -> None:
    history, actions = GPU, []
    for _ in range(2 * POLICY.max_boot_failures):
        decision = decide(history, WorkerExit(code=ExitCode.BOOT_FAILED, booted=False, ran_seconds=1.0), POLICY)
        history = decision.history
        actions.append(decision.action)
        if decision.action is Action.FAIL:
            break
    assert actions == [Action.RESTART, Action.RESTART, Action.FALL_BACK, Action.RESTART, Action.RESTART,
                       Action.FAIL]
    assert history.device == "cpu" and history.fallbacks == ()


@pytest.mark.parametrize("code", [ExitCode.FAILED, KILLED, ExitCode.LOST_PARENT])
def test_crashes_in_a_row_back_off_exponentially_up_to_the_cap(code: int) -> None:
    history, delays = GPU, []
    for _ in range(6):
        decision = decide(history, booted(code, ran=3.0), POLICY)
        assert (decision.action, decision.cause) == (Action.RESTART, Cause.CRASH)
        history = decision.history
        delays.append(decision.delay_seconds)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert history.crashes == 6 and history.device == "cuda:0"  # crashes never move the slot
    assert not booted(code).clean


def test_a_crash_after_a_long_run_starts_the_count_again() -> None:
    decision = decide(SlotHistory(device="cpu", crashes=5), booted(KILLED, ran=POLICY.stable_run_seconds), POLICY)
    assert decision.history.crashes == 1 and decision.delay_seconds == 1.0


def test_backoff_seconds() -> None:
    assert [POLICY.backoff_seconds(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert RestartPolicy(backoff_start_seconds=0.5).backoff_seconds(1) == 0.5


@pytest.mark.parametrize("code", [ExitCode.BOOT_FAILED, ExitCode.FAILED, KILLED])
def test_a_boot_that_fails_while_the_disk_is_full_spends_no_boot_attempt(code: int) -> None:
    history = SlotHistory(device="cuda:0", fallbacks=("cpu",), boot_failures=POLICY.max_boot_failures - 1)
    ended = WorkerExit(code=code, booted=False, ran_seconds=1.0, disk_low=True)
    decision = decide(history, ended, POLICY)
    assert (decision.action, decision.cause) == (Action.RESTART, Cause.BOOT_FAILURE)
    assert decision.history == history  # no fallback off the GPU, nothing counted
    assert decision.delay_seconds == POLICY.backoff_seconds(POLICY.max_boot_failures)
