"""spkd's speaker refinements on the real (tiny) FunASR pipeline: held-out voices, no hint.

* `speakers.refine: false` is FunASR exactly: the engine's results (clusters, sentences,
  speakers) are bare FunASR's, field for field.
* By default, a stereo call split by channel has no segment that runs over the other
  party's turn (sentences cut at pauses), and a long meeting (UMAP + HDBSCAN, >= 2048
  windows) comes out with its true number of speakers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.engine.decode import decode_audio
from daemon.engine.models import ModelDirs
from daemon.engine.transcriber import Engine
from tests.support.audio import require_tools
from tests.support.dialog import (
    TEST_VOICES,
    Dialog,
    attribution,
    make_dialog,
    make_scripted_dialog,
    make_stereo_call,
    meeting_script,
    overlap_seconds,
)

pytestmark = pytest.mark.integration

UMAP_WINDOWS = 2048  # ClusterBackend.forward: from here on UMAP + HDBSCAN


def _results_of(engine: Engine) -> list[list[dict[str, Any]]]:
    """Every `generate` result the engine gets from FunASR from now on."""
    seen: list[list[dict[str, Any]]] = []
    inner = engine.generate

    def generate(samples: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
        out = inner(samples, cfg)
        seen.append(out)
        return out

    engine.generate = generate  # type: ignore[method-assign]
    return seen


def _without_keys(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("key", "spk_embedding_center")} for r in results]


@pytest.fixture(scope="module")
def three_voices(tmp_path_factory: pytest.TempPathFactory) -> Dialog:
    require_tools("espeak-ng")
    return make_dialog(tmp_path_factory.mktemp("refine") / "three.wav", list(TEST_VOICES[:3]), seed=6,
                       turn_seconds=(2.0, 4.0))


def test_refine_false_is_bare_funasr(tiny_models: ModelDirs, three_voices: Dialog) -> None:
    from daemon.engine.models import import_funasr

    raw = Engine.load(tiny_models, device="cpu", batch_size_s=300, refine=False)
    assert raw.refine_settings is None and raw.max_pause_seconds is None
    seen = _results_of(raw)
    np.random.seed(7)
    transcript = raw.transcribe(three_voices.path)
    import_funasr()
    from funasr import AutoModel

    bare = AutoModel(model=str(tiny_models.asr), vad_model=str(tiny_models.vad), punc_model=str(tiny_models.punc),
                     spk_model=str(tiny_models.spk), device="cpu", disable_update=True, disable_pbar=True,
                     log_level="WARNING")
    np.random.seed(7)
    expected = bare.generate(input=decode_audio(three_voices.path), batch_size_s=300, return_spk_center=True)
    assert expected and expected[0].get("sentence_info")
    assert len(seen) == 1
    # the same clusters, sentences and speakers, field for field
    assert _without_keys(seen[0]) == _without_keys(expected)
    assert np.allclose(seen[0][0]["spk_embedding_center"], expected[0]["spk_embedding_center"], atol=1e-5)
    # spkd's own step on top: sentences are cut only where FunASR's timeline changes speaker
    sentences = expected[0]["sentence_info"]
    assert len(transcript.segments) >= len(sentences)
    assert {s.speaker for s in transcript.segments} <= set(range(1, 1 + len({s["spk"] for s in sentences}) + 8))


def test_a_call_split_by_channel_never_runs_over_the_other_party(tiny_models: ModelDirs,
                                                                  tmp_path: Path) -> None:
    require_tools("espeak-ng")
    # long turns and long pauses: one party is silent for 10 s and more while the other talks
    call = make_stereo_call(tmp_path / "call.wav", list(TEST_VOICES[:2]), seed=11, turn_seconds=(5.0, 9.0),
                            pause_seconds=1.5, min_speech_seconds=45.0)
    engine = Engine.load(tiny_models, device="cpu", batch_size_s=300)

    def worst_crossing(max_pause: float | None) -> float:
        engine.max_pause_seconds = max_pause
        t = engine.transcribe(call.path, channels="split")
        return max(overlap_seconds((s.start, s.end), (turn.start, turn.end))
                   for s in t.segments for turn in call.turns if turn.channel != s.speaker - 1)

    cut = worst_crossing(1.0)
    uncut = worst_crossing(None)
    print(f"longest time a segment runs over the other party's turn: {uncut:.1f} s uncut, {cut:.2f} s cut at pauses")
    assert cut <= 0.3, cut


def test_a_long_meeting_has_its_true_number_of_speakers(tiny_models: ModelDirs, tmp_path: Path) -> None:
    require_tools("espeak-ng")
    voices = list(TEST_VOICES)
    meeting = make_scripted_dialog(tmp_path / "meeting.wav", meeting_script(voices, 28, seed=3), seed=3,
                                   pause_seconds=1.0)
    engine = Engine.load(tiny_models, device="cpu", batch_size_s=300)
    np.random.seed(0)
    t = engine.transcribe(meeting.path)
    assert engine.speaker_batcher.last_stats.windows >= UMAP_WINDOWS, "the meeting must take the UMAP path"
    result = attribution([(s.start, s.end, s.speaker_label) for s in t.segments], meeting.turns)
    print(f"meeting of {meeting.speech_seconds / 60:.0f} min, {len(voices)} voices: {result}")
    assert result.speakers == len(voices), result
    assert result.share >= 0.85, result


@pytest.mark.parametrize("seed", range(6))
def test_sentences_get_funasr_s_speakers_in_time_that_does_not_grow_with_their_product(seed: int) -> None:
    """speaker_turns.distribute_speakers against FunASR's own distribute_spk, on made-up
    timelines in order of their starts (overlapping stretches, touching ones, gaps, equal
    overlaps between two speakers) and sentences anywhere over them, inside and out;
    and a timeline out of order, which goes to FunASR's function."""
    import copy
    import random

    from funasr.models.campplus.utils import distribute_spk

    from daemon.engine.speaker_turns import distribute_speakers

    rng = random.Random(seed)
    timeline, clock = [], 0.0
    for _ in range(rng.randint(0, 300)):
        clock += rng.choice([0.0, 0.0, 0.25, 1.0, rng.uniform(0, 3)])
        length = rng.choice([0.75, 1.5, rng.uniform(0.1, 9)])
        timeline.append((round(clock, 2), round(clock + length, 2), rng.randint(0, 4)))
        clock += rng.choice([length, length / 2, length + 0.5])
    sentences = []
    for _ in range(rng.randint(0, 200)):
        start = rng.choice([rng.randint(-2000, int(clock * 1000) + 2000), int(rng.choice(timeline)[0] * 1000)
                            if timeline else 0])
        sentences.append({"start": start, "end": start + rng.choice([0, 10, 750, rng.randint(1, 20000)]), "text": "x"})
    expected = distribute_spk(copy.deepcopy(sentences), timeline)
    calls: list[int] = []

    def fallback(s: Any, t: Any) -> Any:
        calls.append(1)
        return distribute_spk(s, t)

    assert distribute_speakers(copy.deepcopy(sentences), timeline, fallback=fallback) == expected
    assert not calls
    shuffled = rng.sample(timeline, len(timeline))
    if any(a[0] > b[0] for a, b in zip(shuffled, shuffled[1:])):
        assert distribute_speakers(copy.deepcopy(sentences), shuffled, fallback=fallback) == \
            distribute_spk(copy.deepcopy(sentences), shuffled)
        assert calls
