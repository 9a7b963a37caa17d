"""A worker process: loads the models once, then claim -> transcribe -> write -> complete.

Started by the supervisor with the `spawn` method. `run_worker` sets the slot's
device environment before anything imports torch, ignores SIGINT (a Ctrl-C in a
terminal reaches the whole process group; only the supervisor decides when a
worker stops) and treats SIGTERM as "finish the current job, then exit".

The exit code tells the supervisor what happened (daemon.errors.ExitCode: OK,
BOOT_FAILED, LOST_PARENT, FAILED for a crash); a SIGKILL shows up as a negative
code and is handled there.

With no transcription job waiting, a worker runs a summary task of a done job
(daemon.jobs.summarize) when summaries are on; the job itself is done already.

A database that is locked by another process for longer than its busy timeout, out
of reach, or on a full disk is waited for, never a crash: the worker keeps its
models loaded, says so in the log (at most once a minute) and carries on when the
database takes writes again.

A job cancelled while it runs (daemon.jobs.cancel) is abandoned: the heartbeat thread
reads the job's state every few seconds and, once it says `cancelled`, the next
progress report raises JobCancelledError on the worker's own thread, which leaves the
engine call; nothing is published (outputs written in the moment before are deleted).
An engine call that reports no progress for CANCEL_GRACE_SECONDS after that cannot be
interrupted: the worker exits (ExitCode.OK, as when it is recycled) and the supervisor
starts a fresh one in its slot at once, so the slot is never lost to a cancelled job.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from loguru import logger

from daemon.jobs import diskguard, outputs, results, spool, summarize
from daemon.config import Config
from daemon.errors import (
    DatabaseUnavailableError,
    ExitCode,
    JobCancelledError,
    OutOfMemoryError,
    UnexpectedError,
    as_spkd_error,
)
from daemon.logs import DATABASE_TROUBLE_SECONDS, Throttle
from daemon.progress import Progress, ProgressCallback, eta_seconds, overall_fraction
from daemon.store import Job, Store, utcnow
from daemon.transcript import Transcript
from daemon.voices.library import folder_source
from daemon.voices.matching import check_name, enrol_print, name_for_job, sample_of

if TYPE_CHECKING:
    from daemon.engine.transcriber import Transcriber

__all__ = ["CANCEL_GRACE_SECONDS", "ENGINE_FACTORY_ENV", "PROGRESS_SECONDS", "EngineFactory", "Heartbeat", "Worker",
           "WorkerSpec", "rss_mb", "run_worker"]

# `module:callable` building the engine instead of FunASR's (the fake engine in tests/).
ENGINE_FACTORY_ENV = "SPKD_ENGINE_FACTORY"

EngineFactory = Callable[[Config, str], "Transcriber"]
T = TypeVar("T")

# While the database cannot take a write (locked, out of reach, disk full): how long
# between tries, and how often the log says so.
DB_RETRY_SECONDS = 1.0
# A decoded recording this much shorter than its container claims (and by at least
# SHORT_AUDIO_MIN_SECONDS) is recorded on its job as a warning: cut short, or taken
# while still being written.
SHORT_AUDIO_RATIO = 0.9
SHORT_AUDIO_MIN_SECONDS = 1.0

# A running job's stage and fraction reach the database at most this often; the
# heartbeat thread also looks this often whether the job was cancelled.
PROGRESS_SECONDS = 2.0
# How long a cancelled job's engine call may go on without a progress report (where it
# would stop) before the worker exits instead.
CANCEL_GRACE_SECONDS = 3.0


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


def _load_factory(path: str | None) -> EngineFactory:
    """`module:callable`; the default builds the FunASR engine. Tests point this at a
    fake engine in tests/ to exercise the queue without loading models."""
    if not path:
        from daemon.engine.transcriber import load_configured

        return load_configured
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def rss_mb() -> float | None:
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:  # noqa: BLE001 - RSS is informational
        return None


class Heartbeat:
    """Renews the job's lease while the main thread transcribes, and records how far
    the job is. It runs on a thread so that a long inference keeps its lease; a process
    that is frozen or stuck in native code stops heartbeating and is found out, and a
    job past its time limit is caught by the supervisor's timeout regardless.

    `report` (the engine's ProgressCallback, on the main thread) only keeps the latest
    stage; this thread writes it with the next lease renewal, at most every
    PROGRESS_SECONDS, so progress costs no extra write while nothing moves.

    Between renewals it reads the job's state; once the job is `cancelled`, `report`
    raises JobCancelledError (the engine call stops there), and when the main thread
    has not left the job CANCEL_GRACE_SECONDS later, `on_abandon` is called (the
    worker exits; see the module's docstring)."""

    def __init__(self, store: Store, job: Job, *, pid: int, lease_seconds: float, every_seconds: float,
                 recent_rtf: float | None = None, on_abandon: Callable[[], None] | None = None,
                 grace_seconds: float = CANCEL_GRACE_SECONDS) -> None:
        self.store, self.job, self.pid = store, job, pid
        self.lease_seconds, self.every_seconds = lease_seconds, every_seconds
        self.recent_rtf = recent_rtf
        self.on_abandon, self.grace_seconds = on_abandon, grace_seconds
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spkd-heartbeat", daemon=True)
        self._lock = threading.Lock()
        self._stage: tuple[str, float | None] | None = None
        self._written: tuple[str, float | None] | None = None
        self._started = time.monotonic()

    def __enter__(self) -> "Heartbeat":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self, stage: str, fraction: float | None) -> None:
        if self.cancelled.is_set():
            raise JobCancelledError(f"job {self.job.id} was cancelled")
        with self._lock:
            self._stage = (stage, fraction)

    def progress(self) -> Progress | None:
        """The job's progress as of the latest report (None before the first)."""
        with self._lock:
            current = self._stage
        if current is None:
            return None
        fraction = overall_fraction(*current)
        eta = eta_seconds(fraction=fraction, elapsed_seconds=time.monotonic() - self._started,
                          audio_seconds=self.job.audio_seconds, recent_rtf=self.recent_rtf)
        return Progress(stage=current[0], fraction=fraction, eta_seconds=eta)

    def _run(self) -> None:
        tick = min(self.every_seconds, PROGRESS_SECONDS)
        last_beat = time.monotonic()
        while not self._stop.wait(tick):
            with self._lock:
                moved = self._stage != self._written
                current = self._stage
            now = time.monotonic()
            if not moved and now - last_beat < self.every_seconds:
                if self._state() == "cancelled":
                    self._cancelled()
                    return
                continue
            try:
                if not self.store.heartbeat(self.job.id, pid=self.pid, lease_seconds=self.lease_seconds,
                                            progress=self.progress()):
                    if self._state() == "cancelled":
                        self._cancelled()
                        return
                    logger.warning("job {}: lease lost (taken back by the supervisor)", self.job.id)
                    self.lost.set()
                    return
                last_beat = now
                self._written = current
            except Exception as exc:  # noqa: BLE001 - a busy database must not kill the job
                logger.warning("job {}: heartbeat failed: {}", self.job.id, exc)

    def _state(self) -> str | None:
        try:
            return self.store.job_state(self.job.id)
        except Exception:  # noqa: BLE001 - a busy database: asked again at the next tick
            return None

    def _cancelled(self) -> None:
        """The job was cancelled: the main thread stops at its next progress report; one
        that does not leave the job within the grace period cannot be interrupted."""
        logger.debug("job {}: cancelled; the worker abandons it", self.job.id)  # the worker logs the outcome
        self.cancelled.set()
        self.lost.set()
        if not self._stop.wait(self.grace_seconds) and self.on_abandon is not None:
            self.on_abandon()


class Worker:
    def __init__(self, config: Config, spec: WorkerSpec, *, store: Store | None = None) -> None:
        self.config = config
        self.spec = spec
        self.store = store or Store(config.database_url, host=config.host)
        self.pid = os.getpid()
        self.parent_pid = os.getppid()
        self.stop_requested = threading.Event()
        self.jobs_done = 0
        self.engine: Transcriber | None = None
        self._fallback_engine: Transcriber | None = None
        self._db_trouble = Throttle(DATABASE_TROUBLE_SECONDS)

    def _stored(self, what: str, call: Callable[[], T]) -> T | None:
        """`call()` (a store write), retried while the database cannot take it (another
        process holds its write lock past the busy timeout, it is out of reach, its disk
        is full); None when the worker is asked to stop, or loses its supervisor, first."""
        while True:
            try:
                return call()
            except DatabaseUnavailableError as exc:
                self._db_trouble.log(what, "slot {}: {}: the database cannot take it now ({}); waiting", self.spec.slot,
                                     what, exc)
            if self.stop_requested.wait(DB_RETRY_SECONDS) or not self.parent_alive():
                return None

    # --- boot -----------------------------------------------------------------------

    def boot(self) -> bool:
        self._stored("recording the boot", lambda: self.store.worker_update(
            self.spec.slot, pid=self.pid, device=self.spec.device, state="booting", started_at=utcnow(),
            fallback_from=self.spec.fallback_from, current_job_id=None, jobs_done=0))
        started = time.monotonic()
        try:
            self.engine = _load_factory(self.spec.engine_factory)(self.config, self.spec.device)
        except Exception as exc:  # noqa: BLE001 - any load failure is a boot failure of this device
            message = as_spkd_error(exc).message
            logger.error("slot {} failed to boot on {}: {}", self.spec.slot, self.spec.device, message)
            self._stored("recording the boot failure",
                         lambda: self.store.worker_update(self.spec.slot, state="booting", last_error=message[:2000]))
            return False
        logger.info("slot {} ready on {} (pid {}, models loaded in {:.1f} s)", self.spec.slot, self.spec.device,
                    self.pid, time.monotonic() - started)
        self._stored("reporting ready",
                     lambda: self.store.worker_update(self.spec.slot, state="ready", rss_mb=rss_mb(), last_error=None))
        return True

    # --- loop -------------------------------------------------------------------------

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid

    def run(self) -> ExitCode:
        if not self.boot():
            return ExitCode.BOOT_FAILED
        poll = self.config.workers.poll_seconds
        last_beat = 0.0
        while not self.stop_requested.is_set():
            if not self.parent_alive():
                logger.warning("slot {}: supervisor is gone; exiting", self.spec.slot)
                return ExitCode.LOST_PARENT
            # The disk guard pauses claiming while the outbox or state disk is nearly full.
            paused = diskguard.claim_blocker(self.config)
            summary = None
            try:
                job = None if paused else self.store.claim(slot=self.spec.slot, pid=self.pid,
                                                           device=self.spec.device,
                                                           lease_seconds=self.config.jobs.lease_seconds)
                # No transcription waiting: a summary task, when summaries are on (daemon.jobs.summarize).
                if job is None and not paused and self.config.summary.enabled:
                    summary = self.store.claim_summary(pid=self.pid, lease_seconds=self.config.jobs.lease_seconds)
                if job is None and summary is None:
                    now = time.monotonic()
                    if now - last_beat >= self.config.jobs.heartbeat_seconds:
                        self.store.worker_update(self.spec.slot, state="ready", pid=self.pid)
                        last_beat = now
            except DatabaseUnavailableError as exc:
                # Locked by another process past the busy timeout, out of reach, or a full
                # disk: nothing was claimed; the models stay loaded and we ask again.
                self._db_trouble.log("claiming", "slot {}: cannot claim a job now ({}); waiting", self.spec.slot, exc)
                self.stop_requested.wait(max(poll, DB_RETRY_SECONDS))
                continue
            if summary is not None:
                summarize.run(self.config, self.store, summary, pid=self.pid, write=self._stored)
                continue
            if job is None:
                self.stop_requested.wait(poll)
                continue
            self.process(job)
            self.jobs_done += 1
            if self._should_recycle():
                return ExitCode.OK
        return ExitCode.OK

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
        self._stored("reporting busy", lambda: self.store.worker_update(self.spec.slot, state="busy",
                                                                        current_job_id=job.id))
        logger.info("job {} started: {} {} on {} (slot {}, attempt {}/{})", job.id, job.task, job.source_name,
                    self.spec.device, self.spec.slot, job.attempts, job.max_attempts)
        if job.task == "enrol":
            self.enrol(job)
            return
        started = time.monotonic()
        # Asked again here, not only by the watcher: a duplicate queued while its twin was
        # still queued or running finds the twin done by now, and takes its result.
        reuse = results.reusable(self.config, self.store, job.dedup_key, audio_path=Path(job.spool_path),
                                 source_name=job.source_name, sha256=job.sha256)
        with Heartbeat(self.store, job, pid=self.pid, lease_seconds=self.config.jobs.lease_seconds,
                        every_seconds=self.config.jobs.heartbeat_seconds,
                        recent_rtf=self.store.recent_rtf(slot=self.spec.slot), on_abandon=self._abandon) as beat:
            try:
                transcript = reuse.transcript if reuse is not None else self._transcribe(job, beat.report)
                if beat.lost.is_set():
                    self._let_go(job, beat, started)
                    return
                transcript = self._named(job, transcript)
                beat.report("writing", None)
                # A job cancelled in the last moments publishes nothing.
                if not self._stored("checking the job is still ours",
                                    lambda: self.store.still_held(job.id, pid=self.pid)):
                    self._let_go(job, beat, started)
                    return
                # The files first, the store after (daemon.jobs.results says why).
                written = results.write_outputs(self.config, job.id, transcript, output_stem=job.output_stem,
                                                formats=outputs.formats_for(self.config, job.options))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
                self._stopped_by(job, beat, started, exc)
                return
            finally:
                self.engine.release()
        elapsed = time.monotonic() - started
        ran_on = transcript.engine.device if transcript.engine and reuse is None else self.spec.device
        if reuse is None:
            self._check_duration(job, transcript)
        done = results.record_transcribed(self.config, self.store, job, transcript, written=written, pid=self.pid,
                                          processing_seconds=elapsed, device=_slot_device(ran_on, self.spec),
                                          reuse=reuse, write=self._stored)
        if done is None:
            logger.warning("job {}: stopping before its result could be recorded; it goes back to the queue", job.id)
            return
        if not done:
            if self._state_of(job.id) == "cancelled":
                results.discard(self.config, job.id, written)
                logger.info("job {} cancelled as it finished; its outputs were deleted", job.id)
                self._ready()
            else:
                logger.warning("job {}: finished after its lease was taken back; result discarded", job.id)
            return
        self._count_done()
        if reuse is not None:
            logger.info("job {} done: {} reused the result of job {} (same audio and options)", job.id,
                        job.source_name, reuse.twin.id)
            return
        rtf = elapsed / transcript.audio_seconds if transcript.audio_seconds else 0.0
        logger.info("job {} done: {} on {} in {:.1f} s ({:.1f} s of audio, rtf {:.3f}, {} speakers, {} segments)",
                    job.id, job.source_name, self.spec.device, elapsed, transcript.audio_seconds, rtf,
                    len(transcript.speakers), len(transcript.segments))

    def _state_of(self, job_id: int) -> str | None:
        try:
            return self.store.job_state(job_id)
        except DatabaseUnavailableError:
            return None

    def _ready(self) -> None:
        self._stored("reporting ready",
                     lambda: self.store.worker_update(self.spec.slot, state="ready", current_job_id=None))

    def _stopped_by(self, job: Job, beat: Heartbeat, started: float, exc: Exception) -> None:
        """A job's work raised: a cancel (the engine stopped at a progress report, or gave
        up because its job was cancelled meanwhile) lets the job go; anything else fails it."""
        if isinstance(exc, JobCancelledError) or beat.cancelled.is_set():
            self._let_go(job, beat, started)
        else:
            self._failed(job, exc, time.monotonic() - started)

    def _let_go(self, job: Job, beat: Heartbeat, started: float) -> None:
        """The job is no longer this worker's (cancelled, or its lease taken back): leave
        it, recording nothing."""
        if beat.cancelled.is_set() or self._state_of(job.id) == "cancelled":
            logger.info("job {} cancelled: {} abandoned after {:.1f} s", job.id, job.source_name,
                        time.monotonic() - started)
            self._ready()

    def _abandon(self) -> None:
        """On the heartbeat thread: the cancelled job's engine call cannot be interrupted.
        Exit, as a recycled worker does; the supervisor starts a fresh one in this slot."""
        logger.warning("slot {}: the cancelled job's engine call cannot be interrupted; worker {} exits and a "
                       "fresh one takes its place", self.spec.slot, self.pid)
        os._exit(int(ExitCode.OK))

    def _named(self, job: Job, transcript: Transcript) -> Transcript:
        """The speakers named after the voice library as it is now (daemon.voices), the
        job's `expected_speakers` the only candidates when it lists them."""
        if not transcript.speaker_centroids:
            return transcript
        samples = self.store.voice_samples_of(names=job.options.get("expected_speakers"))
        if not samples:
            return transcript
        named = name_for_job(self.config, transcript, samples, job.options)
        if named.speaker_names:
            logger.info("job {}: speakers named {}", job.id, ", ".join(
                f"{s.label}={s.name} ({s.match.score:.2f})" if s.match and s.match.score is not None
                else f"{s.label}={s.name}" for s in named.speakers if s.name))
        return named

    def enrol(self, job: Job) -> None:
        """An enrolment job (a file in paths.voices/<Name>/, daemon.intake.voice_folder):
        its voice becomes a sample of that name, recorded with the job's `done` in one
        transaction; its spool copy is archived like any job's source."""
        assert self.engine is not None
        started = time.monotonic()
        name = str(job.options.get("voice") or "")
        with Heartbeat(self.store, job, pid=self.pid, lease_seconds=self.config.jobs.lease_seconds,
                        every_seconds=self.config.jobs.heartbeat_seconds, on_abandon=self._abandon) as beat:
            try:
                check_name(name)
                voice = self.engine.embed_voice(Path(job.spool_path), source_name=job.source_name)
                enrol_print(voice, source=job.source_name)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded outcome
                self._stopped_by(job, beat, started, exc)
                return
            finally:
                self.engine.release()
        if beat.lost.is_set():
            self._let_go(job, beat, started)
            return
        elapsed = time.monotonic() - started
        sample = sample_of(voice, origin="folder", source=folder_source(job.source_name), sha256=job.sha256,
                           job_id=job.id)
        done = results.record_enrolled(self.config, self.store, job, pid=self.pid, name=name, sample=sample,
                                       processing_seconds=elapsed, device=self.spec.device, write=self._stored)
        if not done:
            logger.warning("job {}: enrolment not recorded (stopping, or its lease was taken back)", job.id)
            return
        self._count_done()
        logger.info("job {} done: enrolled {} as voice {} on {} in {:.1f} s ({:.1f} s of speech)", job.id,
                    job.source_name, name, self.spec.device, elapsed, voice.speech_seconds)

    def _count_done(self) -> None:
        """After a job's result is recorded (and its source archived): the slot's count up."""
        self._stored("counting the job", lambda: self.store.worker_job_done(self.spec.slot, rss_mb=rss_mb()))

    def _check_duration(self, job: Job, transcript: Transcript) -> None:
        """A recording that decodes far shorter than its container said when it was
        queued (cut short, or still being written when it was taken) is done, with a
        `warning` event saying so, rather than silently short."""
        claimed, decoded = job.audio_seconds, transcript.audio_seconds
        if not claimed or decoded >= claimed * SHORT_AUDIO_RATIO or claimed - decoded < SHORT_AUDIO_MIN_SECONDS:
            return
        message = (f"decoded {decoded:.1f} s of audio, but the file said {claimed:.1f} s when it was queued "
                   "(cut short, or still being written when it was taken)")
        logger.warning("job {}: {}: {}", job.id, job.source_name, message)
        self._stored(f"recording a warning on job {job.id}", lambda: self.store.add_event(
            job.id, "warning", message=message, claimed_seconds=round(claimed, 3), decoded_seconds=round(decoded, 3)))

    def _transcribe(self, job: Job, progress: ProgressCallback) -> Transcript:
        """Out of memory: retry with half the batch (daemon.engine.transcriber.transcribe_with_retries);
        then once on the slot's fallback device (a slower job, never a lost one)."""
        assert self.engine is not None
        try:
            transcript = self._transcribe_on(self.engine, job, progress)
        except OutOfMemoryError:
            if not self.spec.fallbacks:
                raise
            device = self.spec.fallbacks[0]
            logger.warning("job {}: still out of memory on {}; running it on {}", job.id, self.spec.device, device)
            self.store.add_event(job.id, "oom_fallback", device=self.spec.device, fallback=device)
            if self._fallback_engine is None:
                self._fallback_engine = _load_factory(self.spec.engine_factory)(self.config, device)
            transcript = self._transcribe_on(self._fallback_engine, job, progress)
            self._fallback_engine.release()
        return transcript.for_source(Path(job.spool_path), name=job.source_name, sha256=job.sha256)

    def _transcribe_on(self, engine: Transcriber, job: Job, progress: ProgressCallback) -> Transcript:
        from daemon.engine.transcriber import transcribe_with_retries

        def on_retry(batch_size_s: int) -> None:
            logger.warning("job {}: out of memory on {}; retrying with batch_size_s={}", job.id, self.spec.device,
                           batch_size_s)
            self.store.add_event(job.id, "oom_retry", device=self.spec.device, batch_size_s=batch_size_s)

        # The config's audio.channels unless the job's sidecar says otherwise.
        job_options = {"channels": self.config.audio.channels, **job.options}
        return transcribe_with_retries(engine, Path(job.spool_path), job_options, source_name=job.source_name,
                                       on_retry=on_retry, progress=progress)

    def _failed(self, job: Job, exc: Exception, elapsed: float) -> None:
        error = as_spkd_error(exc)
        kind, message = error.kind, error.message
        if isinstance(error, UnexpectedError):
            logger.opt(exception=exc).debug("job {} traceback", job.id)
        # In a tuple: the store's own None (the lease was taken back) is not "asked to stop".
        stored = self._stored(f"recording job {job.id} failed", lambda: (self.store.fail(
            job.id, pid=self.pid, kind=kind, message=message[:4000], permanent=error.permanent,
            retry_backoff_seconds=self.config.jobs.retry_backoff_seconds),))
        if stored is None:
            logger.warning("job {}: stopping before its failure ({}) could be recorded; it goes back to the queue",
                           job.id, kind)
            return
        outcome = stored[0]
        self._ready()
        if outcome is None:
            if self._state_of(job.id) == "cancelled":  # its file went to failed/ before the heartbeat saw it
                logger.info("job {} cancelled: {} abandoned ({} when it stopped)", job.id, job.source_name, kind)
            else:
                logger.warning("job {}: failed after its lease was taken back: {}", job.id, message)
            return
        if outcome.state == "failed":
            spool.retire_failed(self.config, outcome.job)
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
    code = ExitCode.OK
    try:
        code = worker.run()
    except Exception:  # noqa: BLE001 - last resort: log, and let the supervisor restart us
        logger.exception("slot {}: worker crashed", spec.slot)
        code = ExitCode.FAILED
    finally:
        try:
            if code != ExitCode.BOOT_FAILED:
                worker.store.worker_update(spec.slot, state="stopped", current_job_id=None)
        except Exception:  # noqa: BLE001
            pass
        worker.store.close()
    raise SystemExit(int(code))
