"""CPU-side overhead taken out of FunASR 1.4.16's own pipeline, results unchanged.

A profile of one job on a GPU (300 s of two-voice audio, one H200) had the GPU busy for
about a tenth of the time; the rest was host work around small device calls. Each hook
below sits on one of FunASR's own objects (an instance attribute, like the engine's
empty-batch guard and daemon/engine/speaker_batching.py), changes *where* a tensor lives or how
many threads a step may use, and leaves every computation to FunASR's code:

* **cluster threads**: `AutoModel.cb_model` (ClusterBackend: cosine similarities, a
  pruning loop, `scipy.linalg.eigh`, k-means on a few hundred rows) runs with the
  BLAS/OpenMP pools limited (threadpoolctl). On a few hundred embeddings, 16 threads
  spend most of the call waking each other (219 ms against 17.5 ms with one thread on
  the GPU machine), and a CPU worker's threads are no better. The pools are restored
  after the call.
* **VAD frame loop in locals**: FSMN-VAD's per-frame state machine (`DetectCommonFrames`,
  `DetectLastFrames`: frame states, the window, speech start and end, the max-silence and
  max-segment rules) runs as daemon/engine/vad_loop.py's `detect_frames`, the same
  decisions over plain Python values instead of tensor reads, enums and dictionary look-ups
  per 10-ms frame (0.40 s of a 300-s job on the GPU machine, 44 % of it). On every device.
* **VAD scores on the host**: FSMN-VAD's `GetFrameState` reads `scores[0][t][0].item()`
  for every 10-ms frame (30,000 device syncs for 5 minutes of audio) from the scores its
  encoder returns per 60-s chunk. The encoder's output is copied to the host once per
  chunk; `ComputeScores` concatenates and `GetFrameState` reads host tensors.
* **Punctuation decisions on the host**: CT-Transformer's `inference` reads its argmax
  tensor element by element (`self.punc_list[punctuations[i]]`, two or three reads a token
  in its search for the last sentence end and its rebuilding of the text): on a GPU each
  read is a device sync, about a thousand of them for 5 minutes of speech. `punc_forward`
  now takes the same `topk(1)` on the device and hands `inference` a host tensor that is
  one-hot at those indices, so FunASR's own `topk(1)` of it finds exactly the same ones
  (a tie among logits is broken by the device's `topk`, as in FunASR) and its loops read
  host memory. On devices only; the logits are used for nothing else there.
* **ASR timestamps on the host**: SeACo Paraformer's `inference` hands the upsampled
  CIF alphas and peaks (`calc_predictor_timestamp`) to `ts_prediction_lfr6_standard`,
  which loops over frames (`cif_wo_hidden`: several kernel launches per frame when the
  peak count does not match the tokens). They are copied to the host once per batch.
* **CIF re-firing on numpy**: when the peaks do not match the token count,
  `ts_prediction_lfr6_standard` re-integrates the rescaled alphas with
  `timestamp_tools.cif_wo_hidden`, three torch operations per 20-ms frame (0.44 s of a
  300-s job on the GPU machine with random weights, which take that path for every
  segment; real models take it now and then). While spkd's ASR `inference` runs, that
  module function is swapped for `cif_fires_host`, the same float32 recurrence on numpy
  scalars: an add, a compare against float32(threshold), a subtract, in FunASR's order,
  so the fires are the same bits. The swap lasts for the call only (a bare AutoModel
  loaded in the same process, as bench.stages does, keeps FunASR's function).
* **The predictor's CIF on numpy**: every ASR batch also runs the CIF predictor's own
  loops over frames (`bicif_paraformer.cif_predictor.cif`, ~14 torch operations per
  60-ms frame for the acoustic embeddings, and its `cif_wo_hidden` twice more for the
  timestamps, at 3x the frame rate): on the GPU machine with two workers these loops
  were a third of the ASR stage's host time (kernel launches of a few elements each).
  They are swapped in the same way, for `cif_fires_host` and `cif_host`, which do the
  same float32 operations per element in FunASR's order (a multiply, then an add: no
  fused multiply-add, since FunASR's are two separate kernels) and add each token's
  frames up in time order, so the embeddings are the same bits; the one reduction in
  `cif` (the token count, `alphas.sum(-1)`) stays on the device it was on.

The element-wise arithmetic of those steps is IEEE float32 on either device, so host and
device give the same bits. One reduction moves: when the peaks do not match the token
count, `ts_prediction_lfr6_standard` rescales the alphas by their sum, and a float32 sum
on the CPU may differ from the GPU's in the last bit; tests/integration and
`bench.stages` compare whole results on long, varied recordings for that reason.

Relied on (FunASR 1.4.16, checked by `check_support` and pinned by tests/integration/
test_pipeline_hooks.py): `vad_model.encoder(feats, cache=...)` returning the [B, T, D]
scores used only by `ComputeScores`/`GetFrameState`/`DropCachedFrames`;
`FsmnVADStreaming.forward` calling `self.DetectCommonFrames(cache=...)` and
`self.DetectLastFrames(cache=...)` (vad_loop.py names what it relies on inside them);
`SeacoParaformer.inference` using `calc_predictor_timestamp`'s `us_alphas`/`us_peaks`
only as inputs to `ts_prediction_lfr6_standard`; `cb_model(X, oracle_num=...)`;
`CifPredictorV3.forward` and `get_upsample_timestamp` calling `cif` and `cif_wo_hidden`
through the globals of `funasr.models.bicif_paraformer.cif_predictor`, and
`ts_prediction_lfr6_standard` calling `cif_wo_hidden` through those of
`funasr.utils.timestamp_tools`. On any other FunASR version the engine warns and leaves
FunASR's code alone.

Also here: `release_load_memory`, which hands the heap that FunASR's loader freed back
to the operating system (its `load_pretrained_model` holds the checkpoint twice, through
`torch.load` and `copy.deepcopy`, beside the model's own parameters; glibc keeps most of
those freed pages in its arenas otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.engine.speaker_batching import TESTED_FUNASR_VERSIONS

if TYPE_CHECKING:
    import numpy as np

CLUSTER_THREADS = 1  # BLAS/OpenMP threads for FunASR's clusterer (see the module docstring)


@dataclass
class PipelineHooks:
    """What `install` put on one AutoModel; `uninstall` puts FunASR's objects back."""

    names: list[str] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self.names.clear()


def check_support(version: str, auto_model: Any) -> str | None:
    """None when the hooks can go on this AutoModel, else why not."""
    if version not in TESTED_FUNASR_VERSIONS:
        return (f"FunASR {version} is not a tested version ({', '.join(TESTED_FUNASR_VERSIONS)}); "
                "using FunASR's own VAD, timestamp and clustering code as it is")
    vad = getattr(auto_model, "vad_model", None)
    if vad is not None and not callable(getattr(getattr(vad, "encoder", None), "forward", None)):
        return "VAD model has no encoder.forward"
    if _is_fsmn_vad(vad) and not all(callable(getattr(type(vad), n, None))
                                     for n in ("DetectCommonFrames", "DetectLastFrames")):
        return "FSMN-VAD has no DetectCommonFrames/DetectLastFrames"
    asr = getattr(auto_model, "model", None)
    if asr is not None and type(asr).__name__ == "SeacoParaformer":
        if not callable(getattr(asr, "calc_predictor_timestamp", None)):
            return "SeACo Paraformer has no calc_predictor_timestamp"
        try:
            from funasr.models.bicif_paraformer import cif_predictor
            from funasr.utils import timestamp_tools
        except ImportError as exc:
            return f"FunASR's CIF modules missing: {exc}"
        if not all(callable(getattr(m, n, None)) for m, n in ((cif_predictor, "cif"), (cif_predictor, "cif_wo_hidden"),
                                                               (timestamp_tools, "cif_wo_hidden"))):
            return "FunASR's CIF functions (cif_predictor.cif, cif_wo_hidden) missing"
    try:
        import threadpoolctl  # noqa: F401
    except ImportError as exc:
        return f"threadpoolctl missing: {exc}"
    return None


def install(auto_model: Any, version: str, device: str) -> PipelineHooks:
    """Put the hooks on a loaded AutoModel (nothing, with a warning, when unsupported)."""
    hooks = PipelineHooks()
    reason = check_support(version, auto_model)
    if reason is not None:
        logger.warning("pipeline hooks off: {}", reason)
        return hooks
    on_device = not str(device).startswith("cpu")
    if getattr(auto_model, "cb_model", None) is not None:
        _limit_cluster_threads(auto_model, hooks)
    if _is_fsmn_vad(getattr(auto_model, "vad_model", None)):
        _vad_frame_loop(auto_model.vad_model, hooks)
    if on_device and getattr(auto_model, "vad_model", None) is not None:
        _vad_scores_to_host(auto_model.vad_model, hooks)
    punc = getattr(auto_model, "punc_model", None)
    if on_device and type(punc).__name__ == "CTTransformer" and callable(getattr(punc, "punc_forward", None)):
        _punctuation_to_host(punc, hooks)
    asr = getattr(auto_model, "model", None)
    if on_device and asr is not None and type(asr).__name__ == "SeacoParaformer" \
            and getattr(asr, "predictor_name", None) == "CifPredictorV3":
        _timestamps_to_host(asr, hooks)
    if asr is not None and type(asr).__name__ == "SeacoParaformer":
        _cif_fires_on_host(asr, hooks)
    logger.debug("pipeline hooks on {}: {}", device, ", ".join(hooks.names) or "none")
    return hooks


# --------------------------------------------------------------------------- hooks


class _LimitedThreads:
    """Stands in for AutoModel.cb_model: FunASR's clusterer with the thread pools limited."""

    def __init__(self, original: Any, threads: int) -> None:
        from threadpoolctl import ThreadpoolController

        self._original = original
        self._threads = threads
        # Built once (it scans the loaded libraries): numpy, scipy, sklearn and torch are
        # all loaded by now, so every BLAS and OpenMP pool the clusterer can use is known.
        self._controller = ThreadpoolController()

    def __call__(self, X: Any, **params: Any) -> Any:
        with self._controller.limit(limits=self._threads):
            return self._original(X, **params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _limit_cluster_threads(auto_model: Any, hooks: PipelineHooks) -> None:
    original = auto_model.cb_model
    auto_model.cb_model = _LimitedThreads(original, CLUSTER_THREADS)

    def undo() -> None:
        auto_model.cb_model = original

    hooks.names.append(f"clustering on {CLUSTER_THREADS} thread(s)")
    hooks._undo.append(undo)


def _is_fsmn_vad(vad_model: Any) -> bool:
    return vad_model is not None and type(vad_model).__name__ == "FsmnVADStreaming"


def _vad_frame_loop(vad_model: Any, hooks: PipelineHooks) -> None:
    from daemon.engine import vad_loop

    hooks._undo.append(vad_loop.hook(vad_model))
    hooks.names.append("VAD frame loop in locals")


def _vad_scores_to_host(vad_model: Any, hooks: PipelineHooks) -> None:
    encoder = vad_model.encoder
    original = encoder.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs).cpu()  # once per chunk; read frame by frame on the host

    encoder.forward = forward
    hooks.names.append("VAD scores on the host")
    hooks._undo.append(lambda: _restore(encoder, "forward"))


def _punctuation_to_host(punc_model: Any, hooks: PipelineHooks) -> None:
    import torch

    original = punc_model.punc_forward

    def punc_forward(*args: Any, **kwargs: Any) -> Any:
        logits, rest = original(*args, **kwargs)
        classes = logits.shape[-1]
        _, chosen = logits.view(-1, classes).topk(1, dim=1)  # FunASR's own call, on the device
        one_hot = torch.zeros(chosen.shape[0], classes).scatter_(1, chosen.cpu(), 1.0)
        return one_hot.view(logits.shape), rest

    punc_model.punc_forward = punc_forward
    hooks.names.append("punctuation decisions on the host")
    hooks._undo.append(lambda: _restore(punc_model, "punc_forward"))


def _timestamps_to_host(asr_model: Any, hooks: PipelineHooks) -> None:
    original = asr_model.calc_predictor_timestamp

    def calc_predictor_timestamp(*args: Any, **kwargs: Any) -> Any:
        ds_alphas, ds_peaks, us_alphas, us_peaks = original(*args, **kwargs)
        return ds_alphas, ds_peaks, us_alphas.cpu(), us_peaks.cpu()

    asr_model.calc_predictor_timestamp = calc_predictor_timestamp
    hooks.names.append("ASR timestamps on the host")
    hooks._undo.append(lambda: _restore(asr_model, "calc_predictor_timestamp"))


# Rows up to this many are integrated element by element on numpy scalars; more rows
# (a GPU worker's batch of VAD segments) one time step at a time across all rows.
SCALAR_ROWS = 4


def _integrate(rows: "np.ndarray", fire_at: "np.float32", drop: "np.float32") -> tuple[Any, Any, Any]:
    """FunASR's CIF recurrence over float32 `rows` [B, T]: per step, completion = 1 -
    integrate, integrate += alpha (recorded as the fire value), and where integrate >=
    fire_at: integrate -= drop and the step's weight is the completion, else alpha.
    Returns (fires, fired, weights), all [B, T]; the same float32 operations in FunASR's
    order, so the same bits."""
    import numpy as np

    fires = np.empty_like(rows)
    fired = np.zeros(rows.shape, dtype=bool)
    weights = np.empty_like(rows)
    one = np.float32(1.0)
    if rows.shape[0] <= SCALAR_ROWS:
        for b in range(rows.shape[0]):
            integrate = np.float32(0.0)
            row, out, fire, weight = rows[b], fires[b], fired[b], weights[b]
            for t, alpha in enumerate(row):
                completion = one - integrate
                integrate = integrate + alpha
                out[t] = integrate
                if integrate >= fire_at:
                    integrate = integrate - drop
                    fire[t] = True
                    weight[t] = completion
                else:
                    weight[t] = alpha
        return fires, fired, weights
    integrate = np.zeros(rows.shape[0], dtype=np.float32)
    for t in range(rows.shape[1]):
        alpha = rows[:, t]
        completion = one - integrate
        integrate = integrate + alpha
        fires[:, t] = integrate
        fire = integrate >= fire_at
        fired[:, t] = fire
        weights[:, t] = np.where(fire, completion, alpha)
        integrate = np.where(fire, integrate - drop, integrate)
    return fires, fired, weights


def cif_fires_host(alphas: Any, threshold: float) -> Any:
    """FunASR's `cif_wo_hidden` (`funasr.utils.timestamp_tools` and
    `funasr.models.bicif_paraformer.cif_predictor` hold the same one) on numpy: the same
    fires, bit for bit.

    FunASR keeps a float32 running sum per row, records it, and takes `threshold` (as
    float32, torch's promotion of a Python scalar against a float32 tensor) off it where
    it reached the threshold. The same three float32 operations on numpy cost a fraction
    of a microsecond each instead of a kernel launch."""
    import numpy as np
    import torch

    if alphas.dtype != torch.float32 or alphas.dim() != 2:
        return _funasr_cif("timestamp_tools.cif_wo_hidden")(alphas, threshold)
    step = np.float32(threshold)
    fires, _fired, _weights = _integrate(alphas.detach().cpu().numpy(), step, step)
    return torch.from_numpy(fires).to(alphas.device)


def cif_host(hidden: Any, alphas: Any, threshold: float) -> Any:
    """`funasr.models.bicif_paraformer.cif_predictor.cif` on numpy: the same acoustic
    embeddings and fires, bit for bit.

    FunASR integrates the alphas as `_integrate` does (firing at `threshold`, dropping
    1.0) and accumulates, per row, frame += weight * hidden[t] (a float32 multiply, then
    an add), recording the frame where the row fires and restarting it at (alpha -
    weight) * hidden[t]; then it keeps each row's fired frames, zero-padded to the
    largest rounded token count. Here the same steps run across all rows at once on
    numpy, each token's frame copied out where its row fires. Any input FunASR would
    reject or that is not float32 goes to FunASR's own function."""
    import numpy as np
    import torch

    original = _funasr_cif("cif_predictor.cif")
    if (hidden.dtype != torch.float32 or alphas.dtype != torch.float32 or hidden.dim() != 3
            or alphas.shape != hidden.shape[:2] or 0 in hidden.shape):
        return original(hidden, alphas, threshold)
    # The one reduction, where FunASR computes it (a GPU's sum may differ in the last bit).
    max_label_len = int(torch.round(alphas.sum(-1)).int().max())
    h, rows = hidden.detach().cpu().numpy(), alphas.detach().cpu().numpy()
    fires, fired, weights = _integrate(rows, np.float32(threshold), np.float32(1.0))
    batch, frames, size = h.shape
    if int(fired.sum(axis=1).max()) > max_label_len:  # FunASR's zero padding fails here: let it say so
        return original(hidden, alphas, threshold)
    embeds = np.zeros((batch, max_label_len, size), dtype=np.float32)
    tokens = np.zeros(batch, dtype=np.int64)
    frame = np.zeros((batch, size), dtype=np.float32)
    for t in range(frames):
        frame = frame + weights[:, t, None] * h[:, t]  # FunASR: frame += cur[:, None] * hidden[:, t, :]
        where = np.flatnonzero(fired[:, t])
        if where.size:
            embeds[where, tokens[where]] = frame[where]
            tokens[where] += 1
            frame[where] = (rows[where, t] - weights[where, t])[:, None] * h[where, t]  # remainds * hidden
    device = hidden.device
    return torch.from_numpy(embeds).to(device), torch.from_numpy(fires).to(device)


# FunASR's own functions, kept when the swap is first made (see cif_fires_host, cif_host).
_ORIGINAL_CIF: dict[str, Any] = {}


def _funasr_cif(key: str) -> Any:
    """FunASR's own function of that key, also while ours stand in its place."""
    if key not in _ORIGINAL_CIF:  # never swapped yet, so the module still holds FunASR's
        from funasr.models.bicif_paraformer import cif_predictor
        from funasr.utils import timestamp_tools

        module = timestamp_tools if key.startswith("timestamp_tools.") else cif_predictor
        _ORIGINAL_CIF[key] = getattr(module, key.partition(".")[2])
    return _ORIGINAL_CIF[key]


def _cif_fires_on_host(asr_model: Any, hooks: PipelineHooks) -> None:
    from funasr.models.bicif_paraformer import cif_predictor
    from funasr.utils import timestamp_tools

    # (module, its name, FunASR's function's key, ours: looked up when the call starts)
    swaps = ((timestamp_tools, "cif_wo_hidden", "timestamp_tools.cif_wo_hidden", "cif_fires_host"),
             (cif_predictor, "cif_wo_hidden", "cif_predictor.cif_wo_hidden", "cif_fires_host"),
             (cif_predictor, "cif", "cif_predictor.cif", "cif_host"))
    for _, _, key, _ in swaps:
        _funasr_cif(key)
    had_own = "inference" in vars(asr_model)  # the engine's empty-batch guard, say
    previous = asr_model.inference

    def inference(*args: Any, **kwargs: Any) -> Any:
        for module, name, _, ours in swaps:
            setattr(module, name, globals()[ours])
        try:
            return previous(*args, **kwargs)
        finally:
            for module, name, key, _ in swaps:
                setattr(module, name, _ORIGINAL_CIF[key])

    inference.__wrapped__ = previous  # type: ignore[attr-defined]
    asr_model.inference = inference

    def undo() -> None:
        if had_own:
            asr_model.inference = previous
        else:
            _restore(asr_model, "inference")

    hooks.names.append("CIF on numpy")
    hooks._undo.append(undo)


def _restore(owner: Any, name: str) -> None:
    with contextlib.suppress(AttributeError):
        delattr(owner, name)  # the instance attribute goes; the class's method shows again


# --------------------------------------------------------------------------- memory


def release_load_memory() -> bool:
    """Return the heap freed while loading to the operating system (glibc only).

    True when it ran. Harmless to call at any time; costs a few milliseconds."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


__all__ = ["CLUSTER_THREADS", "PipelineHooks", "check_support", "cif_fires_host", "cif_host", "install",
           "release_load_memory"]
