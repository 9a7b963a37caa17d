"""Batched speaker embeddings (daemon/engine/speaker_batching.py) give exactly what
bare FunASR gives: same text, timestamps and speaker of every sentence, embeddings
within 1e-4, on the same tiny models and audio.

FunASR's clusterer (ClusterBackend, FunASR 1.4.16): fewer than 20 embedding windows ->
everyone is speaker 0; 20..2047 windows -> spectral clustering (k-means on the spectral
embedding, unseeded, so both runs seed numpy's global RNG identically); 2048 or more
-> k-means (with a speaker count) or UMAP-HDBSCAN, which needs ~26 minutes of speech
and is not exercised here. A 1.5-s window every 0.75 s: the two-voice recording
(~16 s of speech) already gives >= 20 windows, so every test below clusters spectrally.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.engine import speaker_batching as sb
from daemon.engine.decode import decode_audio
from daemon.engine.transcriber import Engine
from daemon.engine.models import ModelDirs
from tests.support.audio import require_tools

pytestmark = pytest.mark.integration

SPECTRAL_MIN, SPECTRAL_MAX = 20, 2048  # ClusterBackend.forward's thresholds


def _record_cluster_input(auto_model: Any, captured: list) -> None:
    """Keep a copy of what FunASR hands to its clusterer (after our fill, for the engine)."""
    inner = auto_model.cb_model

    def cb(X: Any, **params: Any) -> Any:
        labels = inner(X, **params)
        captured.append((X.detach().clone(), np.asarray(labels).copy()))
        return labels

    auto_model.cb_model = cb


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny CAM++'s small convolutions run ~10x slower on 2 intra-op threads than on
    one (measured on a 2-core CI-like machine); both pipelines get the same setting, so
    the comparison is unaffected. AutoModel sets torch's thread count from `ncpu`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def batched(tiny_models: ModelDirs) -> tuple[Engine, list]:
    engine = Engine.load(tiny_models, device="cpu", batch_size_s=300, ncpu=1)
    assert engine.speaker_batching, "speaker batching should be on by default on the pinned FunASR"
    captured: list = []
    _record_cluster_input(engine.model, captured)
    return engine, captured


@pytest.fixture(scope="module")
def bare(tiny_models: ModelDirs) -> tuple[Any, list]:
    """FunASR's AutoModel as its README builds it, nothing of ours on it."""
    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr import AutoModel

    model = AutoModel(
        model=str(tiny_models.asr), vad_model=str(tiny_models.vad), punc_model=str(tiny_models.punc),
        spk_model=str(tiny_models.spk), device="cpu", ncpu=1, disable_update=True, disable_pbar=True,
        log_level="WARNING",
    )
    captured: list = []
    _record_cluster_input(model, captured)
    return model, captured


@pytest.fixture(scope="module")
def doubled_wav(two_voice_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-voice recording twice over (~54 s, ~55 windows)."""
    require_tools("sox")
    out = tmp_path_factory.mktemp("long") / "two_voices_x2.wav"
    subprocess.run(["sox", str(two_voice_wav), str(two_voice_wav), str(out)], check=True, capture_output=True)
    return out


def _without_keys(results: list[dict]) -> list[dict]:
    # AutoModel.generate names a numpy input with a random key on every call
    return [{k: v for k, v in r.items() if k != "key"} for r in results]


def _compare(bare: tuple[Any, list], batched: tuple[Engine, list], wav: Path, **cfg: Any) -> int:
    model, bare_seen = bare
    engine, batched_seen = batched
    bare_seen.clear()
    batched_seen.clear()
    samples = decode_audio(wav)
    cfg = {"batch_size_s": 300, **cfg}

    np.random.seed(1234)
    expected = model.generate(input=samples, **cfg)
    np.random.seed(1234)
    got = engine.generate(samples, dict(cfg))

    assert expected and expected[0].get("sentence_info"), "bare FunASR recognised nothing: test audio too short?"
    # same text, same timestamps, same speaker of every sentence, field for field
    assert _without_keys(got) == _without_keys(expected)
    for sentence_b, sentence_e in zip(got[0]["sentence_info"], expected[0]["sentence_info"]):
        assert (sentence_b["start"], sentence_b["end"], sentence_b["spk"]) == (
            sentence_e["start"], sentence_e["end"], sentence_e["spk"])

    # the clusterer saw the same embeddings (real ones, not placeholders) and agreed
    assert len(bare_seen) == len(batched_seen) == 1
    (x_bare, labels_bare), (x_batched, labels_batched) = bare_seen[0], batched_seen[0]
    assert x_batched.shape == x_bare.shape
    assert float((x_batched - x_bare).abs().max()) <= 1e-4
    assert np.array_equal(labels_batched, labels_bare)
    assert not np.allclose(x_batched[:, 0], np.arange(len(x_batched))), "placeholders leaked"

    stats = engine.speaker_batcher.last_stats
    assert stats.windows == x_bare.shape[0]
    assert stats.batches < stats.windows  # batched, not one call per window
    return int(x_bare.shape[0])


def test_pinned_funasr_version() -> None:
    import funasr

    assert funasr.__version__ in sb.TESTED_FUNASR_VERSIONS, (
        f"FunASR {funasr.__version__}: re-read AutoModel.inference_with_vad and re-run these tests "
        "before adding it to speaker_batching.TESTED_FUNASR_VERSIONS")


def test_two_voices_identical(bare, batched, two_voice_wav: Path) -> None:
    windows = _compare(bare, batched, two_voice_wav)
    assert SPECTRAL_MIN <= windows < SPECTRAL_MAX  # spectral clustering ran, not "all speaker 0"


def test_longer_recording_several_batches_identical(bare, batched, doubled_wav: Path) -> None:
    engine = batched[0]
    saved = engine.speaker_batcher.batch_size
    engine.speaker_batcher.batch_size = 7  # several full batches flushed during the ASR loop, plus a remainder
    try:
        windows = _compare(bare, batched, doubled_wav)
    finally:
        engine.speaker_batcher.batch_size = saved
    assert SPECTRAL_MIN <= windows < SPECTRAL_MAX
    assert engine.speaker_batcher.last_stats.batches >= windows // 7


def test_speaker_count_hint_identical(bare, batched, two_voice_wav: Path) -> None:
    _compare(bare, batched, two_voice_wav, preset_spk_num=2)
    labels = batched[1][0][1]
    assert len(set(labels.tolist())) == 2  # the hint reached FunASR's spectral clusterer


def test_a_window_s_samples_are_let_go_once_queued(bare, batched, doubled_wav: Path) -> None:
    """FunASR keeps every window ([start, end, samples]) until the job ends; inside a
    batched job the samples are gone from those lists by the time `postprocess` reads
    the windows' times (the speech is not held twice over the job), the results
    identical; bare FunASR's lists keep theirs."""
    from funasr.auto import auto_model as module

    seen: list[list[Any]] = []
    inner = module.postprocess

    def postprocess(segments: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append([window[2] for window in segments])
        return inner(segments, *args, **kwargs)

    module.postprocess = postprocess
    engine = batched[0]
    saved = engine.speaker_batcher.batch_size
    engine.speaker_batcher.batch_size = 7  # windows of one VAD segment in several batches
    try:
        _compare(bare, batched, doubled_wav)
    finally:
        module.postprocess = inner
        engine.speaker_batcher.batch_size = saved
    bare_windows, batched_windows = seen
    assert bare_windows and all(isinstance(w, np.ndarray) and w.size for w in bare_windows)
    assert len(batched_windows) == len(bare_windows) and all(w is None for w in batched_windows)


def test_transcribe_uses_batches(batched, two_voice_wav: Path) -> None:
    engine = batched[0]
    t = engine.transcribe(two_voice_wav, speakers=2)
    assert t.segments and {s.speaker for s in t.segments} <= {1, 2}
    assert engine.speaker_batcher.last_stats.windows >= SPECTRAL_MIN
    # outside a job the speaker model is FunASR's own again
    assert not engine.speaker_batcher.active


def test_the_cpu_batch_follows_torch_s_threads(batched) -> None:
    import torch

    batcher = batched[0].speaker_batcher
    before = torch.get_num_threads()
    try:
        sizes = {}
        for threads in (1, 2, 16, 64):
            torch.set_num_threads(threads)
            sizes[threads] = batcher._default_batch_size()
    finally:
        torch.set_num_threads(before)
    assert sizes == {1: 8, 2: 16, 16: 128, 64: 128}


def test_untested_version_falls_back(batched, caplog_loguru: list[str]) -> None:
    engine = batched[0]
    assert sb.check_support("1.4.15", engine.model) is not None
    assert sb.install(engine.model, "1.4.15", "cpu") is None
    assert any("speaker batching off" in m for m in caplog_loguru)


def test_switch_off(tiny_models: ModelDirs) -> None:
    engine = Engine.load(tiny_models, device="cpu", ncpu=1, speaker_batching=False, pipeline_hooks=False)
    assert not engine.speaker_batching
    # FunASR's clusterer itself, under the engine's progress reporter (which wraps and calls it) only
    chain, hook = [], engine.model.cb_model
    while hook is not None:
        chain.append(type(hook).__name__)
        hook = getattr(hook, "__wrapped__", None)
    assert chain[-1] == "ClusterBackend" and len(chain) == 2, chain


@pytest.fixture()
def caplog_loguru():
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    yield messages
    logger.remove(handler)
