"""The tiny CAM++ that `spkd models make-tiny` trains (daemon/engine/speaker_training.py):
trained on the training voices only, and separating voices it never heard.

Embeddings are computed as FunASR's pipeline computes them (its own 1.5-s windows and
features); "separating" is judged with FunASR's own merge rule: two clusters whose
centroids have cosine >= 0.78 become one speaker (ClusterBackend.merge_by_cos).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from daemon.engine import speaker_training as st
from daemon.engine.models import ModelDirs
from tests.support.audio import require_tools
from tests.support.dialog import DIALOG_LINES, TEST_VOICES

pytestmark = pytest.mark.integration

MERGE_COSINE = 0.78  # funasr.models.campplus.cluster_backend.ClusterBackend(merge_thr=0.78)


def test_training_and_held_out_voices_are_the_issue_s_split() -> None:
    assert all(st.is_training_voice(v) for v in ("adam", "Alex", "linda", "klatt3", "f2", "f4", "m2", "m4"))
    assert not any(st.is_training_voice(v) for v in ("ed", "f1", "f3", "f5", "m1", "m3", "m5", "m6", "m7", "m8",
                                                     "max", "Mike", "robosoft", "zac", "whisperf"))
    assert not any(st.is_training_voice(v) for v in TEST_VOICES)


def test_report_names_only_training_voices(tiny_models: ModelDirs) -> None:
    report = st.read_report(tiny_models.spk)
    assert report is not None, "make-tiny must write how the speaker model was trained"
    assert report["voices"] and all(st.is_training_voice(v) for v in report["voices"])
    require_tools("espeak-ng")
    assert set(report["voices"]) == set(st.training_voices())
    assert report["training_accuracy"] > 0.8


@pytest.fixture(scope="module")
def embeddings(tiny_models: ModelDirs) -> dict[str, np.ndarray]:
    """Per held-out test voice, the window embeddings of six sentences."""
    require_tools("espeak-ng")
    import torch

    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr import AutoModel

    # loaded as the engine loads it: FunASR's AutoModel over the directory
    model = AutoModel(model=str(tiny_models.spk), device="cpu", disable_update=True, disable_pbar=True,
                      log_level="ERROR").model
    model.eval()
    out = {}
    silence = np.zeros(3200, dtype=np.float32)
    for voice in TEST_VOICES:
        windows = []
        for line in DIALOG_LINES[:6]:
            audio = st.synthesize(line, f"cmn+{voice}", words_per_minute=270)
            windows += st.speaker_windows(np.concatenate([silence, audio, silence[:1600]]))
        with torch.no_grad():
            out[voice] = model(st.window_features(windows)).numpy()
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def test_a_voice_stays_one_speaker(embeddings: dict[str, np.ndarray]) -> None:
    for voice, e in embeddings.items():
        half = len(e) // 2
        cosine = float(_unit(e[:half].mean(0)) @ _unit(e[half:].mean(0)))
        assert cosine >= MERGE_COSINE, f"{voice}: its two halves would stay apart ({cosine:.2f})"


def test_different_voices_stay_apart(embeddings: dict[str, np.ndarray]) -> None:
    for a, b in itertools.combinations(embeddings, 2):
        cosine = float(_unit(embeddings[a].mean(0)) @ _unit(embeddings[b].mean(0)))
        assert cosine < MERGE_COSINE, f"{a} and {b} would be merged ({cosine:.2f})"
