"""Batched CAM++ speaker embeddings inside FunASR's own pipeline.

FunASR 1.4.16's `AutoModel.inference_with_vad` cuts every VAD segment into 1.5-s
windows (`funasr.models.campplus.utils.sv_chunk`, shift 0.75 s, the last window zero
padded to 1.5 s) and calls the speaker model once per window (`spk_kwargs` has no
batch size, so `AutoModel.inference` runs batches of one): ~350 forward calls of a few
milliseconds each for 5 minutes of audio, which on a GPU is launch-bound and dominates
the whole job. The embeddings are only *used* after the ASR loop, when the
concatenated `[N, D]` tensor goes into `AutoModel.cb_model` (ClusterBackend) and then,
as numpy, into `postprocess` / `distribute_spk`.

So, with no copy of FunASR's code, this module

1. replaces the speaker model's `inference` (an instance attribute, like the engine's
   empty-batch guard) while a job runs: it keeps each window, computes nothing, and
   returns a *placeholder* embedding row per window whose every value is the window's
   id; FunASR concatenates those rows exactly as it would the real ones;
2. computes the real embeddings in large batches: windows grouped by sample count
   (so no padding changes any result), the features of a whole batch from one call of
   FunASR's own Kaldi fbank (`funasr.utils.fbank`, on the GPU of a CUDA worker; see
   `SpeakerBatcher.features`) instead of `extract_feature`'s one call per window, the
   model's own `forward`; a full batch is computed as soon as it is collected, so
   memory stays bounded on long recordings;
3. wraps `cb_model`: before clustering it fills the placeholder rows *in place* with
   the real embeddings (the tensor FunASR hands to the clusterer is the very tensor it
   later turns into numpy for `postprocess`, because the placeholders live on the
   CPU), then calls FunASR's ClusterBackend unchanged.

4. lets go of each window's samples once they are queued: FunASR keeps every window
   (`[start, end, samples]`, views of its copy of the VAD segment) in `all_segments`
   until the job ends, though after the speaker model it reads only their times
   (`sorted` by start, `postprocess`); so the speech part of the signal stayed in
   memory a second time for the whole job (0.23 GB an hour of speech). A wrapper
   around the module's `sv_chunk` (`_ChunkHook`, installed once per process) tells the
   running job which lists the next `inference` call's windows came from, and
   `_inference` sets their samples to None; the batch holds them until it is computed.

Clustering, speaker assignment and sentence building are FunASR's own. The result
equals the unbatched run's: same windows, same features, same model; only the batch
dimension of the forward and the device of the fbank differ (float differences ~1e-6
in the embeddings; tests/integration/test_speaker_batching.py bounds them).

Relied on, checked by `check_support` and pinned by tests/integration/
test_speaker_batching.py: the call order above, `spk_model.inference(data_in, ...)`
returning `([{"spk_embedding": Tensor[B, D]}], meta)`, `cb_model(X, oracle_num=...)`
with `X = result["spk_embedding"].cpu()`, `campplus.utils.extract_feature` being
`funasr.utils.fbank.fbank(window, num_mel_bins=80)` minus its mean over frames,
`inference_with_vad` calling its module's global `sv_chunk` and handing `inference` the
windows' samples in the order `sv_chunk` listed them. On any other FunASR version the
engine warns and runs FunASR's unbatched loop.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from daemon.errors import is_out_of_memory

__all__ = ["TESTED_FUNASR_VERSIONS", "JobStats", "SpeakerBatcher", "check_support", "install"]

# FunASR versions whose inference_with_vad was read and tested against this module.
TESTED_FUNASR_VERSIONS = ("1.4.16",)

WINDOW_SAMPLES = 24000  # sv_chunk: 1.5 s at 16 kHz, shorter windows zero padded
# campplus.utils.extract_feature: Kaldi fbank, 80 bins, its defaults of 25-ms frames every 10 ms
FBANK_BINS = 80
FRAME_SAMPLES = 400
FRAME_SHIFT_SAMPLES = 160
# On the CPU the best batch grows with torch's threads (`bench.hooks_check --checks
# spk_batch`, real-size CAM++): on 2 threads 16 windows (an AMD EPYC VM: 27 ms a window
# against 44 in batches of 64; an Intel Xeon VM: within 10 % of its best, 64), on 16
# threads 128 (1.94 s against 2.62 in 64s and 4.97 in 16s). Larger batches only add
# activation memory that spills out of the caches.
CPU_WINDOWS_PER_THREAD = 8
CPU_BATCH_MIN, CPU_BATCH_MAX = 8, 128
GPU_BATCH_MAX = 1024
GPU_BYTES_PER_WINDOW = 48 * 2**20  # generous peak activation estimate for one real-size window
GPU_MEMORY_SHARE = 0.25  # of the free device memory, leaving room for the other models


def check_support(version: str, auto_model: Any) -> str | None:
    """None when batching can be installed on this AutoModel, else why not."""
    if version not in TESTED_FUNASR_VERSIONS:
        return (f"FunASR {version} is not a tested version ({', '.join(TESTED_FUNASR_VERSIONS)}); "
                "using FunASR's own per-window speaker loop")
    spk = getattr(auto_model, "spk_model", None)
    if spk is None:
        return "no speaker model loaded"
    if not callable(getattr(spk, "inference", None)) or not callable(getattr(spk, "forward", None)):
        return "speaker model has no inference/forward"
    if getattr(auto_model, "cb_model", None) is None:
        return "AutoModel has no cb_model (ClusterBackend)"
    from funasr.auto import auto_model as module

    if not callable(getattr(module, "sv_chunk", None)):
        return "funasr.auto.auto_model has no sv_chunk"
    try:
        from funasr.models.campplus.utils import extract_feature  # noqa: F401
        from funasr.utils.fbank import fbank  # noqa: F401
    except ImportError as exc:
        return f"funasr.models.campplus.utils.extract_feature or funasr.utils.fbank missing: {exc}"
    return None


@dataclass
class JobStats:
    windows: int = 0
    batches: int = 0
    forward_seconds: float = 0.0
    feature_seconds: float = 0.0
    batch_size: int = 0


@dataclass
class _Job:
    next_id: int = 0
    # sample count -> [(id, samples tensor)], windows not yet embedded
    pending: dict[int, list[tuple[int, Any]]] = field(default_factory=dict)
    embeddings: dict[int, Any] = field(default_factory=dict)  # id -> Tensor[D] (CPU)
    stats: JobStats = field(default_factory=JobStats)
    chunked: list[Any] | None = None  # what sv_chunk returned last, for the inference calls that follow
    chunk_cursor: int = 0  # the first of `chunked` whose samples are still held there


# The job whose `generate` runs in this thread, for the one `_ChunkHook` of the process.
_running = threading.local()


class _ChunkHook:
    """Stands in for `funasr.auto.auto_model.sv_chunk`, once per process (engines come and
    go; a wrapper per engine would chain and keep each one's models alive): calls
    FunASR's function and, inside a batched job in this thread, hands the job its result."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, vad_segments: Any, *args: Any, **kwargs: Any) -> Any:
        segments = self.original(vad_segments, *args, **kwargs)
        job = getattr(_running, "job", None)
        if job is not None:
            job.chunked, job.chunk_cursor = segments, 0
        return segments

    @classmethod
    def install(cls, module: Any) -> None:
        if not isinstance(module.sv_chunk, cls):
            module.sv_chunk = cls(module.sv_chunk)


class SpeakerBatcher:
    """Installed once on a loaded AutoModel; active only inside `job()`."""

    def __init__(self, auto_model: Any, device: str, batch_size: int | None = None,
                 batched_features: bool = True) -> None:
        self.auto_model = auto_model
        self.device = str(device)
        self.batched_features = batched_features
        # fbank on the GPU where torch's FFT and FunASR's fbank run there (CUDA/ROCm);
        # elsewhere on the CPU, still one call per batch
        self.feature_device = self.device if self.device.startswith("cuda") else "cpu"
        self.spk_model = auto_model.spk_model
        self._original_inference = self.spk_model.inference
        self._original_cb = auto_model.cb_model
        self._local = threading.local()
        self.batch_size = int(batch_size) if batch_size else self._default_batch_size()
        self.embedding_dim = self._probe_dim()
        self.last_stats = JobStats()
        self.spk_model.inference = self._inference
        auto_model.cb_model = _ClusterHook(self, self._original_cb)
        from funasr.auto import auto_model as module

        _ChunkHook.install(module)

    # ------------------------------------------------------------------ setup

    def _default_batch_size(self) -> int:
        if not self.device.startswith("cuda"):
            import torch

            return max(CPU_BATCH_MIN, min(CPU_BATCH_MAX, CPU_WINDOWS_PER_THREAD * torch.get_num_threads()))
        try:
            import torch

            index = torch.device(self.device).index
            free, _total = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
            return int(max(8, min(GPU_BATCH_MAX, free * GPU_MEMORY_SHARE // GPU_BYTES_PER_WINDOW)))
        except Exception as exc:  # noqa: BLE001 - a guess is fine; OOM halves it
            logger.debug("cannot read free memory on {}: {}", self.device, exc)
            return 128

    def _probe_dim(self) -> int:
        import torch

        emb = self.embed(self.features([torch.zeros(WINDOW_SAMPLES)]))
        return int(emb.shape[-1])

    def uninstall(self) -> None:
        self.spk_model.inference = self._original_inference
        self.auto_model.cb_model = self._original_cb

    # ------------------------------------------------------------------ job scope

    @property
    def _job(self) -> _Job | None:
        return getattr(self._local, "job", None)

    @property
    def active(self) -> bool:
        """Inside `job()`: the speaker stage is being batched (outside, FunASR's own loop runs)."""
        return self._job is not None

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        """Batch the speaker stage of the `generate` calls made inside this block."""
        self._local.job = _running.job = _Job()
        try:
            yield
        finally:
            job = self._local.job
            self._local.job = _running.job = None
            job.stats.batch_size = self.batch_size
            self.last_stats = job.stats

    # ------------------------------------------------------------------ hooks

    def _inference(self, data_in: Any, data_lengths: Any = None, key: Any = None, **kwargs: Any) -> Any:
        job = self._job
        if job is None:  # outside a job: FunASR's own path
            return self._original_inference(data_in, data_lengths=data_lengths, key=key, **kwargs)
        import torch
        from funasr.utils.load_utils import load_audio_text_image_video

        # exactly what CAMPPlus.inference does with its input
        samples = load_audio_text_image_video(
            data_in, fs=16000, audio_fs=kwargs.get("fs", 16000), data_type="sound"
        )
        if not isinstance(samples, (list, tuple)):
            samples = [samples]
        ids = []
        for sample in samples:
            wid = job.next_id
            job.next_id += 1
            ids.append(wid)
            group = job.pending.setdefault(int(sample.shape[0]), [])
            group.append((wid, sample))
            if len(group) >= self.batch_size:
                self._flush_group(job, int(sample.shape[0]))
        if isinstance(data_in, (list, tuple)):
            self._let_go(job, data_in)
        placeholder = torch.tensor(ids, dtype=torch.float32).unsqueeze(1).repeat(1, self.embedding_dim)
        meta = {"batch_data_time": sum(int(s.shape[0]) for s in samples) / 16000.0}
        return [{"spk_embedding": placeholder}], meta

    @staticmethod
    def _let_go(job: _Job, windows: Any) -> None:
        """Drop FunASR's references to the samples of `windows` (just queued) from the lists
        sv_chunk made them in: AutoModel.inference hands them on in sv_chunk's order, in
        batches of one by default. Only a window that is the very object in the next list
        counts; anything else leaves the lists as FunASR made them."""
        chunked = job.chunked
        if chunked is None:
            return
        for samples in windows:
            k = job.chunk_cursor
            if k >= len(chunked) or not isinstance(chunked[k], list) or len(chunked[k]) != 3 \
                    or chunked[k][2] is not samples:
                return
            chunked[k][2] = None  # FunASR reads only the window's times from here on
            job.chunk_cursor = k + 1

    def fill(self, X: Any) -> None:
        """Replace placeholder rows of X (in place) with the real embeddings."""
        job = self._job
        if job is None or job.next_id == 0:
            return
        import torch

        if X.dim() != 2 or X.shape[1] != self.embedding_dim or X.device.type != "cpu":
            raise RuntimeError(f"speaker batching: unexpected embedding tensor {tuple(X.shape)} on {X.device}")
        ids = X[:, 0]
        if not torch.equal(X, ids.unsqueeze(1).expand_as(X)) or not torch.equal(ids, ids.round()):
            raise RuntimeError("speaker batching: clusterer input is not the placeholder tensor")
        for length in list(job.pending):
            self._flush_group(job, length)
        rows = [int(i) for i in ids.tolist()]
        missing = [i for i in rows if i not in job.embeddings]
        if missing:
            raise RuntimeError(f"speaker batching: {len(missing)} windows without an embedding")
        X.copy_(torch.stack([job.embeddings[i] for i in rows]))

    # ------------------------------------------------------------------ compute

    def _flush_group(self, job: _Job, length: int) -> None:
        group = job.pending.pop(length, [])
        start = 0
        while start < len(group):
            chunk = group[start:start + self.batch_size]
            began = time.perf_counter()
            try:
                speech = self.features([s for _, s in chunk])
                featured = time.perf_counter()
                emb = self.embed(speech)
            except Exception as exc:
                if not is_out_of_memory(exc) or self.batch_size <= 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning("speaker batching: out of memory on {}, batch size now {}", self.device,
                               self.batch_size)
                _empty_cache(self.device)
                continue
            job.stats.forward_seconds += time.perf_counter() - featured
            job.stats.feature_seconds += featured - began
            job.stats.batches += 1
            job.stats.windows += len(chunk)
            for (wid, _), row in zip(chunk, emb):
                job.embeddings[wid] = row
            start += len(chunk)

    def embed(self, speech: Any) -> Any:
        """The model's own forward on one batch of features [B, frames, bins]."""
        import torch

        with torch.no_grad():
            out = self.spk_model.forward(speech.to(device=self.device).to(torch.float32))
        return out.detach().to("cpu", torch.float32)

    def features(self, samples: list[Any]) -> Any:
        """What `campplus.utils.extract_feature(samples)[0]` gives for equal-length windows,
        from one call of FunASR's fbank instead of one per window.

        The windows are laid end to end: a window's length is a whole number of frame
        shifts, so the frames of window j are frames j*stride ... j*stride + n - 1 of the
        long signal (the frames straddling two windows are dropped), and every step of
        the Kaldi fbank is per frame (no dither in FunASR's call). FunASR then subtracts
        each window's mean over its frames; so do we. On the CPU the features come out
        equal to FunASR's (tests/integration/test_pipeline_hooks.py); on a CUDA worker
        the fbank runs on the GPU, within float rounding of the CPU's
        (`python -m bench.hooks_check` measures how far)."""
        import torch

        length = int(samples[0].shape[0])
        if (not self.batched_features or length < FRAME_SAMPLES or length % FRAME_SHIFT_SAMPLES
                or any(int(s.shape[0]) != length for s in samples)):
            from funasr.models.campplus.utils import extract_feature

            speech, _lengths, _times = extract_feature(samples)
            return speech
        from funasr.utils import fbank as kaldi

        wave = torch.stack([torch.as_tensor(s) for s in samples]).to(self.feature_device)
        frames = kaldi.fbank(wave.reshape(1, -1), num_mel_bins=FBANK_BINS)  # [B*stride - k, bins]
        stride = length // FRAME_SHIFT_SAMPLES
        per_window = (length - FRAME_SAMPLES) // FRAME_SHIFT_SAMPLES + 1
        device = frames.device
        index = (torch.arange(len(samples), device=device) * stride).unsqueeze(1) + torch.arange(
            per_window, device=device).unsqueeze(0)
        feats = frames[index]  # [B, per_window, bins]
        return feats - feats.mean(dim=1, keepdim=True)


class _ClusterHook:
    """Stands in for AutoModel.cb_model: fill the placeholders, then cluster as FunASR does."""

    def __init__(self, batcher: SpeakerBatcher, original: Any) -> None:
        self._batcher = batcher
        self._original = original

    def __call__(self, X: Any, **params: Any) -> Any:
        self._batcher.fill(X)
        return self._original(X, **params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _empty_cache(device: str) -> None:
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def install(auto_model: Any, version: str, device: str, batch_size: int | None = None) -> SpeakerBatcher | None:
    """A SpeakerBatcher on this AutoModel, or None (with a warning) when unsupported."""
    reason = check_support(version, auto_model)
    if reason is not None:
        if getattr(auto_model, "spk_model", None) is not None:
            logger.warning("speaker batching off: {}", reason)
        return None
    return SpeakerBatcher(auto_model, device, batch_size)
