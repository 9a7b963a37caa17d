"""spkd's errors, one class per `kind`, and the exit codes of its processes.

Every class carries the string stored in `jobs.error_kind` (`kind`) and whether
retrying can help (`permanent`). A *permanent* error fails its job at once (the
audio is undecodable, the sidecar is invalid); a *transient* one is retried with
backoff until the job's attempts are spent. Code raises the class that names the
problem and catches by class; nothing compares `kind` strings. The kinds are the
database's vocabulary and never change.

    SpkdError                      (abstract: never raised itself)
    ├── UnexpectedError            error           transient  any exception that is not an SpkdError
    ├── ConfigError                config          permanent  invalid configuration; start-up stops
    │   └── UnusableDatabaseError  database                   the job database is corrupt or cannot be opened
    ├── ServiceError               service         permanent  `spkd service …` cannot render or install
    ├── ModelsMissingError         models_missing  permanent  a model directory is missing or incomplete
    ├── FetchError                 models_fetch    permanent  downloading the real models failed
    ├── SearchQueryError           bad_query       permanent  `spkd search`: nothing left to search for
    ├── DatabaseExtensionError     database_extension permanent  PostgreSQL lacks pg_trgm and may not create it
    ├── JobRefusedError            job_refused     permanent  `spkd retry`, `cancel`, `remove` will not act on a job
    │   ├── NoSuchJobError         no_such_job                no job has that id
    │   └── CorrectionError        correction                 `spkd edit`, `revert`: the job is not a done transcription
    │       ├── NoSuchSegmentError no_such_segment            the transcript has no segment (srt cue) of that number
    │       ├── NoSuchVersionError no_such_version            the job's transcript has no version of that number
    │       ├── VersionConflictError version_conflict         another correction of the job landed first
    │       └── BadTextError       bad_text                   a corrected text or speaker name breaks the rule for names
    │           └── EmptyTextError empty_text                 a corrected text left empty
    ├── VoiceError                 voice           permanent  a voice-library or rename request refused (unknown name, bad name)
    │   └── EnrolmentError         enrolment                  a recording cannot be enrolled (too little speech, no speaker model)
    ├── AudioError                 bad_audio       permanent  the file cannot be decoded into audio
    │   ├── NotAudioError          not_audio                  no audio stream (a photo, a text file)
    │   ├── TooShortError          too_short                  less audio than anything useful needs
    │   ├── EmptyFileError         empty                      the file stayed empty
    │   ├── SymlinkError           symlink                    a symbolic link (never followed)
    │   ├── NotRegularFileError    not_a_file                 a FIFO, a device or a socket
    │   └── UnreadableError        unreadable                 the file cannot be opened or read (permissions, I/O)
    ├── OptionsError               bad_options     permanent  a sidecar or command-line option is invalid
    ├── DeviceError                device          transient  a device cannot be initialised
    │   ├── OutOfMemoryError       oom                        retried at half the batch, then on the fallback device
    │   └── DeviceMissingError     device_missing             the configured device is absent, no fallback
    ├── FfmpegMissingError         ffmpeg_missing  transient  installing ffmpeg fixes it; the job then succeeds
    ├── DiskFullError              disk_full       transient  no space left for outputs or the database
    ├── DatabaseUnavailableError   database_unavailable transient  the job database cannot be used now (locked, out of reach)
    ├── JobCancelledError          cancelled       transient  `spkd cancel`: the job was stopped; a retry runs it again
    ├── SummaryError               summary         transient  a summary could not be made (summaries.error_kind)
    │   ├── SummaryServerError     summary_server             the LLM server is down, slow, or answered no chat completion
    │   └── SummaryRefusedError    summary_refused permanent  cannot succeed as asked (4xx: key, model, size; no prompt file)
    └── WorkerLostError            worker_lost     transient  the job's worker died (recorded by the store)
        └── LeaseExpiredError      lease_expired              its holder stopped heartbeating

    ReadOnlyError                  `spkd sql`: a statement refused (it would write) or failed

A class without a word in the third column is as permanent as its parent. The last
two job kinds are never raised: the supervisor takes such a job back and the
store records the kind when the job's attempts are spent. `error_class` finds the
class of a stored kind, so that what a retry can change is decided by `permanent`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AudioError",
    "BadTextError",
    "ConfigError",
    "CorrectionError",
    "DeviceError",
    "DeviceMissingError",
    "DiskFullError",
    "EmptyFileError",
    "EmptyTextError",
    "ExitCode",
    "DatabaseExtensionError",
    "DatabaseUnavailableError",
    "FetchError",
    "FfmpegMissingError",
    "JobCancelledError",
    "JobRefusedError",
    "LeaseExpiredError",
    "ModelsMissingError",
    "NoSuchJobError",
    "NoSuchSegmentError",
    "NoSuchVersionError",
    "NotAudioError",
    "NotRegularFileError",
    "OptionsError",
    "OutOfMemoryError",
    "ReadOnlyError",
    "SearchQueryError",
    "ServiceError",
    "SpkdError",
    "SummaryError",
    "SummaryRefusedError",
    "SummaryServerError",
    "SymlinkError",
    "TooShortError",
    "UnexpectedError",
    "UnreadableError",
    "UnusableDatabaseError",
    "VersionConflictError",
    "VoiceError",
    "EnrolmentError",
    "WorkerLostError",
    "as_spkd_error",
    "error_class",
    "is_disk_full",
    "is_out_of_memory",
]


class ExitCode(IntEnum):
    """Exit statuses of `spkd` and of its worker processes, in one place."""

    OK = 0
    # spkd: a negative answer (a file of `spkd transcribe` failed, `spkd status`: not
    # running, `spkd doctor`: a check failed, `spkd retry/cancel/remove`: a job was
    # refused, with the reason); a worker: it crashed.
    FAILED = 1
    # spkd: bad usage, or an SpkdError (configuration, models missing, already running);
    # the systemd unit's RestartPreventExitStatus: restarting cannot fix it.
    ERROR = 2
    # A worker could not load the models on its device; `spkd run`: no slot could boot.
    BOOT_FAILED = 3
    # A worker whose supervisor is gone.
    LOST_PARENT = 4
    INTERRUPTED = 130  # 128 + SIGINT
    BROKEN_PIPE = 141  # 128 + SIGPIPE: `spkd jobs --json | head`


class SpkdError(Exception):
    kind: str = "error"
    permanent: bool = False

    @property
    def message(self) -> str:
        return str(self)


class UnexpectedError(SpkdError):
    """Any exception that is not an SpkdError, recorded as `error` with its type's name."""


class ConfigError(SpkdError):
    """The configuration is invalid; start-up stops with this message."""

    kind = "config"
    permanent = True


class UnusableDatabaseError(ConfigError):
    """The job database cannot be used: not a database, corrupt, or not a file at all.
    spkd never deletes or rewrites it; the message names the file and the way out."""

    kind = "database"


class ServiceError(SpkdError):
    """`spkd service …` cannot render, install or remove the unit / agent."""

    kind = "service"
    permanent = True


class ModelsMissingError(SpkdError):
    """A configured model directory does not exist; the message names it and the fix."""

    kind = "models_missing"
    permanent = True


class FetchError(SpkdError):
    """Downloading the real models failed (hub unreachable, incomplete download)."""

    kind = "models_fetch"
    permanent = True


class SearchQueryError(SpkdError):
    """A search query that cannot be searched for (empty once blanks are removed)."""

    kind = "bad_query"
    permanent = True


class DatabaseExtensionError(SpkdError):
    """The database lacks an extension spkd needs and this role may not create it;
    the message names the fix."""

    kind = "database_extension"
    permanent = True


class JobRefusedError(SpkdError):
    """A command about jobs (`spkd retry`, `cancel`, `remove`, `speakers`, or the dashboard's
    buttons) will not act on one: its state does not allow it, or a retry could not
    change how it ends. The message says why; `spkd` exits 1 (ExitCode.FAILED)."""

    kind = "job_refused"
    permanent = True


class NoSuchJobError(JobRefusedError):
    """No job has the id asked for (never queued, or removed since)."""

    kind = "no_such_job"


class CorrectionError(JobRefusedError):
    """A correction of a transcript (`spkd edit`, `spkd revert`, the dashboard's edit and
    history) is refused: the job is not a done transcription, or (the subclasses) the
    segment, the version or the text asked for is not one. Nothing is changed."""

    kind = "correction"


class NoSuchSegmentError(CorrectionError):
    """No segment has the number asked for (numbered as the srt numbers its cues), or the
    number is a later cue of a sentence that the srt cut into several."""

    kind = "no_such_segment"


class NoSuchVersionError(CorrectionError):
    """The job's transcript has no version of that number (`spkd history` lists them)."""

    kind = "no_such_version"


class VersionConflictError(CorrectionError):
    """Two corrections of one job were made at once from the same version: the one that
    lands second is refused (and made again from the first's result: daemon.jobs.corrections)."""

    kind = "version_conflict"


class BadTextError(CorrectionError):
    """A corrected text holds what no text may (a control character, a bidirectional
    override: daemon.names.text_problem) or is too long, or a speaker's name breaks the
    one rule for names (daemon.names)."""

    kind = "bad_text"


class EmptyTextError(BadTextError):
    """A corrected text that is empty (or only blanks): a segment keeps words."""

    kind = "empty_text"


class VoiceError(SpkdError):
    """The voice library or a rename refuses a request: an unknown voice or speaker, a
    name that cannot be a voice's (daemon.voices.matching.check_name)."""

    kind = "voice"
    permanent = True


class EnrolmentError(VoiceError):
    """A recording cannot give a voice: too little speech in it, or no speaker model."""

    kind = "enrolment"


class AudioError(SpkdError):
    """The input cannot be turned into audio (undecodable, decodes to nothing)."""

    kind = "bad_audio"
    permanent = True


class NotAudioError(AudioError):
    """The file has no audio stream at all."""

    kind = "not_audio"


class TooShortError(AudioError):
    """Too little audio for anything useful to come out of it."""

    kind = "too_short"


class EmptyFileError(AudioError):
    """The file stayed empty (zero bytes) past `watch.empty_fail_seconds`."""

    kind = "empty"


class SymlinkError(AudioError):
    """A symbolic link was dropped; links are never followed."""

    kind = "symlink"


class NotRegularFileError(AudioError):
    """A FIFO, a device or a socket in the inbox: nothing spkd can read as a recording."""

    kind = "not_a_file"


class UnreadableError(AudioError):
    """The file stayed impossible to open or read (permissions, an I/O error)."""

    kind = "unreadable"


class OptionsError(SpkdError):
    """A sidecar `<file>.spkd.json` (or a command-line option) is invalid."""

    kind = "bad_options"
    permanent = True


class DeviceError(SpkdError):
    """A device could not be initialised."""

    kind = "device"
    permanent = False


class OutOfMemoryError(DeviceError):
    """The device ran out of memory (retried with a smaller batch, then on the fallback device)."""

    kind = "oom"


class DeviceMissingError(DeviceError):
    """The configured device is not on this machine and `workers.fallback` is off."""

    kind = "device_missing"


class FfmpegMissingError(SpkdError):
    """ffmpeg is not on PATH. Transient on purpose: installing it fixes the job."""

    kind = "ffmpeg_missing"
    permanent = False


class DiskFullError(SpkdError):
    """No space left where the job writes (the outbox, the database). Transient: the
    disk guard pauses claiming until space comes back, then the job is retried."""

    kind = "disk_full"
    permanent = False


class DatabaseUnavailableError(SpkdError):
    """The job database cannot be used right now: another process holds its write lock
    past the busy timeout, the server is out of reach, its disk is full. The store
    raises it for any such error of the driver (the original is its `__cause__`);
    callers wait and try again. Its message is the driver's one-line summary."""

    kind = "database_unavailable"
    permanent = False

    @staticmethod
    def summary(exc: BaseException) -> str:
        """What a database error (SQLAlchemy's, or the driver's own) says, in one line:
        the first line of the driver's message (SQLAlchemy appends the SQL and a link),
        at most 300 characters, or the driver error's type where it said nothing."""
        orig = getattr(exc, "orig", None) or exc
        said = str(orig).strip()
        return said.splitlines()[0][:300] if said else type(orig).__name__

    @classmethod
    def from_driver(cls, exc: BaseException) -> "DatabaseUnavailableError":
        error = cls(cls.summary(exc))
        error.__cause__ = exc
        return error


class JobCancelledError(SpkdError):
    """The job was cancelled (`spkd cancel`) while it ran: raised on the worker's own
    thread to leave the engine call at its next progress report. Transient: a retry
    runs the job again."""

    kind = "cancelled"
    permanent = False


class SummaryError(SpkdError):
    """A job's summary could not be made; the transcript and the job are untouched
    (daemon.jobs.summarize). Stored in `summaries.error_kind`, never in `jobs`."""

    kind = "summary"
    permanent = False


class SummaryServerError(SummaryError):
    """The summary server cannot be reached, timed out, answered 5xx/408/429, or sent
    something that is no chat completion: tried again after a backoff."""

    kind = "summary_server"


class SummaryRefusedError(SummaryError):
    """The request cannot succeed as it stands: the server refused it (401, 404 for an
    unknown model, 400 for a request too large), its key is not in the environment, the
    prompt file or the stored transcript cannot be read. Asking again the same way
    cannot help; `spkd summarize` asks again once it is fixed."""

    kind = "summary_refused"
    permanent = True


class WorkerLostError(SpkdError):
    """The job's worker died holding it (recorded by the store, never raised)."""

    kind = "worker_lost"
    permanent = False


class LeaseExpiredError(WorkerLostError):
    """The job's holder stopped heartbeating and its lease ran out (recorded, never raised)."""

    kind = "lease_expired"


class ReadOnlyError(Exception):
    """`spkd sql`: the statement would write (refused, nothing changed) or failed."""


def as_spkd_error(exc: BaseException) -> SpkdError:
    """`exc` itself when it is one of ours, a DiskFullError for a full disk (the
    database's too), else an UnexpectedError naming its type (`RuntimeError: …`), so
    that every failure is recorded the same way."""
    if isinstance(exc, SpkdError) and not (isinstance(exc, DatabaseUnavailableError) and is_disk_full(exc)):
        return exc
    if is_disk_full(exc):
        full = DiskFullError(f"no space left on the device: {exc}")
        full.__cause__ = exc
        return full
    error = UnexpectedError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def error_class(kind: str | None) -> type[SpkdError] | None:
    """The class whose `kind` is `kind` (as stored in `jobs.error_kind`), or None for a
    kind this version does not know."""
    by_kind: dict[str, type[SpkdError]] = {}
    pending: list[type[SpkdError]] = list(SpkdError.__subclasses__())
    while pending:
        cls = pending.pop()
        by_kind.setdefault(cls.kind, cls)
        pending.extend(cls.__subclasses__())
    return by_kind.get(kind) if kind is not None else None


# SQLite's SQLITE_FULL (its extended codes keep it in the low byte) and PostgreSQL's
# SQLSTATE class 53 "insufficient resources" (53100 disk_full).
_SQLITE_FULL = 13
_POSTGRES_DISK_FULL = "53100"


def is_disk_full(exc: BaseException) -> bool:
    """Whether a foreign exception (the file system's, a database driver's, wrapped by
    SQLAlchemy or not) means there is no space left on a device."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a foreign exception (torch's, a driver's) means the device ran out of memory."""
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError and kin
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
