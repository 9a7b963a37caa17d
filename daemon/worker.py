"""A worker process: loads the models once, then claim -> transcribe -> write -> complete.

Started by the supervisor with the `spawn` method. `run_worker` sets the slot's
device environment before anything imports torch, ignores SIGINT (a Ctrl-C in a
terminal reaches the whole process group; only the supervisor decides when a
worker stops) and treats SIGTERM as "finish the current job, then exit".

Exit codes tell the supervisor what happened (see EXIT_*); a crash or SIGKILL
shows up as a negative code and is handled there.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from loguru import logger

from daemon import diskguard, outputs, spool
from daemon.config import Config
from daemon.errors import DeviceError, SpkdError
from daemon.store import Job, Store, utcnow
from daemon.transcript import Source, Transcript

EXIT_OK = 0  # stopped as asked, or recycled: restart without counting a failure
EXIT_BOOT_FAILED = 3  # could not load the models on this device
EXIT_LOST_PARENT = 4  # the supervisor is gone

ENGINE_FACTORY_ENV = "SPKD_ENGINE_FACTORY"
OOM_RETRIES = 2


class Engine(Protocol):
    batch_size_s: int

    def transcribe(self, audio_path: Path, *, speakers: int | None = None, hotwords: Any = (),
                   source_name: str | None = None, channels: Any = "mix") -> Transcript: ...

    def release(self) -> None: ...


EngineFactory = Callable[[Config, str], Engine]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a spawned worker needs; pickled across the spawn boundary."""

    slot: int
    device: str
    env: dict[str, str]
    threads: int
    fallback_from: str | None = None
    # Where a job goes when it runs out of memory even at the smallest batch size.
    fallbacks: tuple[str, ...] = ()
    engine_factory: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def default_engine_factory(config: Config, device: str) -> Engine:
    from daemon import devices
    from daemon.engine import Engine as FunasrEngine
    from daemon.models import configured_model_dirs, require_model_dirs

    m = config.models
    dirs = require_model_dirs(configured_model_dirs(m))
    return FunasrEngine.load(dirs, device=devices.torch_device(device), batch_size_s=m.batch_size_s,
                             ncpu=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                             speaker_batching=m.speaker_batching)


def _load_factory(path: str | None) -> EngineFactory:
    """`module:callable`; the default builds the FunASR engine. Tests point this at a
    fake engine in tests/ to exercise the queue without loading models."""
    if not path:
        return default_engine_factory
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def rss_mb() -> float | None:
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:  # noqa: BLE001 - RSS is informational
        return None


class _Heartbeat:
    """Renews the job's lease while the main thread transcribes. It runs on a thread
    so that a long inference keeps its lease; a process that is frozen or stuck
    in native code stops heartbeating and is found out, and a job past its time
    limit is caught by the supervisor's timeout regardless."""

    def __init__(self, store: Store, job: Job, *, pid: int, lease_seconds: float, every_seconds: float) -> None:
        self.store, self.job, self.pid = store, job, pid
        self.lease_seconds, self.every_seconds = lease_seconds, every_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spkd-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                if not self.store.heartbeat(self.job.id, pid=self.pid, lease_seconds=self.lease_seconds):
                    logger.warning("job {}: lease lost (taken back by the supervisor)", self.job.id)
                    self.lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a busy database must not kill the job
                logger.warning("job {}: heartbeat failed: {}", self.job.id, exc)


class Worker:
    def __init__(self, config: Config, spec: WorkerSpec, *, store: Store | None = None) -> None:
        self.config = config
        self.spec = spec
        self.store = store or Store(config.database_url, host=config.host)
        self.pid = os.getpid()
        self.parent_pid = os.getppid()
        self.stop_requested = threading.Event()
        self.jobs_done = 0
        self.engine: Engine | None = None
        self._fallback_engine: Engine | None = None

    # --- boot -----------------------------------------------------------------------

    def boot(self) -> bool:
        self.store.worker_update(self.spec.slot, pid=self.pid, device=self.spec.device, state="booting",
                                 started_at=utcnow(), fallback_from=self.spec.fallback_from, current_job_id=None,
                                 jobs_done=0)
        started = time.monotonic()
        try:
            self.engine = _load_factory(self.spec.engine_factory)(self.config, self.spec.device)
        except Exception as exc:  # noqa: BLE001 - any load failure is a boot failure of this device
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SpkdError) else str(exc)
            logger.error("slot {} failed to boot on {}: {}", self.spec.slot, self.spec.device, message)
            self.store.worker_update(self.spec.slot, state="booting", last_error=message[:2000])
            return False
        logger.info("slot {} ready on {} (pid {}, models loaded in {:.1f} s)", self.spec.slot, self.spec.device,
                    self.pid, time.monotonic() - started)
        self.store.worker_update(self.spec.slot, state="ready", rss_mb=rss_mb(), last_error=None)
        return True

    # --- loop -------------------------------------------------------------------------

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid

    def run(self) -> int:
        if not self.boot():
            return EXIT_BOOT_FAILED
        poll = self.config.workers.poll_seconds
        last_beat = 0.0
        while not self.stop_requested.is_set():
            if not self.parent_alive():
                logger.warning("slot {}: supervisor is gone; exiting", self.spec.slot)
                return EXIT_LOST_PARENT
            # The disk guard pauses claiming while the outbox or state disk is nearly full.
            paused = diskguard.paused_reason(self.config)
            job = None if paused else self.store.claim(slot=self.spec.slot, pid=self.pid, device=self.spec.device,
                                                       lease_seconds=self.config.jobs.lease_seconds)
            if job is None:
                now = time.monotonic()
                if now - last_beat >= self.config.jobs.heartbeat_seconds:
                    self.store.worker_update(self.spec.slot, state="ready", pid=self.pid)
                    last_beat = now
                self.stop_requested.wait(poll)
                continue
            self.process(job)
            self.jobs_done += 1
            if self._should_recycle():
                return EXIT_OK
        return EXIT_OK

    def _should_recycle(self) -> bool:
        limits = self.config.workers
        if limits.max_jobs and self.jobs_done >= limits.max_jobs:
            logger.info("slot {}: recycling after {} jobs", self.spec.slot, self.jobs_done)
            return True
        rss = rss_mb()
        if limits.max_rss_mb and rss and rss > limits.max_rss_mb:
            logger.info("slot {}: recycling at {:.0f} MB RSS (limit {} MB)", self.spec.slot, rss, limits.max_rss_mb)
            return True
        return False

    # --- one job ----------------------------------------------------------------------

    def process(self, job: Job) -> None:
        assert self.engine is not None
        paths = self.config.paths
        self.store.worker_update(self.spec.slot, state="busy", current_job_id=job.id)
        logger.info("job {} started: {} on {} (slot {}, attempt {}/{})", job.id, job.source_name, self.spec.device,
                    self.spec.slot, job.attempts, job.max_attempts)
        started = time.monotonic()
        twin = self.store.done_twin(job.dedup_key)
        reused = outputs.load_transcript(self.config, twin.id) if twin is not None else None
        with _Heartbeat(self.store, job, pid=self.pid, lease_seconds=self.config.jobs.lease_seconds,
                        every_seconds=self.config.jobs.heartbeat_seconds) as beat:
            try:
                if reused is not None:
                    transcript = reused.replace(source=Source(name=job.source_name, sha256=job.sha256,
                                                              duration_seconds=reused.audio_seconds))
                else:
                    transcript = self._transcribe(job)
                if beat.lost.is_set():
                    return
                outputs.save_transcript(self.config, job.id, transcript)
                written = outputs.publish(self.config, output_stem=job.output_stem, transcript=transcript,
                                          formats=job.options.get("formats") or self.config.output.formats)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
                self._failed(job, exc, time.monotonic() - started)
                return
            finally:
                self.engine.release()
        elapsed = time.monotonic() - started
        ran_on = transcript.engine.device if transcript.engine and reused is None else self.spec.device
        done = self.store.complete(job.id, pid=self.pid, audio_seconds=transcript.audio_seconds,
                                   processing_seconds=elapsed, speakers=len(transcript.speakers),
                                   outputs=written, device=_slot_device(ran_on, self.spec),
                                   reused_from=twin.id if reused is not None and twin is not None else None)
        if not done:
            logger.warning("job {}: finished after its lease was taken back; result discarded", job.id)
            return
        spool.archive(spool_path=Path(job.spool_path), spool_root=paths.spool, archive_root=paths.archive,
                      source_name=job.source_name)
        self.store.worker_job_done(self.spec.slot, rss_mb=rss_mb())
        if reused is not None and twin is not None:
            logger.info("job {} done: {} reused the result of job {} (same audio and options)", job.id,
                        job.source_name, twin.id)
            return
        rtf = elapsed / transcript.audio_seconds if transcript.audio_seconds else 0.0
        logger.info("job {} done: {} on {} in {:.1f} s ({:.1f} s of audio, rtf {:.3f}, {} speakers, {} segments)",
                    job.id, job.source_name, self.spec.device, elapsed, transcript.audio_seconds, rtf,
                    len(transcript.speakers), len(transcript.segments))

    def _transcribe(self, job: Job) -> Transcript:
        """Out of memory: retry with half the batch, twice; then once on the slot's
        fallback device (a slower job, never a lost one)."""
        assert self.engine is not None
        try:
            transcript = self._transcribe_on(self.engine, job)
        except DeviceError as exc:
            if exc.kind != "oom" or not self.spec.fallbacks:
                raise
            device = self.spec.fallbacks[0]
            logger.warning("job {}: still out of memory on {}; running it on {}", job.id, self.spec.device, device)
            self.store.add_event(job.id, "oom_fallback", device=self.spec.device, fallback=device)
            if self._fallback_engine is None:
                self._fallback_engine = _load_factory(self.spec.engine_factory)(self.config, device)
            transcript = self._transcribe_on(self._fallback_engine, job)
            self._fallback_engine.release()
        return transcript.replace(source=Source(name=job.source_name, sha256=job.sha256,
                                                duration_seconds=transcript.audio_seconds))

    def _transcribe_on(self, engine: Engine, job: Job) -> Transcript:
        options = job.options
        for attempt in range(OOM_RETRIES + 1):
            try:
                return engine.transcribe(Path(job.spool_path), speakers=options.get("speakers"),
                                         hotwords=tuple(options.get("hotwords") or ()), source_name=job.source_name,
                                         channels=options.get("channels", self.config.audio.channels))
            except DeviceError as exc:
                if exc.kind != "oom" or attempt == OOM_RETRIES or engine.batch_size_s <= 1:
                    raise
                engine.batch_size_s = max(1, engine.batch_size_s // 2)
                engine.release()
                logger.warning("job {}: out of memory on {}; retrying with batch_size_s={}", job.id,
                               self.spec.device, engine.batch_size_s)
                self.store.add_event(job.id, "oom_retry", device=self.spec.device, batch_size_s=engine.batch_size_s)
        raise AssertionError("unreachable")

    def _failed(self, job: Job, exc: Exception, elapsed: float) -> None:
        permanent = isinstance(exc, SpkdError) and exc.permanent
        kind = exc.kind if isinstance(exc, SpkdError) else "error"
        message = str(exc) if isinstance(exc, SpkdError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, SpkdError):
            logger.opt(exception=exc).debug("job {} traceback", job.id)
        outcome = self.store.fail(job.id, pid=self.pid, kind=kind, message=message[:4000], permanent=permanent,
                                  retry_backoff_seconds=self.config.jobs.retry_backoff_seconds)
        self.store.worker_update(self.spec.slot, state="ready", current_job_id=None)
        if outcome is None:
            logger.warning("job {}: failed after its lease was taken back: {}", job.id, message)
            return
        if outcome.state == "failed":
            retire_failed(self.config, outcome.job)
            logger.error("job {} failed: {} on {} after {:.1f} s ({}: {})", job.id, job.source_name,
                         self.spec.device, elapsed, kind, message)
        else:
            logger.warning("job {} will be retried: {} ({}: {}; attempt {}/{})", job.id, job.source_name, kind,
                           message, job.attempts, job.max_attempts)


def _slot_device(engine_device: str, spec: WorkerSpec) -> str:
    """The device a job ran on, in the slot's terms (inside the worker the slot's GPU is
    always `cuda:0`); only an OOM fallback to the CPU changes it."""
    if engine_device.partition(":")[0] == "cpu" and spec.device.partition(":")[0] != "cpu":
        return "cpu"
    return spec.device


def retire_failed(config: Config, job: Job) -> Path:
    """Move a failed job's source into failed/ with its `.error.json`."""
    paths = config.paths
    return spool.fail(spool_path=Path(job.spool_path), spool_root=paths.spool, failed_root=paths.failed,
                      source_name=job.source_name, job_id=job.id, sha256=job.sha256, error_kind=job.error_kind,
                      error_message=job.error_message, attempts=job.attempts)


def run_worker(config: Config, spec: WorkerSpec) -> None:
    """Entry point of the spawned worker process."""
    os.environ.update(spec.env)  # before anything imports torch
    os.environ.update(spec.extra_env)
    os.environ["SPKD_WORKER_SLOT"] = str(spec.slot)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from daemon.logs import setup_logging

    setup_logging(config, role=f"worker{spec.slot}")
    worker = Worker(config, spec)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop_requested.set())
    code = EXIT_OK
    try:
        code = worker.run()
    except Exception:  # noqa: BLE001 - last resort: log, and let the supervisor restart us
        logger.exception("slot {}: worker crashed", spec.slot)
        code = 1
    finally:
        try:
            if code != EXIT_BOOT_FAILED:
                worker.store.worker_update(spec.slot, state="stopped", current_job_id=None)
        except Exception:  # noqa: BLE001
            pass
        worker.store.close()
    raise SystemExit(code)
