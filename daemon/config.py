"""Load and validate `config.json` (plus `SPKD_*` environment overrides) into one typed value.

Every key is checked: an unknown key or a bad value stops start-up with a message
naming the key (`workers.count: expected an integer >= 1, got "two"`). Relative
paths resolve against the folder of the config file, so a config can be moved
together with the folders it names.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from daemon.errors import ConfigError
from daemon.limits import LIMIT_RULES, check_config
from daemon.summary_config import SUMMARY_RULES, SummaryConfig, resolved as summary_resolved

__all__ = ["DEVICE_KINDS", "Config", "DaemonConfig", "DatabaseConfig", "JobsConfig", "ModelsConfig", "NotifyConfig",
           "OutputConfig", "PathsConfig", "RetentionConfig", "SummaryConfig", "WatchConfig", "WebConfig",
           "WorkersConfig", "device_problem", "from_dict", "is_model_path", "is_override", "listen_problem", "load", "parse_listen"]

DEVICE_KINDS = ("cuda", "rocm", "xpu", "mps", "cpu")
DEFAULT_EXTENSIONS = (
    "wav", "mp3", "m4a", "aac", "flac", "ogg", "opus", "webm", "mp4", "mov", "mkv", "wma", "amr",
)
DEFAULT_IGNORE = ("*.part", "*.crdownload", "*.tmp", "~$*", ".DS_Store", "*.download", "*.partial")
ENV_PREFIX = "SPKD_"
# SPKD_ variables that are not configuration overrides; every other SPKD_ variable must
# name a key (SPKD_<SECTION>_<KEY>) or start-up stops, so that a typo is never ignored.
NON_CONFIG_ENV = {
    "SPKD_CONFIG": "the config file",
    "SPKD_ENGINE_FACTORY": "`module:callable` building the engine (the test suite's fake engine)",
    "SPKD_WORKER_SLOT": "set by spkd in each of its worker processes",
}
# Prefixes kept for the test suite and the benchmarks (SPKD_FAKE_DEVICES, SPKD_TEST_POSTGRES_URL, …).
NON_CONFIG_ENV_PREFIXES = ("SPKD_FAKE_", "SPKD_TEST_", "SPKD_BENCH_")
# Bounds every number of the configuration keeps: what the database's INTEGER columns
# hold, and durations a clock can add without overflowing (10 years, 100 years).
MAX_INT = 2**31 - 1
MAX_SECONDS = 10 * 365 * 86400.0
MAX_DAYS = 100 * 365.0
# A CPU or MPS slot needs a core of its own; beyond that more workers only share them.
MAX_WORKERS = 1024
MAX_PER_DEVICE = 64
# What a webhook can be told about: a job done or failed, the daemon starting or stopping.
NOTIFY_EVENTS = ("done", "failed", "start", "stop")


@dataclass(frozen=True)
class PathsConfig:
    inbox: Path = Path("var/inbox")
    outbox: Path = Path("var/outbox")
    archive: Path = Path("var/archive")
    failed: Path = Path("var/failed")
    spool: Path = Path("var/spool")
    state: Path = Path("var/state")
    # The voice library's folder: audio in <voices>/<Name>/ is enrolled as Name (daemon.voices).
    voices: Path = Path("var/voices")


@dataclass(frozen=True)
class DatabaseConfig:
    # None: an SQLite file `spkd.db` under paths.state.
    url: str | None = None


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 1
    # "auto", one device ("cuda", "cuda:1", "cpu", …) or a list of GPUs (["cuda:0", "cuda:2"]).
    device: str | tuple[str, ...] = "auto"
    device_priority: tuple[str, ...] = DEVICE_KINDS
    fallback: bool = True
    # Measured (BENCHMARKS.md): with batched speaker embeddings one worker leaves a GPU
    # mostly idle; two give 1.6x the throughput of one.
    per_device: int = 2
    # None: the machine's cores divided by the number of CPU slots.
    threads: int | None = None
    max_jobs: int | None = None
    max_rss_mb: int | None = None
    boot_timeout_seconds: float = 900.0
    max_boot_failures: int = 5
    restart_backoff_max_seconds: float = 60.0
    poll_seconds: float = 0.5


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path = Path("models")
    asr: str = "paraformer-zh"
    vad: str = "fsmn-vad"
    punc: str = "ct-punc-c"
    spk: str | None = "cam++"
    batch_size_s: int = 300
    # Batch the speaker model over all windows of a job (same results, far fewer launches).
    speaker_batching: bool = True


def is_model_path(value: str) -> bool:
    """A model setting is a path when absolute, home-relative or containing a separator
    (`./cam++`); anything else is a name under the models directory (`cam++`)."""
    return (
        os.path.isabs(value)
        or value.startswith("~")
        or "/" in value
        or (os.sep != "/" and os.sep in value)
    )


@dataclass(frozen=True)
class AudioConfig:
    # "mix", "split", "auto" or a list of channel names (daemon.options.validate_channels);
    # a sidecar's `channels` overrides it per file.
    channels: str | tuple[str, ...] = "mix"


@dataclass(frozen=True)
class SpeakersConfig:
    # A speaker is named after a voice of the library only when the cosine similarity of
    # its centroid with that voice is at least `match_threshold` and beats the next best
    # voice by `match_margin` (daemon.voices.matching.match; defaults measured with the tiny
    # CAM++ on held-out voices, `python -m bench voices`, BENCHMARKS.md).
    match_threshold: float = 0.9
    match_margin: float = 0.05
    # spkd's refinement of FunASR's speaker clusters (daemon.engine.speaker_refine), and
    # the merging of speakers that the voice library says are one person. false: FunASR's
    # clusters and sentences exactly.
    refine: bool = True
    # Its thresholds; null: the speaker model's own default (measured for the tiny test
    # model, 3D-Speaker's published configuration for the real CAM++). README says what
    # each trades.
    min_speaker_seconds: float | None = None
    transition_share: float | None = None
    distinct_margin: float | None = None
    merge_cosine: float | None = None

    def refine_overrides(self) -> dict[str, float | None]:
        """The configured refinement thresholds (None: the speaker model's default)."""
        return {"min_speaker_seconds": self.min_speaker_seconds, "transition_share": self.transition_share,
                "distinct_margin": self.distinct_margin, "merge_cosine": self.merge_cosine}


@dataclass(frozen=True)
class OutputConfig:
    formats: tuple[str, ...] = ("json", "txt", "srt", "vtt", "sentences")
    # A sentence is cut where its words pause longer than this, so that no segment (and
    # no subtitle cue) spans silence (daemon.engine.speaker_turns); FSMN-VAD ends a segment
    # after ~0.8 s of silence. Off with speakers.refine: false. Also Engine.load's default.
    max_pause_seconds: float = 1.0


@dataclass(frozen=True)
class WatchConfig:
    settle_seconds: float = 2.0
    rescan_seconds: float = 30.0
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    polling: bool = False
    # A file that stays empty this long fails instead of waiting forever.
    empty_fail_seconds: float = 300.0
    # Where the kernel cannot say whether a file is still open for writing, a file whose
    # container looks unfinished (a WAV header without sizes, an MP4 without its index)
    # is taken only after it stayed unchanged this long.
    incomplete_wait_seconds: float = 300.0
    # A WAV whose header is not final is taken after this long unchanged, open or not.
    unfinished_wav_seconds: float = 60.0


@dataclass(frozen=True)
class JobsConfig:
    max_attempts: int = 3
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    timeout_base_seconds: float = 600.0
    timeout_factor: float = 3.0
    retry_backoff_seconds: float = 10.0


@dataclass(frozen=True)
class DaemonConfig:
    shutdown_grace_seconds: float = 60.0
    kill_grace_seconds: float = 10.0
    log_level: str = "INFO"
    wal_checkpoint_seconds: float = 300.0
    reap_seconds: float = 15.0
    # Disk guard: claiming pauses while free space under the outbox or state folder is below this.
    min_free_mb: int = 1024
    disk_check_seconds: float = 30.0
    # What this host runs: the inbox watcher, the worker pool, or both (several hosts
    # sharing one PostgreSQL database and one set of folders; see README).
    roles: tuple[str, ...] = ("watcher", "workers")
    # This host's name in the database (jobs.host, workers.host, spool folders); null:
    # the machine's host name. Must differ between daemons sharing a database.
    host: str | None = None


@dataclass(frozen=True)
class RetentionConfig:
    # null keeps files (or rows) forever.
    archive_days: float | None = 30.0
    failed_days: float | None = 90.0
    job_rows_days: float | None = None
    sweep_seconds: float = 3600.0


@dataclass(frozen=True)
class NotifyConfig:
    webhook_url: str | None = None
    # Body style: json (spkd's own), wecom, feishu or slack.
    template: str = "json"
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout_seconds: float = 10.0
    max_attempts: int = 5


@dataclass(frozen=True)
class WebConfig:
    # "HOST:PORT" where `spkd run` serves the dashboard (a supervised child process);
    # null: no dashboard (`spkd web` still serves one on demand).
    listen: str | None = None
    # Required for any address other than loopback; a bearer token or the login form's password.
    token: str | None = None
    max_upload_mb: int = 2048
    # Host names (besides web.listen's host, and localhost for loopback) that requests may
    # name in their Host header; any other gets 421 (DNS rebinding). Port not included.
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speakers: SpeakersConfig = field(default_factory=SpeakersConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    web: WebConfig = field(default_factory=WebConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)  # daemon/summary_config.py
    # Where the config came from; not a key of the file.
    source: Path | None = None

    @property
    def host(self) -> str:
        """This daemon's host name in the database."""
        return self.daemon.host or socket.gethostname()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.paths.state / 'spkd.db'}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in _sections():
            value = getattr(self, section.name)
            out[section.name] = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _shown(value: Any) -> str:
    """A bad value as JSON in an error message, with its own characters (a name in
    Chinese reads as itself, not as \\u escapes)."""
    return json.dumps(value, ensure_ascii=False)


def _sections() -> list[Any]:
    return [f for f in fields(Config) if f.name != "source"]


# --- validation -------------------------------------------------------------------------

_VALUE_RULES: dict[str, Any] = {
    # key -> predicate(value) -> error message or None
    "workers.count": lambda v: None if 1 <= v <= MAX_WORKERS else f"must be from 1 to {MAX_WORKERS}",
    "workers.per_device": lambda v: None if 1 <= v <= MAX_PER_DEVICE else f"must be from 1 to {MAX_PER_DEVICE}",
    "workers.threads": lambda v: None if v is None or v >= 1 else "must be >= 1 or null",
    "workers.max_jobs": lambda v: None if v is None or v >= 1 else "must be >= 1 or null",
    "workers.max_rss_mb": lambda v: None if v is None or v >= 64 else "must be >= 64 or null",
    "workers.max_boot_failures": lambda v: None if v >= 1 else "must be >= 1",
    "workers.device": lambda v: _check_workers_device(v),
    "workers.device_priority": lambda v: _check_priority(v),
    "models.batch_size_s": lambda v: None if v >= 1 else "must be >= 1",
    "output.formats": lambda v: _check_formats(v),
    "audio.channels": lambda v: _check_channels(v),
    "speakers.match_threshold": lambda v: None if -1.0 <= v <= 1.0 else "must be from -1 to 1 (a cosine similarity)",
    "speakers.match_margin": lambda v: None if 0.0 <= v <= 2.0 else "must be from 0 to 2",
    "speakers.min_speaker_seconds": lambda v: None if v is None or 0.0 <= v <= 600.0
    else "must be null or from 0 to 600",
    "speakers.transition_share": lambda v: None if v is None or 0.0 < v <= 1.01 else "must be null or from 0 to 1.01",
    "speakers.distinct_margin": lambda v: None if v is None or -2.0 <= v <= 2.0 else "must be null or from -2 to 2",
    "speakers.merge_cosine": lambda v: None if v is None or -1.0 <= v <= 1.01
    else "must be null or from -1 to 1.01 (a cosine similarity; above 1 never merges)",
    "output.max_pause_seconds": lambda v: None if 0.05 <= v <= 3600 else "must be from 0.05 to 3600",
    "watch.settle_seconds": lambda v: None if v >= 0 else "must be >= 0",
    "watch.rescan_seconds": lambda v: None if v > 0 else "must be > 0",
    "watch.incomplete_wait_seconds": lambda v: None if v >= 0 else "must be >= 0",
    "watch.unfinished_wav_seconds": lambda v: None if 0 <= v <= 86400 * 7 else "must be from 0 to 604800",
    "watch.extensions": lambda v: None if v else "must not be empty",
    "jobs.max_attempts": lambda v: None if v >= 1 else "must be >= 1",
    "jobs.lease_seconds": lambda v: None if v > 0 else "must be > 0",
    "jobs.heartbeat_seconds": lambda v: None if v > 0 else "must be > 0",
    "notify.template": lambda v: None if v in ("json", "wecom", "feishu", "slack")
    else "must be one of json, wecom, feishu, slack",
    "notify.events": lambda v: None if set(v) <= set(NOTIFY_EVENTS)
    else f"may contain only {', '.join(NOTIFY_EVENTS)}",
    "notify.webhook_url": lambda v: None if v is None or v.startswith(("http://", "https://"))
    else "must be an http(s) URL or null",
    "daemon.min_free_mb": lambda v: None if v >= 0 else "must be >= 0",
    "daemon.roles": lambda v: _check_roles(v),
    "daemon.host": lambda v: None if v is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v)
    else "must be null or a name of letters, digits, '.', '_' and '-' (at most 63)",
    "database.url": lambda v: _check_database_url(v),
    "web.listen": lambda v: None if v is None else listen_problem(v),
    "web.token": lambda v: None if v is None or (len("".join(v.split())) >= 16 and v.isprintable())
    else "must be null or at least 16 characters other than spaces (and no control characters)",
    "web.max_upload_mb": lambda v: None if v >= 1 else "must be >= 1",
    "daemon.log_level": lambda v: None
    if v.upper() in ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
    else "must be one of TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL",
    **SUMMARY_RULES,
}


def device_problem(value: str) -> str | None:
    """Why `value` is not a device setting (`workers.device`, `spkd transcribe --device`), or None."""
    if value == "auto" or value in DEVICE_KINDS:
        return None
    kind, _, index = value.partition(":")
    if kind in ("cuda", "rocm", "xpu") and index.isdigit():
        return None
    return "must be auto, cuda, cuda:N, rocm, rocm:N, xpu, xpu:N, mps or cpu"


def _check_workers_device(value: str | tuple[str, ...]) -> str | None:
    """`workers.device`: one device setting, or a list of GPUs of one kind, each once."""
    if isinstance(value, str):
        return device_problem(value)
    if not value:
        return "must not be an empty list (use \"auto\")"
    if any(device_problem(v) is not None or ":" not in v for v in value):
        return "a list must name GPUs by index, e.g. [\"cuda:0\", \"cuda:2\"]"
    if len({v.partition(":")[0] for v in value}) != 1:
        return "a list must name GPUs of one kind"
    if len(set(value)) != len(value):
        return "names a GPU twice"
    return None


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`127.0.0.1:8080`, `localhost:8080`, `[::1]:8080`, `0.0.0.0:8080`) as
    (host, port); ValueError saying what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    if not host or not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise ValueError(f"not a host name or address: {host!r}")
    return host, int(port_text)


def listen_problem(value: str) -> str | None:
    """Why `value` is not a `web.listen` / `spkd web --listen` address, or None."""
    try:
        parse_listen(value)
    except ValueError as exc:
        return str(exc)
    return None


ROLES = ("watcher", "workers")
# Keys whose values an error message never repeats.
SECRET_KEYS = ("web.token", "summary.api_key_env")  # the latter: in case the key itself was written there


def _check_roles(value: tuple[str, ...]) -> str | None:
    bad = [v for v in value if v not in ROLES]
    if bad:
        return f"unknown role(s) {bad}; known: {list(ROLES)}"
    if not value:
        return "must name at least one of watcher, workers"
    if len(set(value)) != len(value):
        return "names a role twice"
    return None


def _check_database_url(value: str | None) -> str | None:
    if value is None:
        return None
    # The URL's scheme as SQLAlchemy reads it (`backend[+driver]://…`), parsed here so that
    # the configuration does not import the store; a port must be a number.
    match = _DATABASE_URL.match(value)
    if match and match["scheme"].split("+")[0] in ("sqlite", "postgresql", "postgres") \
            and (match["port"] is None or match["port"].isdecimal()):
        return None
    return "must be null (SQLite under paths.state), sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"


_DATABASE_URL = re.compile(r"(?P<scheme>[\w+]+)://(?:[^:/]*(?::[^@]*)?@)?(?:(?:\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?)?")


def _check_priority(value: tuple[str, ...]) -> str | None:
    bad = [v for v in value if v not in DEVICE_KINDS]
    if bad:
        return f"unknown device kind(s) {bad}; known: {list(DEVICE_KINDS)}"
    if not value:
        return "must not be empty"
    return None


def _check_channels(value: str | tuple[str, ...]) -> str | None:
    from daemon.errors import OptionsError
    from daemon.options import validate_channels  # the sidecar's rule, one copy

    try:
        validate_channels(value, source="audio")
    except OptionsError as exc:
        return str(exc).removeprefix("audio: channels: ")
    return None


def _check_formats(value: tuple[str, ...]) -> str | None:
    from daemon.writers import FORMATS  # writers are pure and cheap to import

    bad = [v for v in value if v not in FORMATS]
    if bad:
        return f"unknown format(s) {bad}; known: {list(FORMATS)}"
    if not value:
        return "must not be empty"
    return None


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Check `value` against a dataclass field's annotation, converting lists to tuples
    and strings to paths; raise ConfigError naming `key` on mismatch."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner[:-1]:  # e.g. str | tuple[str, ...]: the first that fits
            try:
                return _coerce(key, candidate, value)
            except ConfigError:
                pass
        return _coerce(key, inner[-1], value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_shown(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(f"{key}: expected an integer of at most {MAX_INT}, got {value}")
            return value
        raise ConfigError(f"{key}: expected an integer, got {_shown(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {_shown(value)}")
            limit = MAX_SECONDS if key.endswith("_seconds") else MAX_DAYS if key.endswith("_days") else None
            if limit is not None and abs(number) > limit:
                raise ConfigError(f"{key}: expected at most {limit:.0f}, got {_shown(value)}")
            return number
        raise ConfigError(f"{key}: expected a number, got {_shown(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_shown(value)}")
    if annotation is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise ConfigError(f"{key}: expected a path (a non-empty string), got {_shown(value)}")
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {_shown(value)}")
        return tuple(value)
    raise ConfigError(f"{key}: unsupported type {annotation}")  # a bug in this module


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: expected an object, got {_shown(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known keys of {name}: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        values[key] = _coerce(full, hints[key], value)
        for rule in (_VALUE_RULES.get(full), LIMIT_RULES.get(full)):  # its rule, then its upper bound
            problem = rule(values[key]) if rule is not None else None
            if problem:
                shown = "a hidden value" if full in SECRET_KEYS else _shown(_plain(values[key]))
                raise ConfigError(f"{full}: {problem} (got {shown})")
    return cls(**values)


def is_override(name: str) -> bool:
    """Whether the environment variable `name` is meant as a configuration override (it
    starts with SPKD_ and is none of NON_CONFIG_ENV and NON_CONFIG_ENV_PREFIXES)."""
    return name.startswith(ENV_PREFIX) and name not in NON_CONFIG_ENV and not name.startswith(NON_CONFIG_ENV_PREFIXES)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`SPKD_WORKERS_COUNT=2` overrides workers.count; values are parsed as JSON when they
    parse (numbers, true/false, null, lists), else taken as strings. Any other SPKD_
    variable that is not in NON_CONFIG_ENV (or NON_CONFIG_ENV_PREFIXES) is refused."""
    hints = typing.get_type_hints(Config)
    sections = {f.name: {k.name for k in fields(hints[f.name])} for f in _sections()}
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(env):
        if not is_override(name):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in sections:
            raise ConfigError(f"{name}: not a configuration key: overrides are SPKD_<SECTION>_<KEY> (sections: "
                              f"{', '.join(sections)}; e.g. SPKD_WORKERS_COUNT for workers.count), and spkd's own "
                              f"variables are {', '.join(NON_CONFIG_ENV)}")
        if key not in sections[section]:
            raise ConfigError(f"{name}: {section}.{key or '?'} is not a configuration key (keys of {section}: "
                              f"{', '.join(sorted(sections[section]))})")
        text = env[name]
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        out.setdefault(section, {})[key] = value
    return out


def from_dict(raw: Mapping[str, Any], *, base_dir: Path, source: Path | None = None,
              env: Mapping[str, str] | None = None) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError("the configuration must be a JSON object")
    section_types = {f.name: typing.get_type_hints(Config)[f.name] for f in _sections()}
    unknown = sorted(set(raw) - set(section_types) - {"$comment"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (known sections: {', '.join(section_types)})")
    merged: dict[str, dict[str, Any]] = {k: dict(v) if isinstance(v, Mapping) else v
                                         for k, v in raw.items() if k != "$comment"}
    for section, values in _env_overrides(env if env is not None else os.environ).items():
        target = merged.setdefault(section, {})
        if isinstance(target, dict):
            target.update(values)
    built = {name: _build_section(name, cls, merged.get(name, {})) for name, cls in section_types.items()}
    config = Config(**built, source=source)
    check_config(config)  # bounds between keys (daemon.limits)
    return _resolved(config, base_dir)


def _resolved(config: Config, base_dir: Path) -> Config:
    def absolute(p: Path) -> Path:
        # `..` and symbolic links resolved: the "inside the inbox" checks compare real places.
        return (p if p.is_absolute() else base_dir / p).resolve()

    def model_setting(value: str | None) -> str | None:
        # a relative model path (`./cam++`) is relative to this config, like every path
        # here; a bare name (`cam++`) stays a name under models.dir
        if value and is_model_path(value) and not value.startswith("~") and not os.path.isabs(value):
            return str(absolute(Path(value)))
        return value

    paths = PathsConfig(**{f.name: absolute(getattr(config.paths, f.name)) for f in fields(PathsConfig)})
    models = ModelsConfig(**{**{f.name: getattr(config.models, f.name) for f in fields(ModelsConfig)},
                             "dir": absolute(config.models.dir),
                             **{role: model_setting(getattr(config.models, role))
                                for role in ("asr", "vad", "punc", "spk")}})
    resolved = Config(**{**{f.name: getattr(config, f.name) for f in fields(Config)},
                         "paths": paths, "models": models, "summary": summary_resolved(config.summary, base_dir)})
    _check_folders(resolved)
    return resolved


def _check_folders(config: Config) -> None:
    """No folder lies inside another (the state folder may hold the others): the inbox is
    a drop zone (a folder spkd writes into there loops its outputs back in as jobs), the
    voices folder enrols every folder in it as a voice, retention empties archive/."""
    kept = ("inbox", "outbox", "archive", "failed", "spool", "voices")
    for name, other in ((n, o) for n in (*kept, "state") for o in kept if o != n):
        path, there = getattr(config.paths, name), getattr(config.paths, other)
        if path == there or there in path.parents:
            raise ConfigError(f"paths.{name}: {path} {'is also' if path == there else 'lies inside'} paths.{other} "
                              f"({there}); spkd folders must not lie inside each other")


def load(path: Path | str | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Load a config file (default: `$SPKD_CONFIG`, else ./config.json)."""
    environ = env if env is not None else os.environ
    if path is None:
        path = environ.get("SPKD_CONFIG") or "config.json"
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return from_dict(raw, base_dir=path.parent, source=path, env=environ)
