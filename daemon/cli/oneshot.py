"""`spkd transcribe FILE…`: the daemon's pipeline for files given on the command line,
without the daemon or the inbox, and without the database unless `--voices` asks for
the voice library (read from the configured database, opened read-only).

The same engine (FunASR, the config's models), the same writers (the config's output
formats unless `--formats`), the same per-file options as a sidecar (`speakers`,
`hotwords`, `expected_speakers`), validated the same way, and with `--voices` the same
naming as the daemon's (daemon.voices.matching.name_for_job). The inputs are looked at
before the models load (seconds): a missing, empty or unreadable file is told at once. Each file gets a progress bar on stderr (when
stderr is a terminal) and one result line; the paths of the written files go to
stdout, one per line. A file that fails is reported with its reason and the others
go on; the exit status says whether any failed.

Outputs go into `out_dir`, or beside each input when it is None, named like the
daemon names them: `<file name without suffix><format extension>`; two inputs of one
run that would write the same name get ` (2)`, ` (3)`, … as the daemon does.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Sequence

from daemon import files, options, writers
from daemon.jobs import outputs
from daemon.config import Config, device_problem
from daemon.errors import (
    AudioError,
    ConfigError,
    DeviceError,
    EmptyFileError,
    NotRegularFileError,
    OptionsError,
    SpkdError,
    UnreadableError,
    VoiceError,
    as_spkd_error,
)

if TYPE_CHECKING:
    from daemon.store import SampleRow

__all__ = ["FileResult", "check_options", "choose_device", "input_problem", "load_engine", "output_stems",
           "parse_list", "read_voice_library", "transcribe_files"]


@dataclass
class FileResult:
    path: Path
    outputs: list[Path] = field(default_factory=list)
    error_kind: str | None = None
    error: str | None = None
    summary: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def failed(self, error: SpkdError) -> None:
        self.error_kind, self.error = error.kind, error.message


def parse_list(values: Sequence[str] | None) -> list[str] | None:
    """`--formats json,srt --formats html` -> ["json", "srt", "html"]; None when not given."""
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def check_options(config: Config, *, formats: Sequence[str] | None, speakers: int | None,
                  hotwords: Sequence[str] | None, expected_speakers: Sequence[str] | None = None) -> dict[str, Any]:
    """The run's options, validated like a sidecar file (OptionsError names the bad one)."""
    raw: dict[str, Any] = {"formats": list(formats) if formats is not None else list(config.output.formats)}
    if speakers is not None:
        raw["speakers"] = speakers
    if hotwords:
        raw["hotwords"] = list(hotwords)
    if expected_speakers is not None:
        raw["expected_speakers"] = list(expected_speakers)
    channels = config.audio.channels
    raw["channels"] = channels if isinstance(channels, str) else list(channels)
    return options.validate(raw, source="command line")


def output_stems(paths: Sequence[Path], out_dir: Path | None) -> list[tuple[Path, str]]:
    """(directory, stem) per input; colliding names in one directory get ` (2)`, …"""
    used: set[tuple[Path, str]] = set()
    result = []
    for path in paths:
        directory = Path(out_dir) if out_dir is not None else path.parent
        where = directory.resolve()
        stem = files.numbered(path.stem if path.suffix else path.name,
                              lambda name: any((where, s) in used for s in outputs.clashing_stems(name)),
                              max_bytes=files.NAME_MAX_BYTES - outputs.EXTENSION_MAX_BYTES)
        used.add((where, stem))
        result.append((directory, stem))
    return result


def input_problem(path: Path) -> SpkdError | None:
    """What is wrong with an input that can be told without the models (which take
    seconds to load): missing, not a file, empty, unreadable. A symbolic link is
    followed: the user named it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return AudioError("no such file")
    except OSError as exc:
        return UnreadableError(f"cannot be read: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return NotRegularFileError(f"{files.describe_mode(info.st_mode)}, not a file")
    if info.st_size == 0:
        return EmptyFileError("the file is empty (0 bytes)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return UnreadableError(f"cannot be read: {exc.strerror or exc}")
    return None


def read_voice_library(config: Config, names: Sequence[str] | None = None) -> list["SampleRow"]:
    """The voice library's samples (of the voices `names` only, when given) from the
    configured job database, opened read-only: never created, migrated or written.
    VoiceError when there is no database; ConfigError when its schema is not this spkd's."""
    from daemon.store import Store
    from daemon.store.db import check_usable, current_revision, head_revision, sqlite_path, translate_unusable

    url = config.database_url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise VoiceError(f"--voices: there is no job database at {path} (database.url), so no voice library; "
                         "enrol voices with `spkd voices add NAME FILE…` or the daemon's voices folder")
    check_usable(url, thorough=False)
    with translate_unusable(url):
        current, head = current_revision(url, read_only=True), head_revision()
        if current is None:
            raise ConfigError("--voices: the job database has no spkd tables yet, so no voice library: run "
                              "`spkd db upgrade`, then enrol voices")
        if current != head:
            raise ConfigError(f"--voices: the job database is at schema revision {current}, this spkd needs "
                              f"{head}: run `spkd db upgrade`")
        store = Store(url, host=config.host, read_only=True)
        try:
            return store.voice_samples_of(names=names)
        finally:
            store.close()


def choose_device(config: Config, wanted: str | None) -> Any:
    """The SlotPlan of one slot on `wanted` (default: workers.device of the config).
    `auto` walks workers.device_priority over what devices.detect() finds; `cpu` probes nothing."""
    import dataclasses

    from daemon.service import devices

    device = wanted or config.workers.device  # the config's may be a list of GPUs: its first one is used
    problem = device_problem(wanted) if wanted else None
    if problem:
        raise OptionsError(f"--device: {problem}")
    workers = dataclasses.replace(config.workers, device=device, count=1, per_device=1)
    if device == "cpu":
        inventory = devices.Inventory(cpu_cores=devices.cpu_cores())
    else:
        inventory = devices.detect()
    return devices.plan_slots(workers, inventory)[0]


class _Progress:
    """One tqdm bar per file over its stages, refreshed twice a second so that the
    elapsed time moves while the engine works. Without a terminal: nothing."""

    STAGES = ("hashing", "transcribing", "writing")

    def __init__(self, label: str, enabled: bool, stream: IO[str]) -> None:
        self.bar = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.STAGES), desc=label, file=stream, leave=True, dynamic_ncols=True,
                        bar_format="{desc}: {bar:20} {n_fmt}/{total_fmt} [{elapsed}]{postfix}")
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            if self.bar is not None:
                self.bar.refresh()

    def stage(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self, text: str) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.close()


def _say(message: str, stream: IO[str], bars: bool) -> None:
    if bars:
        from tqdm import tqdm

        tqdm.write(message, file=stream)
    else:
        print(message, file=stream, flush=True)


@contextlib.contextmanager
def _quiet_stdout(stream: IO[str]) -> Iterator[None]:
    """FunASR prints to stdout; stdout is for the paths of the written files."""
    with contextlib.redirect_stdout(stream):
        yield


def _setup_logging(stream: IO[str], bars: bool) -> None:
    from loguru import logger

    from daemon.logs import route_std_logging

    logger.remove()
    logger.add(lambda m: _say(str(m).rstrip("\n"), stream, bars), level="WARNING",
               format="{level}: {message}")
    route_std_logging()  # FunASR's warnings as ours, its chatter dropped


def load_engine(config: Config, device: str | None, say: Any) -> Any:
    """Load the engine on the chosen device; a device that cannot load falls back to the CPU
    (when workers.fallback is on), as a worker slot would."""
    from daemon.engine.transcriber import load_configured
    from daemon.engine.models import import_funasr

    plan = choose_device(config, device)
    for key, value in plan.env.items():
        if key.endswith("_NUM_THREADS"):
            os.environ.setdefault(key, value)  # the caller's thread settings win
        else:
            os.environ[key] = value  # device visibility, set before torch is imported
    candidates = [plan.device] + ([d for d in plan.fallbacks if d == "cpu"] if config.workers.fallback else [])
    say(f"loading models on {plan.device} ({plan.reason}) …")
    import_funasr()
    for i, dev in enumerate(candidates):
        try:
            engine = load_configured(config, dev, threads=plan.threads)  # FunASR's prints: daemon.logs
        except DeviceError as exc:
            if i + 1 == len(candidates):
                raise
            say(f"cannot use {dev}: {exc}; falling back to {candidates[i + 1]}")
            continue
        say(f"models loaded on {engine.device} in {engine.load_seconds:.1f} s")
        return engine
    raise AssertionError("unreachable")  # pragma: no cover


def transcribe_files(
    config: Config,
    paths: Sequence[Path],
    *,
    out_dir: Path | None = None,
    formats: Sequence[str] | None = None,
    speakers: int | None = None,
    hotwords: Sequence[str] | None = None,
    device: str | None = None,
    progress: bool | None = None,
    voices: bool = False,
    expected_speakers: Sequence[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> list[FileResult]:
    """Transcribe each file and write its outputs; one FileResult per input, in order.
    `voices` (or `expected_speakers`, the only candidates): speakers named after the voice
    library of the configured database, read-only, as the daemon names them.

    The inputs are looked at first: those that are missing, empty or unreadable are
    reported at once, and when none is left nothing else is done (no models, no database).
    Raises (before any file is touched) OptionsError for bad options, VoiceError or
    ConfigError for a voice library that cannot be read, and ModelsMissingError for
    missing models; every per-file problem is a failed result."""
    from daemon.engine.transcriber import transcribe_with_retries
    from daemon.engine.models import configured_model_dirs, require_model_dirs
    from daemon.voices.matching import name_for_job

    out = out or sys.stdout
    err = err or sys.stderr
    bars = err.isatty() if progress is None else progress
    _setup_logging(err, bars)

    def say(message: str) -> None:
        _say(message, err, bars)

    opts = check_options(config, formats=formats, speakers=speakers, hotwords=hotwords,
                         expected_speakers=expected_speakers)

    paths = [Path(p) for p in paths]
    results = [FileResult(path=p) for p in paths]
    labels = [f"[{i}/{len(paths)}] {p.name}" for i, p in enumerate(paths, start=1)]
    for r, label in zip(results, labels):  # told at once: the models take seconds to load
        problem = input_problem(r.path)
        if problem is not None:
            r.failed(problem)
            say(f"FAILED {label}: {r.error_kind}: {r.error}")
    targets = output_stems(paths, Path(out_dir) if out_dir is not None else None)

    engine = None
    samples: list[SampleRow] | None = None
    if any(r.ok for r in results):
        if voices or expected_speakers is not None:
            samples = read_voice_library(config, opts.get("expected_speakers"))
            if not samples:
                wanted = opts.get("expected_speakers")
                say(f"--voices: {'none of ' + ', '.join(wanted) + ' is' if wanted else 'no voice is'} enrolled "
                    "in the voice library; speakers stay Speaker1, Speaker2, …")
        require_model_dirs(configured_model_dirs(config.models))
        engine = load_engine(config, device, say)

    for r, label, (directory, stem) in zip(results, labels, targets):
        if not r.ok:
            continue
        bar = _Progress(label, bars, err)
        started = time.monotonic()
        try:
            bar.stage("hashing")
            sha256 = files.sha256_file(r.path)
            bar.advance()
            bar.stage("transcribing")
            with _quiet_stdout(err):
                transcript = transcribe_with_retries(engine, r.path, opts, source_name=r.path.name)
            transcript = transcript.for_source(r.path, name=r.path.name, sha256=sha256)
            if samples:
                transcript = name_for_job(config, transcript, samples, opts)
            bar.advance()
            bar.stage("writing")
            r.outputs = writers.publish(transcript, directory=directory, stem=stem, formats=opts["formats"])
            bar.advance()
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            r.failed(as_spkd_error(exc))
        elapsed = time.monotonic() - started
        if r.ok:
            n_spk = len(transcript.speakers)
            shown = f" ({', '.join(s.display for s in transcript.speakers)})" if samples is not None else ""
            r.summary = (f"{transcript.audio_seconds:.1f} s audio, {len(transcript.segments)} sentences, "
                         f"{n_spk} speaker{'' if n_spk == 1 else 's'}{shown}, {elapsed:.1f} s")
            bar.close("done")
            say(f"ok     {label}: {r.summary}")
            for path in r.outputs:
                print(path, file=out, flush=True)
        else:
            bar.close("FAILED")
            say(f"FAILED {label}: {r.error_kind}: {r.error}")
        if engine is not None:
            engine.release()

    failed = [r for r in results if not r.ok]
    if len(paths) > 1 or failed:
        say(f"{len(paths)} file{'' if len(paths) == 1 else 's'}: {len(paths) - len(failed)} done, "
            f"{len(failed)} failed")
    return results
