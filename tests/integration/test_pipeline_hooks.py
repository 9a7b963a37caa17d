"""The pipeline hooks (daemon/engine/pipeline_hooks.py) and the batched speaker fbank
(daemon/engine/speaker_batching.py) give exactly what bare FunASR gives, hook by hook, on the
same tiny models and audio (numpy's RNG seeded alike, as in test_speaker_batching.py).

The VAD's frame loop (daemon/engine/vad_loop.py) runs on every device; its own tests,
bit for bit on random score sequences, are tests/integration/test_vad_loop.py. The VAD
score, punctuation and timestamp hooks move device tensors to the host; here every tensor already
lives on the CPU, so they are installed as a GPU worker would have them (device "cuda")
to check their wiring: they are called, FunASR's code takes what they return, and the
whole result stays equal field by field. That the numbers stay equal across the
device-to-host move is checked on a GPU by `python -m bench.stages` (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.engine import pipeline_hooks as ph
from daemon.engine import speaker_batching as sb
from daemon.engine.decode import decode_audio
from daemon.engine.transcriber import Engine
from daemon.engine.models import ModelDirs
from tests.support.audio import make_varied_wav, require_tools

pytestmark = pytest.mark.integration

FEATURE_TOLERANCE = 1e-4  # as test_speaker_batching.py accepts for the embeddings


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """As in test_speaker_batching.py: the tiny models run faster on one torch thread;
    both pipelines get the same setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class _Counted:
    """Counts the calls that reach a hooked callable."""

    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture(scope="module")
def hooked(tiny_models: ModelDirs) -> tuple[Engine, dict[str, _Counted]]:
    """spkd's engine on the CPU with every hook on, the device ones as on a GPU worker."""
    import funasr

    engine = Engine.load(tiny_models, device="cpu", batch_size_s=300, ncpu=1, pipeline_hooks=False)
    hooks = ph.install(engine.model, funasr.__version__, "cuda:0")
    engine.pipeline_hooks = hooks
    assert hooks.names == ["clustering on 1 thread(s)", "VAD frame loop in locals", "VAD scores on the host",
                           "punctuation decisions on the host", "ASR timestamps on the host", "CIF on numpy"]
    counters = {"vad": _Counted(), "timestamps": _Counted(), "cluster": _Counted(), "vad_loop": _Counted(),
                "punc": _Counted()}
    _count(engine.model.vad_model.encoder, "forward", counters["vad"])
    _count(engine.model.vad_model, "DetectLastFrames", counters["vad_loop"])  # spkd's loop, on every VAD call
    _count(engine.model.model, "calc_predictor_timestamp", counters["timestamps"])
    _count(engine.model.punc_model, "punc_forward", counters["punc"])
    return engine, counters


def _count(owner: Any, name: str, counter: _Counted) -> None:
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        return inner(*args, **kwargs)

    object.__setattr__(owner, name, wrapper)


@pytest.fixture(scope="module")
def bare(tiny_models: ModelDirs) -> Any:
    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr import AutoModel

    return AutoModel(
        model=str(tiny_models.asr), vad_model=str(tiny_models.vad), punc_model=str(tiny_models.punc),
        spk_model=str(tiny_models.spk), device="cpu", ncpu=1, disable_update=True, disable_pbar=True,
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
def varied_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~75 s of four voices, shuffled turns, pauses of 0.3-3.5 s, faint noise."""
    require_tools("espeak-ng", "sox")
    return make_varied_wav(tmp_path_factory.mktemp("varied") / "varied.wav", 75, seed=3, voices=4)


def _without_keys(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "key"} for r in results]


def _identical(bare: Any, engine: Engine, wav: Path, **cfg: Any) -> list[dict]:
    samples = decode_audio(wav)
    cfg = {"batch_size_s": 300, **cfg}
    np.random.seed(4321)
    expected = bare.generate(input=samples, **cfg)
    np.random.seed(4321)
    got = engine.generate(samples, dict(cfg))
    assert expected and expected[0].get("sentence_info"), "bare FunASR recognised nothing"
    assert _without_keys(got) == _without_keys(expected)
    return got


def test_every_hook_identical_two_voices(bare, hooked, two_voice_wav: Path) -> None:
    engine, counters = hooked
    before = {k: c.calls for k, c in counters.items()}
    _identical(bare, engine, two_voice_wav)
    assert counters["vad"].calls > before["vad"]  # the hooked encoder produced the VAD's scores
    assert counters["vad_loop"].calls > before["vad_loop"]  # and spkd's frame loop decided on them
    assert counters["timestamps"].calls > before["timestamps"]
    assert counters["punc"].calls > before["punc"]  # FunASR's punctuation read the one-hot host tensor
    assert engine.speaker_batcher.last_stats.feature_seconds > 0  # batched fbank ran


def test_every_hook_identical_varied(bare, hooked, varied_wav: Path) -> None:
    got = _identical(bare, hooked[0], varied_wav)
    assert len({s["spk"] for s in got[0]["sentence_info"]}) >= 1


def test_every_hook_identical_with_speaker_count(bare, hooked, varied_wav: Path) -> None:
    _identical(bare, hooked[0], varied_wav, preset_spk_num=3)


def test_clusterer_runs_on_one_thread(hooked, two_voice_wav: Path) -> None:
    from threadpoolctl import threadpool_info

    engine = hooked[0]
    seen: list[list[int]] = []
    spectral = engine.model.cb_model.spectral_cluster  # FunASR's SpectralCluster inside ClusterBackend
    inner = spectral.get_spec_embs  # scipy.linalg.eigh and the eigen-gap choice

    def probe(*args: Any, **kwargs: Any) -> Any:
        seen.append([lib["num_threads"] for lib in threadpool_info()])
        return inner(*args, **kwargs)

    spectral.get_spec_embs = probe
    try:
        outside = [lib["num_threads"] for lib in threadpool_info()]
        engine.generate(decode_audio(two_voice_wav), {"batch_size_s": 300})
    finally:
        del spectral.get_spec_embs
    assert seen and all(n == 1 for n in seen[0]), seen
    assert [lib["num_threads"] for lib in threadpool_info()] == outside  # restored afterwards


def test_batched_features_match_funasr(hooked, two_voice_wav: Path) -> None:
    """One fbank call for a batch gives FunASR's per-window features, padded last window included."""
    import torch
    from funasr.models.campplus.utils import extract_feature, sv_chunk

    samples = decode_audio(two_voice_wav)
    segment = samples[16000:16000 + 5 * 16000 + 1234]  # 5.08 s: the last window is zero padded
    windows = [torch.from_numpy(w[2]) for w in sv_chunk([[1.0, 1.0 + segment.size / 16000, segment]])]
    assert len(windows) >= 5 and all(w.shape[0] == sb.WINDOW_SAMPLES for w in windows)
    batcher = hooked[0].speaker_batcher
    expected, _, _ = extract_feature(windows)
    got = batcher.features(windows)
    assert got.shape == expected.shape
    assert float((got.cpu() - expected).abs().max()) <= FEATURE_TOLERANCE


def test_features_fall_back_for_odd_lengths(hooked) -> None:
    import torch
    from funasr.models.campplus.utils import extract_feature

    windows = [torch.randn(24000 - 37) * 0.1 for _ in range(3)]  # not a whole number of frame shifts
    expected, _, _ = extract_feature(windows)
    assert torch.equal(hooked[0].speaker_batcher.features(windows), expected)


def test_uninstall_restores_funasr(tiny_models: ModelDirs) -> None:
    import funasr

    engine = Engine.load(tiny_models, device="cpu", ncpu=1, speaker_batching=False, pipeline_hooks=False)
    model = engine.model
    cluster, encoder_forward = model.cb_model, model.vad_model.encoder.forward
    guard = model.model.inference
    hooks = ph.install(model, funasr.__version__, "cuda:0")
    assert model.cb_model is not cluster and "forward" in vars(model.vad_model.encoder)
    assert "DetectCommonFrames" in vars(model.vad_model)
    hooks.uninstall()
    assert model.cb_model is cluster
    assert "forward" not in vars(model.vad_model.encoder)
    assert "DetectCommonFrames" not in vars(model.vad_model) and "DetectLastFrames" not in vars(model.vad_model)
    assert "calc_predictor_timestamp" not in vars(model.model)
    assert model.model.inference is guard  # the engine's empty-batch guard stays, unwrapped
    assert model.vad_model.encoder.forward == encoder_forward


def test_cpu_worker_gets_only_the_thread_limit(tiny_models: ModelDirs) -> None:
    engine = Engine.load(tiny_models, device="cpu", ncpu=1)
    assert engine.pipeline_hooks.names == ["clustering on 1 thread(s)", "VAD frame loop in locals", "CIF on numpy"]


def test_cif_fires_host_equals_funasrs_bit_for_bit() -> None:
    import torch
    from funasr.utils.timestamp_tools import cif_wo_hidden

    generator = torch.Generator().manual_seed(7)
    for frames in (1, 2, 9, 400, 2500):
        for _ in range(10):
            alphas = torch.rand(1, frames, generator=generator) * torch.rand(1, generator=generator) * 1.5
            alphas /= alphas.sum() / (frames // 7 + 1)  # as ts_prediction_lfr6_standard rescales them
            assert torch.equal(ph.cif_fires_host(alphas, 1.0 - 1e-4), cif_wo_hidden(alphas, 1.0 - 1e-4))
    for rows in (3, ph.SCALAR_ROWS + 1, 37):  # element by element, and step by step across rows
        batch = torch.rand(rows, 600, generator=generator)
        assert torch.equal(ph.cif_fires_host(batch, 1.0 - 1e-4), cif_wo_hidden(batch, 1.0 - 1e-4))


def test_cif_host_equals_funasrs_bit_for_bit() -> None:
    """The predictor's CIF (acoustic embeddings and fires) on numpy: FunASR's bits, on
    rows of one and of many, alphas as the predictor makes them (sigmoid outputs, some
    zeroed by the padding mask), and alphas landing exactly on the threshold."""
    import torch
    from funasr.models.bicif_paraformer.cif_predictor import cif

    generator = torch.Generator().manual_seed(11)
    for rows, frames, size in ((1, 1, 8), (1, 3, 8), (1, 250, 512), (2, 97, 64), (ph.SCALAR_ROWS + 1, 120, 64),
                               (23, 180, 512)):
        for trial in range(4):
            hidden = torch.randn(rows, frames, size, generator=generator)
            alphas = torch.sigmoid(torch.randn(rows, frames, generator=generator) * 2) * 0.6
            lengths = torch.randint(1, frames + 1, (rows,), generator=generator)
            alphas = alphas * (torch.arange(frames)[None, :] < lengths[:, None])
            if trial == 3:  # exact hits of the threshold (0.25 * 4 = 1.0) and a zero hidden row
                alphas = torch.full((rows, frames), 0.25)
                hidden[:, 0] = 0.0
            expected, expected_fires = cif(hidden, alphas, 1.0)
            got, got_fires = ph.cif_host(hidden, alphas, 1.0)
            assert got.shape == expected.shape and torch.equal(got_fires, expected_fires)
            assert torch.equal(got, expected), (rows, frames, size, trial)
    half = torch.randn(1, 5, 4, dtype=torch.float64)  # anything but float32: FunASR's own function
    assert torch.equal(ph.cif_host(half, torch.full((1, 5), 0.5, dtype=torch.float64), 1.0)[0],
                       cif(half, torch.full((1, 5), 0.5, dtype=torch.float64), 1.0)[0])


def test_cif_swap_lasts_for_the_asr_call_only(hooked, two_voice_wav: Path) -> None:
    from funasr.models.bicif_paraformer import cif_predictor
    from funasr.utils import timestamp_tools

    engine, _ = hooked
    originals = (timestamp_tools.cif_wo_hidden, cif_predictor.cif_wo_hidden, cif_predictor.cif)
    seen: dict[str, int] = {"fires": 0, "embeds": 0}
    fires, embeds = ph.cif_fires_host, ph.cif_host

    def spy_fires(alphas: Any, threshold: float) -> Any:
        seen["fires"] += 1
        return fires(alphas, threshold)

    def spy_embeds(hidden: Any, alphas: Any, threshold: float) -> Any:
        seen["embeds"] += 1
        return embeds(hidden, alphas, threshold)

    ph.cif_fires_host, ph.cif_host = spy_fires, spy_embeds  # type: ignore[assignment]
    try:
        engine.transcribe(two_voice_wav)
    finally:
        ph.cif_fires_host, ph.cif_host = fires, embeds  # type: ignore[assignment]
    assert (timestamp_tools.cif_wo_hidden, cif_predictor.cif_wo_hidden, cif_predictor.cif) == originals
    # Every ASR batch runs the predictor's CIF once and its timestamp CIF twice; random
    # tiny weights also take the re-firing path (peaks never match the tokens).
    assert seen["embeds"] >= 1 and seen["fires"] >= 3 * seen["embeds"], seen


def test_untested_version_leaves_funasr_alone(tiny_models: ModelDirs, caplog_loguru: list[str]) -> None:
    engine = Engine.load(tiny_models, device="cpu", ncpu=1, speaker_batching=False, pipeline_hooks=False)
    cluster = engine.model.cb_model
    hooks = ph.install(engine.model, "1.4.15", "cuda:0")
    assert hooks.names == [] and engine.model.cb_model is cluster
    assert any("pipeline hooks off" in m for m in caplog_loguru)


def test_release_load_memory_runs() -> None:
    import sys

    assert ph.release_load_memory() is sys.platform.startswith("linux")


@pytest.fixture()
def caplog_loguru():
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    yield messages
    logger.remove(handler)

