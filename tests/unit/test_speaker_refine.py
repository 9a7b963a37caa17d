"""The speaker refinements on their own (no FunASR): daemon.engine.speaker_refine on
made-up embeddings and windows, sentence cuts at pauses and sentence ends moved to the
speech (daemon.engine.speaker_turns),
speakers merged by the voice library (daemon.voices.matching), and their config keys.

Embeddings: each voice is a random unit direction; a window is its voice's direction
plus noise, so that windows of one voice sit at cosine ~0.8 with their centroid and
different voices near 0, as the real and the tiny CAM++ put held-out voices."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from daemon import config as cfg
from daemon.engine.speaker_refine import REAL_CAMPP, TINY_CAMPP, RefineSettings, defaults_for, refine_labels, \
    settings_for
from daemon.engine.speaker_turns import cut_sentence, frame_levels, trim_to_speech
from daemon.errors import ConfigError
from daemon.store.rows import SampleRow
from daemon.transcript import ModelInfo, EngineInfo, Segment, Transcript
from daemon.voices.matching import name_speakers

DIM = 32
SETTINGS = RefineSettings(min_speaker_seconds=2.2, transition_share=0.8, distinct_margin=0.15, merge_cosine=0.68)


class Recording:
    """Windows of 1.5 s every 0.75 s inside turns, each turn its own VAD segment."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.voices: dict[str, np.ndarray] = {}
        self.embeddings: list[np.ndarray] = []
        self.times: list[tuple[float, float]] = []
        self.truth: list[str] = []
        self.clock = 0.0

    def voice(self, name: str) -> np.ndarray:
        if name not in self.voices:
            v = self.rng.normal(size=DIM)
            self.voices[name] = v / np.linalg.norm(v)
        return self.voices[name]

    def window(self, name: str, start: float, end: float, *, mix: str | None = None) -> None:
        v = self.voice(name) if mix is None else (self.voice(name) + self.voice(mix)) / 2
        self.embeddings.append(v + self.rng.normal(scale=0.12, size=DIM))
        self.times.append((start, end))
        self.truth.append(name)

    def turn(self, name: str, seconds: float, *, then: str | None = None) -> None:
        """A turn of `name`; with `then`, the turn runs on into `then`'s speech in one
        VAD segment (no pause), the window across the change a mixture of both."""
        start = self.clock
        t = start
        while t + 1.5 <= start + seconds + 1e-9:
            self.window(name, t, t + 1.5)
            t += 0.75
        if t < start + seconds:  # the last window, aligned to the segment end
            self.window(name, max(start, start + seconds - 1.5), start + seconds)
        self.clock = start + seconds + (0.0 if then else 2.0)

    def labels_from(self, clusters: dict[str, int]) -> np.ndarray:
        return np.array([clusters[t] for t in self.truth])


def count(labels: np.ndarray) -> int:
    return len(set(labels.tolist()))


def test_a_voice_split_in_two_is_one_speaker_again() -> None:
    rec = Recording()
    for _ in range(6):
        rec.turn("a", 5)
        rec.turn("b", 5)
    labels = np.array([0 if t == "a" else 1 for t in rec.truth])
    a_windows = np.where(labels == 0)[0]
    labels[a_windows[::3]] = 2  # FunASR's extra speaker: a third of a's windows
    refined = refine_labels(labels, rec.embeddings, rec.times, SETTINGS)
    assert count(refined) == 2
    assert len({refined[i] for i in a_windows}) == 1


def test_two_different_voices_stay_two_and_numbering_is_by_first_appearance() -> None:
    rec = Recording(1)
    for _ in range(4):
        rec.turn("a", 4)
        rec.turn("b", 4)
    labels = np.array([7 if t == "a" else 3 for t in rec.truth])
    refined = refine_labels(labels, rec.embeddings, rec.times, SETTINGS)
    assert refined.tolist() == [0 if t == "a" else 1 for t in rec.truth]


def test_a_person_who_says_two_short_sentences_stays_a_speaker() -> None:
    rec = Recording(2)
    for turn in range(8):
        rec.turn("main", 6)
        if turn in (1, 4):
            rec.turn("other", 1.6)  # two sentences, ~3 s in all, a clearly different voice
    labels = np.array([0 if t == "main" else 1 for t in rec.truth])
    refined = refine_labels(labels, rec.embeddings, rec.times, SETTINGS)
    assert count(refined) == 2
    assert (refined == refined[rec.truth.index("other")]).sum() == rec.truth.count("other")


def test_a_window_or_two_is_not_a_person() -> None:
    rec = Recording(3)
    for _ in range(5):
        rec.turn("a", 5)
        rec.turn("b", 5)
    rec.turn("c", 2.0)  # two windows of a third voice: too little talk to be anyone
    labels = rec.labels_from({"a": 0, "b": 1, "c": 2})
    refined = refine_labels(labels, rec.embeddings, rec.times, SETTINGS)
    assert count(refined) == 2
    assert count(refine_labels(labels, rec.embeddings, rec.times,
                               RefineSettings(0.5, SETTINGS.transition_share, SETTINGS.distinct_margin,
                                              SETTINGS.merge_cosine))) == 3


def test_windows_across_speaker_changes_are_shared_out() -> None:
    """HDBSCAN's leftovers: the windows straddling a change of speaker inside one VAD
    segment cluster together, a 'speaker' made of everyone."""
    rec = Recording(4)
    mixed: list[int] = []
    for _ in range(12):
        for name, nxt in (("a", "b"), ("b", "c"), ("c", "a")):
            rec.turn(name, 8, then=nxt)
            mixed.append(len(rec.embeddings))
            rec.window(name, rec.clock - 0.75, rec.clock + 0.75, mix=nxt)
    labels = np.array([{"a": 0, "b": 1, "c": 2}[t] for t in rec.truth])
    leftovers = np.asarray(mixed)
    labels[leftovers] = 3
    # the leftovers look like a voice of their own (near each other, far from each voice)
    embeddings = np.asarray(rec.embeddings)
    embeddings[leftovers] = rec.voice("leftover") + rec.rng.normal(scale=0.12, size=(leftovers.size, DIM))
    refined = refine_labels(labels, embeddings, rec.times, SETTINGS)
    assert count(refined) == 3
    # without the transition rule they would stay a fourth speaker
    assert count(refine_labels(labels, embeddings, rec.times,
                               RefineSettings(SETTINGS.min_speaker_seconds, 1.01, SETTINGS.distinct_margin,
                                              SETTINGS.merge_cosine))) == 4


def test_close_centroids_merge_at_the_model_s_cosine() -> None:
    rec = Recording(5)
    base = rec.voice("a")
    other = rec.rng.normal(size=DIM)
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    rec.voices["a2"] = 0.9 * base + np.sqrt(1 - 0.81) * other  # cosine 0.9 with a
    for _ in range(6):
        rec.turn("a", 5)
        rec.turn("a2", 5)
        rec.turn("b", 5)
    labels = rec.labels_from({"a": 0, "a2": 1, "b": 2})
    never = RefineSettings(0.0, 1.01, -2.0, 1.01)  # every rule off: labels only renumbered
    assert count(refine_labels(labels, rec.embeddings, rec.times, never)) == 3
    assert count(refine_labels(labels, rec.embeddings, rec.times, RefineSettings(0.0, 1.01, -2.0, 0.7))) == 2


def test_nothing_to_refine() -> None:
    assert refine_labels([], np.zeros((0, DIM)), [], SETTINGS).tolist() == []
    rec = Recording(6)
    rec.turn("a", 10)
    one = refine_labels([4] * len(rec.truth), rec.embeddings, rec.times, SETTINGS)
    assert one.tolist() == [0] * len(rec.truth)


def test_defaults_belong_to_the_speaker_model() -> None:
    assert defaults_for({"tiny": True}) == TINY_CAMPP
    assert defaults_for({"tiny": False, "model_id": "iic/speech_campplus_sv_zh-cn_16k-common"}) == REAL_CAMPP
    # 3D-Speaker's published configuration for the real CAM++: mer_cos 0.8
    assert REAL_CAMPP.merge_cosine == 0.8
    assert settings_for({"tiny": True}, {"merge_cosine": 0.9, "distinct_margin": None}) == \
        RefineSettings(TINY_CAMPP.min_speaker_seconds, TINY_CAMPP.transition_share, TINY_CAMPP.distinct_margin, 0.9)


# --------------------------------------------------------------------------- pauses


def tokens(*spans: tuple[float, float]) -> list[list[float]]:
    return [[a * 1000, b * 1000] for a, b in spans]


def test_a_sentence_is_cut_at_a_pause_longer_than_the_limit() -> None:
    toks = tokens((13.9, 14.1), (14.1, 14.3), (14.3, 14.6), (34.0, 34.3), (34.3, 34.9))
    pieces = cut_sentence("我们开会吧", 13.9, 34.9, toks, None, 1.0)
    assert pieces == [(13.9, 14.6, None, "我们开"), (34.0, 34.9, None, "会吧")]


def test_a_sentence_without_such_a_pause_stays_whole() -> None:
    toks = tokens((1.0, 1.2), (1.2, 1.5), (2.3, 2.6), (2.6, 3.0))
    assert cut_sentence("一二三四", 1.0, 3.0, toks, None, 1.0) is None
    assert cut_sentence("一二三四", 1.0, 3.0, toks, None, None) is None
    assert cut_sentence("一二三四", 1.0, 3.0, toks, [(0.0, 10.0, 0)], 1.0) is None


def test_pause_and_speaker_cuts_together() -> None:
    toks = tokens((0.0, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.2), (5.0, 5.3), (5.3, 5.6))
    timeline = [(0.0, 0.6, 0), (0.6, 1.2, 1), (4.9, 6.0, 1)]
    pieces = cut_sentence("甲乙丙丁戊己", 0.0, 5.6, toks, timeline, 2.0)
    assert pieces == [(0.0, 0.6, 0, "甲乙"), (0.6, 1.2, 1, "丙丁"), (5.0, 5.6, 1, "戊己")]


def test_a_piece_with_no_text_is_dropped_not_stretched_over_the_pause() -> None:
    # FunASR's text can hold fewer characters than the sentence has tokens (the tiny ASR's
    # "你。" over 6 tokens): the text goes to one piece (cut at the same share of its
    # characters as the tokens), and the pieces without any are dropped rather than the
    # whole sentence kept over both pauses
    toks = tokens((1.0, 1.2), (1.2, 1.4), (4.0, 4.2), (4.2, 4.4), (8.0, 8.2), (8.2, 8.4))
    assert cut_sentence("你。", 1.0, 8.4, toks, None, 1.0) == [(4.0, 4.4, None, "你。")]


# --------------------------------------------------------------------------- ends at speech

RATE = 16000


def tone(seconds: float, level_db: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (10 ** (level_db / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t + rng.uniform(0, 6))).astype(np.float32)


def test_sentence_ends_move_inwards_to_the_speech() -> None:
    rng = np.random.default_rng(1)
    # 1 s of digital silence, 1 s of "speech" at -20 dB, 1 s of silence
    audio = np.concatenate([np.zeros(RATE, np.float32), tone(1.0, -20.0, rng), np.zeros(RATE, np.float32)])
    levels = frame_levels(audio, RATE)
    assert levels.size == 300 and levels[:100].max() == -100.0 and abs(levels[150] + 20.0) < 0.5
    rows = [(0.7, 2.3, 1, "一二三"), (0.1, 0.6, 2, "四"), (1.2, 1.8, 1, "五")]
    trimmed = trim_to_speech(rows, levels)
    assert trimmed[0][2:] == (1, "一二三") and abs(trimmed[0][0] - 1.0) <= 0.01 and abs(trimmed[0][1] - 2.0) <= 0.01
    # no speech under it: kept as it is; all speech: kept as it is
    assert trimmed[1:] == rows[1:]


def test_a_noise_floor_is_not_speech_and_a_soft_onset_is() -> None:
    rng = np.random.default_rng(2)
    noise = (10 ** (-60 / 20) * rng.standard_normal(4 * RATE)).astype(np.float32)
    audio = noise.copy()
    audio[RATE : RATE + RATE // 5] += tone(0.2, -45.0, rng)  # a soft onset, 25 dB under the loud part
    audio[RATE + RATE // 5 : 3 * RATE] += tone(1.8, -20.0, rng)
    trimmed = trim_to_speech([(0.5, 3.5, 1, "一二三"), (3.2, 3.9, 1, "四")], frame_levels(audio, RATE))
    assert abs(trimmed[0][0] - 1.0) <= 0.02 and abs(trimmed[0][1] - 3.0) <= 0.02
    assert trimmed[1] == (3.2, 3.9, 1, "四")  # only the noise floor under it
    assert trim_to_speech([(0.0, 1.0, 1, "x")], np.zeros(0)) == [(0.0, 1.0, 1, "x")]


# --------------------------------------------------------------------------- known voices


def transcript_of(centroids: dict[int, list[float]]) -> Transcript:
    segments = tuple(Segment(start=float(i), end=float(i) + 0.9, speaker=k, text=f"句{i}")
                     for i, k in enumerate([1, 2, 1, 3, 2, 1]))
    engine = EngineInfo(funasr_version="1.4.16", device="cpu",
                        models=(ModelInfo(role="spk", name="cam++", revision="tiny", path="/m"),))
    return Transcript(segments=segments, audio_seconds=7.0, engine=engine,
                      speaker_centroids={k: tuple(v) for k, v in centroids.items()})


def Sample(voice_id: int, name: str, embedding: list[float]) -> SampleRow:
    return SampleRow(id=voice_id, voice_id=voice_id, name=name, embedding=tuple(embedding), model_name="cam++",
                     model_revision="tiny", dimension=len(embedding), sha256=None, speech_seconds=10.0,
                     origin="folder", source=None, job_id=None, created_at=dt.datetime(2026, 1, 1))


def test_two_speakers_matching_one_voice_become_one() -> None:
    transcript = transcript_of({1: [1.0, 0.05, 0.0], 2: [0.0, 1.0, 0.0], 3: [0.99, 0.0, 0.1]})
    library = [Sample(1, "王总", [1.0, 0.0, 0.0]), Sample(2, "李娜", [0.0, 0.0, 1.0])]
    named = name_speakers(transcript, library, threshold=0.9, margin=0.05, merge=True)
    assert {s.speaker for s in named.segments} == {1, 2}
    assert named.speaker_names == {1: "王总"}
    assert [named.speaker_display(s.speaker) for s in named.segments] == \
        ["王总", "Speaker1", "王总", "王总", "Speaker1", "王总"]
    assert set(named.speaker_centroids) == {1, 2}
    # without merging (speakers.refine false) the second match stays unnamed
    kept = name_speakers(transcript, library, threshold=0.9, margin=0.05)
    assert {s.speaker for s in kept.segments} == {1, 2, 3}


def test_no_merge_on_a_guess() -> None:
    # speaker 3 is near 王总 but under the threshold: it stays as clustering left it
    transcript = transcript_of({1: [1.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0], 3: [0.8, 0.0, 0.6]})
    library = [Sample(1, "王总", [1.0, 0.0, 0.0])]
    named = name_speakers(transcript, library, threshold=0.9, margin=0.05, merge=True)
    assert {s.speaker for s in named.segments} == {1, 2, 3}
    assert named.speaker_names == {1: "王总"}


# --------------------------------------------------------------------------- config


def load(tmp_path, data: dict) -> cfg.Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return cfg.load(path, env={})


def test_config_keys(tmp_path) -> None:
    config = load(tmp_path, {})
    assert config.speakers.refine is True
    assert config.speakers.refine_overrides() == {"min_speaker_seconds": None, "transition_share": None,
                                                  "distinct_margin": None, "merge_cosine": None}
    assert config.output.max_pause_seconds == 1.0
    config = load(tmp_path, {"speakers": {"refine": False, "merge_cosine": 0.75}, "output": {"max_pause_seconds": 2}})
    assert config.speakers.refine is False and config.speakers.merge_cosine == 0.75
    assert config.output.max_pause_seconds == 2.0
    for bad in ({"speakers": {"merge_cosine": 3}}, {"speakers": {"refine": "yes"}},
                {"output": {"max_pause_seconds": 0}}, {"speakers": {"transition_share": 0}}):
        with pytest.raises(ConfigError):
            load(tmp_path, bad)
