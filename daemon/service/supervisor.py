"""The supervisor: the daemon's main process. It never imports torch or funasr.

Shaped after gunicorn's arbiter: signal handlers only record the signal and wake
the main loop; the loop reaps children, puts a dead worker's job back at once,
restarts slots with exponential backoff, kills workers that hang, and gives up
on a slot that cannot boot (falling back to the next device where configured)
instead of respawning it forever. What happens to a slot whose worker exited is
decided by the pure function daemon.service.slot_policy.decide; this module applies it.
The children themselves (slots, the dashboard process, the signal inbox, the state
folder's lock) and the process plumbing are in daemon.service.children.

With `web.listen` set it also keeps the dashboard (daemon.web.server.run_child) running
as one more child process, restarted by the same policy: a child that never got to
listen counts as a boot failure, one that dies later as a crash.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from typing import Any

from loguru import logger

from daemon.service import devices
from daemon.service.children import (
    SignalInbox,
    Slot,
    WebChild,
    describe_exit,
    is_spkd_worker,
    kill,
    lock_state_folder,
    start_web_process,
    start_worker,
)
from daemon.jobs import diskguard
from daemon.service import notify
from daemon.service import retention
from daemon.service import manager as service
from daemon.jobs import results, spool
from daemon.config import Config, load
from daemon.folders import prepare_folders
from daemon.store.db import check_usable, check_writable, display_url, migrate, translate_unusable
from daemon.errors import ConfigError, DatabaseUnavailableError, ExitCode, SpkdError
from daemon.logs import DATABASE_TROUBLE_SECONDS, Throttle
from daemon.service.slot_policy import Action, Cause, RestartPolicy, SlotHistory, WorkerExit, decide
from daemon.store import Job, Store, WorkerRow, utcnow
from daemon.intake import voice_folder
from daemon.intake.watcher import Watcher
from daemon.jobs.worker import ENGINE_FACTORY_ENV

__all__ = ["Supervisor"]

LOOP_SECONDS = 0.5
# A worker that ran this long before dying resets its slot's crash backoff.
STABLE_RUN_SECONDS = 60.0


class Supervisor:
    def __init__(self, config: Config, *, engine_factory: str | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.engine_factory = engine_factory or os.environ.get(ENGINE_FACTORY_ENV)
        self.extra_env = dict(extra_env or {})
        self.ctx = multiprocessing.get_context("spawn")
        self.store: Store | None = None
        self.watcher: Watcher | None = None
        # the voices folder's file hashes by (size, mtime), from one look to the next
        self._voice_digests: dict[str, tuple[tuple[int, int], str]] = {}
        self.scheduler: Any = None
        self.slots: list[Slot] = []
        self.web: WebChild | None = None
        self.inventory: devices.Inventory | None = None
        self.stopping = False
        self.stop_deadline: float | None = None
        self.notifier: notify.Notifier | None = None
        self.immediate = False
        self.started_monotonic = time.monotonic()
        self._signals = SignalInbox()
        self._lock_fd: int | None = None
        # Trouble that lasts (a database out of reach, a full disk holding spawns back) is said once a while.
        self._trouble = Throttle(DATABASE_TROUBLE_SECONDS)

    # --- signals -----------------------------------------------------------------------

    def _handle_signals(self) -> None:
        """The signals the handlers recorded (daemon.service.children.SignalInbox), acted on here."""
        while (signum := self._signals.next()) is not None:
            if signum == signal.SIGHUP:
                self.reload()
            elif signum == signal.SIGINT and self.stopping:
                logger.warning("second interrupt: stopping now; running jobs go back to the queue")
                self.immediate = True
            elif not self.stopping:
                self.begin_stop(signal.Signals(signum).name)

    # --- start ---------------------------------------------------------------------------

    def start(self) -> None:
        config = self.config
        prepare_folders(config)  # a folder that cannot be made is a ConfigError naming its key
        self._lock_fd = lock_state_folder(config.paths.state)
        # A corrupt database (or a folder in its place) stops the start with one clear
        # message and exit code 2, before any worker is spawned to crash on it.
        check_usable(config.database_url)
        check_writable(config.database_url)  # read-only: exit 2, not "try again"
        with translate_unusable(config.database_url):
            migrate(config.database_url)
        self.store = Store(config.database_url, host=config.host)
        logger.info("host {}: roles {}; database {}", self.store.host, ", ".join(config.daemon.roles),
                    display_url(config.database_url))
        diskguard.update(config)  # also clears a pause file left by the last run
        self.notifier = notify.Notifier(config, host=self.store.host)
        self.notifier.prime(self.store)
        service.write_runtime(config, pid=os.getpid())
        self.recover()
        self.inventory = devices.detect()
        plans = self._plan(config)
        self.slots = [Slot.planned(p) for p in plans]
        if plans and devices.device_kind(plans[0].device) in ("cpu", "mps") and len(plans) < config.workers.count:
            logger.warning("workers.count is {}, but this machine has {} cores: running {} worker(s)",
                           config.workers.count, self.inventory.cpu_cores, len(plans))
        for slot in self.slots:
            logger.info("slot {} -> {} ({}; {} threads)", slot.index, slot.device, slot.plan.reason,
                        slot.plan.threads)
        if not self.slots:
            logger.info("no worker slots on this host (daemon.roles has no \"workers\")")
        self.store.forget_workers_above(len(self.slots))
        if "watcher" in config.daemon.roles:
            self.watcher = Watcher(config, self.store)
            self.watcher.recover_spool()
            self.watcher.start()
        else:
            logger.info("not watching the inbox on this host (daemon.roles has no \"watcher\")")
        self._start_scheduler()
        if self.watcher is not None:
            self.scheduler.add_job(self._sync_voices, id="voices-now")  # the folder at once, beside the start
        # Segments of jobs finished before they existed, once, beside the work: after a
        # long history this reads thousands of stored transcripts, and start-up (READY)
        # must not wait for it.
        self.scheduler.add_job(self._backfill_segments, id="backfill")
        for slot in self.slots:
            self.spawn(slot)
        self.start_web()

    def _plan(self, config: Config) -> list[devices.SlotPlan]:
        """This host's worker slots: none unless it has the `workers` role."""
        if "workers" not in config.daemon.roles:
            return []
        assert self.inventory is not None
        return devices.plan_slots(config.workers, self.inventory)

    def recover(self) -> None:
        """After a crash of the supervisor (or the machine): jobs whose worker is gone
        go back to the queue; spool files of finished jobs are moved on."""
        assert self.store is not None
        for outcome in self.store.recover(is_alive=service.pid_alive,
                                          reason="recovered at start: its worker is gone"):
            logger.warning("job {} requeued at start: {} (worker gone)", outcome.job.id, outcome.job.source_name)
            if outcome.state == "failed":
                spool.retire_failed(self.config, outcome.job)
        self.settle_spool()

    def settle_spool(self) -> None:
        """Spool files of jobs that already ended (a worker died between recording the
        result and moving the source on; `spkd cancel`, `retry` or `remove` stopped
        between the store and the file) are moved to archive/ or failed/ now. Only
        this host's jobs: in a spool shared by several hosts, another host's worker
        may be moving its finished job's file right now."""
        assert self.store is not None
        paths = self.config.paths
        spooled = {str(p): p for p in spool.spooled_files(paths.spool)}
        for spool_path, job in self.store.jobs_by_spool_path(spooled).items():
            if job.host not in (None, self.store.host):
                continue
            try:
                if job.state == "done":
                    results.retire_done(self.config, self.store, job.id, spool_path=spooled[spool_path],
                                        source_name=job.source_name)
                    logger.info("job {}: archived its source after its worker died", job.id)
                elif job.state in ("failed", "cancelled"):
                    spool.retire_failed(self.config, job)
            except OSError as exc:  # one file that cannot be moved must not stop the start (or the loop)
                logger.error("job {}: cannot move its source {} out of the spool: {}", job.id, spool_path, exc)

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        config = self.config
        scheduler = BackgroundScheduler(daemon=True, job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(self._rescan, "interval", seconds=config.watch.rescan_seconds, id="rescan")
        scheduler.add_job(self._sync_voices, "interval", seconds=config.watch.rescan_seconds, id="voices")
        scheduler.add_job(self.reap_leases, "interval", seconds=config.daemon.reap_seconds, id="reap")
        scheduler.add_job(self._checkpoint, "interval", seconds=config.daemon.wal_checkpoint_seconds, id="wal")
        scheduler.add_job(lambda: retention.sweep(self.config, self.store), "interval",
                          seconds=config.retention.sweep_seconds, id="retention")
        scheduler.add_job(lambda: diskguard.update(self.config), "interval",
                          seconds=config.daemon.disk_check_seconds, id="diskguard")
        scheduler.add_job(lambda: self.notifier.poll(self.store), "interval", seconds=notify.POLL_SECONDS,
                          id="notify")
        scheduler.start()
        self.scheduler = scheduler

    def _backfill_segments(self) -> None:
        try:
            results.backfill_segments(self.config, self.store)
        except Exception as exc:  # noqa: BLE001 - a busy or unreachable database: the next start tries again
            logger.warning("search: filling earlier jobs' segments failed (tried again at the next start): {}", exc)
        try:  # migration 0010's index for 1-2 character queries, in short batches beside the work
            if self.store.backfill_search_index():
                logger.info("search: the index for 1- and 2-character queries is whole")
        except Exception as exc:  # noqa: BLE001 - as above: the next start goes on where it stopped
            logger.warning("search: building the index for short queries failed (the next start goes on): {}", exc)

    def _rescan(self) -> None:
        if self.watcher is not None:
            self.watcher.scan()
            try:
                self.watcher.recover_spool()
            except DatabaseUnavailableError as exc:
                # Locked, out of reach or on a full disk: the spooled files wait for the next rescan.
                self._trouble.log("rescan", "rescan: jobs of spooled files cannot be recorded now ({}); the next "
                                  "rescan tries again", exc)

    def _sync_voices(self) -> None:
        """The library follows paths.voices (daemon.intake.voice_folder.sync_folder): on the
        rescan's clock, on the watcher's host. A failure is logged and tried at the next
        rescan."""
        if self.watcher is None or self.store is None:
            return
        try:
            voice_folder.sync_folder(self.config, self.store, digests=self._voice_digests)
        except Exception as exc:  # noqa: BLE001 - one bad look at the folder must not stop the scheduler
            self.watcher.log_repeated("voices-sync", "voices: looking at {} failed ({}); the next rescan tries "
                                      "again", self.config.paths.voices, exc)

    def _checkpoint(self) -> None:
        if self.store is not None:
            self.store.checkpoint()

    # --- workers ---------------------------------------------------------------------

    def spawn(self, slot: Slot) -> None:
        start_worker(self.ctx, self.config, slot, engine_factory=self.engine_factory, extra_env=self.extra_env)

    # --- the dashboard -----------------------------------------------------------------

    def start_web(self) -> None:
        """Start the dashboard child when `web.listen` is set, unless the address needs
        a token the config lacks: then the daemon runs without it, saying why."""
        listen = self.config.web.listen
        self.web = None
        if listen is None:
            return
        from daemon.web.server import refusal

        reason = refusal(self.config, listen)
        if reason is not None:
            logger.error("web: not starting the dashboard: {}", reason)
            return
        self.web = WebChild(listen=listen)
        self.spawn_web()

    def spawn_web(self) -> None:
        assert self.web is not None
        start_web_process(self.ctx, self.config, self.web)

    def on_web_exit(self, code: int) -> None:
        web = self.web
        assert web is not None
        ended = WorkerExit(code=code, booted=bool(web.ready is not None and web.ready.is_set()),
                           ran_seconds=time.monotonic() - web.started_at, stopping=self.stopping,
                           retiring=web.retiring)
        pid = web.pid
        web.process = None
        decision = decide(web.history, ended, self._restart_policy())
        web.history = decision.history
        if decision.action is Action.STOP:
            if web.retiring and not self.stopping:
                self.start_web()  # a reload: the new configuration's dashboard, if any
            return
        if decision.action in (Action.FAIL, Action.FALL_BACK):
            web.failed = True
            logger.error("dashboard could not start on {} ({} tries; see the errors above); running without it",
                         web.listen, web.history.boot_failures)
            return
        if decision.cause is Cause.EXITED:
            logger.info("dashboard process {} exited; starting it again", pid)
        else:
            logger.error("dashboard process {} {} after {:.0f} s; restarting in {:.0f} s", pid, describe_exit(code),
                         ended.ran_seconds, decision.delay_seconds)
        web.next_start_at = time.monotonic() + decision.delay_seconds

    def _worker_state(self, slot: Slot) -> WorkerRow | None:
        assert self.store is not None
        for row in self.store.worker_rows(host=self.store.host):
            if row.slot == slot.index:
                return row
        return None

    def reap_children(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.exitcode is None:
                continue
            process.join(timeout=0)
            self.on_exit(slot, process.exitcode)
        web = self.web
        if web is not None and web.process is not None and web.process.exitcode is not None:
            web.process.join(timeout=0)
            self.on_web_exit(web.process.exitcode)

    def _restart_policy(self) -> RestartPolicy:
        workers = self.config.workers
        return RestartPolicy(max_boot_failures=workers.max_boot_failures,
                             backoff_max_seconds=workers.restart_backoff_max_seconds,
                             stable_run_seconds=STABLE_RUN_SECONDS)

    def on_exit(self, slot: Slot, code: int) -> None:
        """A slot's worker ended: take its job back, then apply daemon.service.slot_policy's decision."""
        assert self.store is not None
        pid = slot.pid or -1
        row = self._worker_state(slot)
        reason = slot.kill_reason or describe_exit(code)
        ended = WorkerExit(code=code, ran_seconds=time.monotonic() - slot.started_at,
                           booted=row is not None and row.pid == pid
                           and row.state in ("ready", "busy", "stopped"),
                           killed=slot.kill_reason is not None, stopping=self.stopping, retiring=slot.retiring,
                           disk_low=diskguard.claim_blocker(self.config) is not None)
        for outcome in self.store.release(pid=pid, reason=f"worker {pid} {reason}",
                                          counts_as_attempt=not ended.clean, exit_code=code):
            self._after_take_back(outcome.job, outcome.state, reason)
        if code != ExitCode.OK:
            self.settle_spool()
        slot.process = None
        previous = slot.history
        decision = decide(previous, ended, self._restart_policy())
        slot.history = decision.history
        now = time.monotonic()
        if decision.action is Action.STOP:
            self.store.worker_update(slot.index, state="stopped", pid=None, current_job_id=None)
            return
        if decision.cause is Cause.EXITED:
            logger.info("slot {} worker {} exited normally after {:.0f} s; restarting", slot.index, pid,
                        ended.ran_seconds)
        elif decision.cause is Cause.BOOT_FAILURE and ended.disk_low:
            slot.last_error = (row.last_error if row is not None else None) or reason
            logger.warning("slot {} did not boot on {} while the disk is too full ({}); not counted as a boot "
                           "failure", slot.index, previous.device, slot.last_error)
        elif decision.cause is Cause.BOOT_FAILURE:
            slot.last_error = (row.last_error if row is not None else None) or reason
            logger.error("slot {} failed to boot on {} ({}/{}): {}", slot.index, previous.device,
                         previous.boot_failures + 1, self.config.workers.max_boot_failures, slot.last_error)
        else:
            logger.error("slot {} worker {} on {} {} after {:.0f} s; restarting in {:.0f} s", slot.index, pid,
                         slot.device, reason, ended.ran_seconds, decision.delay_seconds)
            self.store.worker_update(slot.index, state="booting", pid=None, current_job_id=None,
                                     last_error=f"worker {pid} {reason}")
        if decision.action is Action.FALL_BACK:
            slot.fallback_from = slot.fallback_from or previous.device
            logger.warning("slot {} falls back from {} to {}: {}", slot.index, previous.device, slot.device,
                           slot.last_error)
            self.store.worker_update(slot.index, state="booting", device=slot.device, fallback_from=previous.device,
                                     last_error=f"fell back from {previous.device}: {slot.last_error}")
        elif decision.action is Action.FAIL:
            slot.failed = True
            logger.error("slot {} failed: {} boot failures on {}; not restarting it. Last error: {}", slot.index,
                         slot.history.boot_failures, slot.device, slot.last_error)
            self.store.worker_update(slot.index, state="failed", pid=None, last_error=slot.last_error)
            return
        slot.next_start_at = now + decision.delay_seconds

    def _after_take_back(self, job: Job, state: str, reason: str) -> None:
        if state == "failed":
            spool.retire_failed(self.config, job)
            logger.error("job {} failed: {} (worker {}; attempts spent)", job.id, job.source_name, reason)
        else:
            logger.warning("job {} requeued: {} (worker {})", job.id, job.source_name, reason)

    def spawn_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        due = [slot for slot in self.slots
               if slot.process is None and not slot.failed and not slot.retiring and now >= slot.next_start_at]
        web = self.web
        if web is not None and web.process is None and not web.failed and now >= web.next_start_at:
            self.spawn_web()  # the dashboard shows the full disk; it writes nothing there itself
        if not due:
            return
        # A worker booting on a full disk could only fail (and spend its slot's boot
        # attempts): wait for space, as the claims do.
        low = diskguard.claim_blocker(self.config)
        if low is not None:
            self._trouble.log("spawn-held", "not starting {} worker(s) while claiming is paused: {}", len(due), low)
            return
        for slot in due:
            self.spawn(slot)

    def check_health(self) -> None:
        """Hung workers (no heartbeat within the lease), jobs past their time limit, and
        boots that take too long: SIGTERM, then SIGKILL after the grace period."""
        assert self.store is not None
        now_wall = utcnow()
        now = time.monotonic()
        by_pid = {slot.pid: slot for slot in self.slots if slot.alive()}
        jobs_cfg = self.config.jobs
        # A full state disk refuses the heartbeat's write, not the worker: a live worker is
        # not hung for a lease it could not renew (its time limit still holds).
        disk_full = diskguard.claim_blocker(self.config)
        for job in self.store.running_jobs(host=self.store.host):
            slot = by_pid.get(job.pid)
            if slot is None or slot.kill_reason:
                continue
            lease, started = job.lease_expires_at, job.started_at
            if lease is not None and lease < now_wall and disk_full:
                self._trouble.log(("lease", job.id), "job {}: no heartbeat recorded, but claiming is paused ({}); "
                                  "its worker keeps it", job.id, disk_full)
            elif lease is not None and lease < now_wall:
                self.terminate(slot, f"hung: no heartbeat for {jobs_cfg.lease_seconds:.0f} s on job {job.id}")
                continue
            limit = jobs_cfg.timeout_base_seconds + jobs_cfg.timeout_factor * (job.audio_seconds or 0.0)
            if started is not None and (now_wall - started).total_seconds() > limit:
                self.terminate(slot, f"timed out: job {job.id} ran past its limit of {limit:.0f} s")
        for slot in self.slots:
            if not slot.alive():
                continue
            if slot.term_sent_at is not None and now - slot.term_sent_at > self.config.daemon.kill_grace_seconds:
                logger.warning("slot {} worker {} did not stop; SIGKILL", slot.index, slot.pid)
                kill(slot.pid, signal.SIGKILL)
                slot.term_sent_at = now + 3600  # once
            elif slot.kill_reason is None and now - slot.started_at > self.config.workers.boot_timeout_seconds:
                row = self._worker_state(slot)
                if row is not None and row.state == "booting" and row.pid == slot.pid:
                    self.terminate(slot, f"boot took longer than {self.config.workers.boot_timeout_seconds:.0f} s")

    def terminate(self, slot: Slot, reason: str) -> None:
        logger.error("slot {} worker {}: {}; stopping it", slot.index, slot.pid, reason)
        slot.kill_reason = reason
        slot.term_sent_at = time.monotonic()
        kill(slot.pid, signal.SIGTERM)

    def reap_leases(self) -> None:
        """Backstop for what process exits don't tell: a running job whose lease expired
        and whose holder is not one of our live workers (an orphan of an earlier
        supervisor, or a host that stopped heartbeating) goes back to the queue."""
        if self.store is None:
            return
        ours = {slot.pid for slot in self.slots if slot.alive()}
        for job in self.store.expired_leases():
            if job.host == self.store.host:
                if job.pid in ours:
                    continue  # the main loop's health check owns our own workers
                if job.pid is not None and service.pid_alive(job.pid):
                    if not is_spkd_worker(job.pid):
                        continue
                    logger.warning("job {}: orphaned worker {} stopped heartbeating; killing it", job.id, job.pid)
                    kill(job.pid, signal.SIGKILL)
                    continue  # take it back next round, once the process is gone
            outcome = self.store.reap(job.id, reason=f"lease expired (holder {job.host}/{job.pid})")
            if outcome is not None:
                self._after_take_back(outcome.job, outcome.state, "lease expired")

    # --- reload and stop -------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: load the config again; on success restart the watcher and roll every
        worker gracefully (each finishes its job first), resizing the pool."""
        if self.config.source is None:
            logger.warning("SIGHUP: no config file to reload")
            return
        try:
            new = load(self.config.source)
            prepare_folders(new)
        except (ConfigError, SpkdError) as exc:
            logger.error("SIGHUP: keeping the old configuration: {}", exc)
            return
        assert self.inventory is not None and self.store is not None
        try:
            plans = self._plan(new)
        except SpkdError as exc:
            logger.error("SIGHUP: keeping the old configuration: {}", exc)
            return
        logger.info("SIGHUP: configuration reloaded from {}; {} slot(s)", new.source, len(plans))
        self.config = new
        if self.notifier is not None:
            old = self.notifier
            old.close(2)
            self.notifier = notify.Notifier(new, host=self.store.host, start_after=old.last_event_id)
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if "watcher" in new.daemon.roles:
            self.watcher = Watcher(new, self.store)
            self.watcher.start()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        self._start_scheduler()
        if self.web is not None and self.web.alive():
            self.web.retiring = True
            kill(self.web.pid, signal.SIGTERM)  # on_web_exit starts the new config's dashboard
        elif self.web is None or self.web.failed:
            self.start_web()
        for slot in self.slots[len(plans):]:
            slot.retiring = True
            if slot.alive():
                kill(slot.pid, signal.SIGTERM)
        for plan in plans:
            if plan.slot < len(self.slots):
                slot = self.slots[plan.slot]
                slot.plan = plan
                slot.history = SlotHistory(device=plan.device, fallbacks=plan.fallbacks, crashes=slot.history.crashes)
                slot.failed, slot.retiring = False, False
                if slot.alive():
                    kill(slot.pid, signal.SIGTERM)  # finishes its job, then is respawned with the new config
            else:
                self.slots.append(Slot.planned(plan))
        self.store.forget_workers_above(len(plans))

    def begin_stop(self, why: str) -> None:
        grace = self.config.daemon.shutdown_grace_seconds
        logger.info("{}: stopping; running jobs get {:.0f} s to finish", why, grace)
        service.notify("STOPPING=1")
        if self.notifier is not None:
            self.notifier.daemon_event("stop", {"pid": os.getpid(), "reason": why})
        self.stopping = True
        self.stop_deadline = time.monotonic() + grace
        if self.watcher is not None:
            self.watcher.stop()
        for slot in self.slots:
            if slot.alive():
                kill(slot.pid, signal.SIGTERM)
        if self.web is not None and self.web.alive():
            kill(self.web.pid, signal.SIGTERM)

    def _finish_stop(self) -> bool:
        """True once every worker is gone."""
        if self.immediate or (self.stop_deadline is not None and time.monotonic() > self.stop_deadline):
            for slot in self.slots:
                if slot.alive():
                    slot.kill_reason = "stopped at shutdown"
                    kill(slot.pid, signal.SIGKILL)
            if self.web is not None and self.web.alive():
                kill(self.web.pid, signal.SIGKILL)
            for slot in self.slots:
                if slot.process is not None:
                    slot.process.join(timeout=10)
            if self.web is not None and self.web.process is not None:
                self.web.process.join(timeout=10)
            self.reap_children()
        return not any(slot.process is not None for slot in self.slots) and (
            self.web is None or self.web.process is None)

    # --- main loop -------------------------------------------------------------------

    def status_line(self) -> str:
        assert self.store is not None
        counts = self.store.counts()
        busy = sum(1 for r in self.store.worker_rows(host=self.store.host) if r.state == "busy")
        return f"{counts.get('queued', 0)} queued, {counts.get('running', 0)} running, {busy} busy slot(s)"

    def run(self) -> ExitCode:
        self._signals.install()
        self.start()
        service.notify("READY=1", f"STATUS={self.status_line()}")
        if self.notifier is not None:
            self.notifier.daemon_event("start", {"pid": os.getpid(), "slots": len(self.slots)})
        # Under systemd's watchdog, ping at least twice per WatchdogSec.
        ping_every = min(5.0, service.watchdog_interval_seconds() or 5.0)
        logger.info("spkd running (pid {}); inbox {}, outbox {}", os.getpid(), self.config.paths.inbox,
                    self.config.paths.outbox)
        last_status = 0.0
        try:
            while True:
                sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
                if self.web is not None and self.web.process is not None:
                    sentinels.append(self.web.process.sentinel)
                multiprocessing.connection.wait([*sentinels, self._signals.wake_fd], timeout=LOOP_SECONDS)
                self._handle_signals()
                try:
                    self.reap_children()
                    if self.stopping:
                        if self._finish_stop():
                            break
                        continue
                    self.check_health()
                    self.spawn_due()
                    if self.slots and all(s.failed for s in self.slots) and not self._ever_served():
                        logger.error("no worker slot could boot; stopping (see the errors above)")
                        return ExitCode.BOOT_FAILED
                    now = time.monotonic()
                    if now - last_status >= ping_every:
                        service.notify("WATCHDOG=1", f"STATUS={self.status_line()}")
                        last_status = now
                except DatabaseUnavailableError as exc:
                    # A database server out of reach (PostgreSQL restarting, the network)
                    # must not take the supervisor down; it tries again until it is back.
                    now = time.monotonic()
                    if now - last_status >= ping_every:
                        service.notify("WATCHDOG=1", "STATUS=database unreachable; retrying")
                        last_status = now
                    self._trouble.log("loop", "database unreachable; retrying: {}", exc)
                    time.sleep(1.0)
        finally:
            self.shutdown()
        logger.info("spkd stopped")
        return ExitCode.OK

    def _ever_served(self) -> bool:
        assert self.store is not None
        return any((r.jobs_done or 0) > 0 for r in self.store.worker_rows(host=self.store.host))

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.scheduler is not None:
            try:
                self.scheduler.shutdown(wait=False)
            except Exception:  # noqa: BLE001
                pass
        for slot in self.slots:
            if slot.alive():
                kill(slot.pid, signal.SIGKILL)
                slot.process.join(timeout=10)  # type: ignore[union-attr]
        if self.web is not None and self.web.alive():
            kill(self.web.pid, signal.SIGTERM)
            self.web.process.join(timeout=10)  # type: ignore[union-attr]
            if self.web.alive():
                kill(self.web.pid, signal.SIGKILL)
        if self.store is not None:
            self.reap_children()
            self.store.close()
        if self.notifier is not None:
            self.notifier.close(timeout=5)
        service.clear_runtime(self.config)

