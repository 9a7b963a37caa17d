"""Stereo calls: channels as speakers (`channels`: "mix", "split", "auto" or names).

A generated call puts one held-out voice on each channel, with overlapping turns; with
`split` (or names) every segment must carry its own channel's speaker, exactly. `auto`
splits only where the channels really differ; the criterion
(daemon.engine.decode.channel_separation) is measured here on generated cases and printed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from daemon import writers
from daemon.engine.decode import AUTO_SPLIT_SHARE, channel_separation, decode_audio
from daemon.engine.transcriber import Engine
from daemon.errors import OptionsError
from daemon.engine.models import ModelDirs
from daemon.transcript import Transcript
from tests.support.audio import require_tools
from tests.support.dialog import TEST_VOICES, Dialog, dual_mono, make_dialog, make_stereo_call, write_wav

pytestmark = pytest.mark.integration

NAMES = ["客服", "客户"]
# a segment starts with its first token, which lies in its own channel's speech
START_TOLERANCE_SECONDS = 0.3


@pytest.fixture(scope="module")
def engine(tiny_models: ModelDirs) -> Engine:
    return Engine.load(tiny_models, device="cpu", batch_size_s=300)


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> Dialog:
    require_tools("espeak-ng")
    path = tmp_path_factory.mktemp("calls") / "call.wav"
    return make_stereo_call(path, list(TEST_VOICES[:2]), seed=5, overlaps=2, overlap_seconds=1.0)


@pytest.fixture(scope="module")
def named(engine: Engine, call: Dialog) -> Transcript:
    return engine.transcribe(call.path, channels=NAMES)


def _check_channel_speakers(t: Transcript, call: Dialog) -> None:
    assert {s.speaker for s in t.segments} == {1, 2}
    for seg in t.segments:
        own = [turn for turn in call.turns if turn.channel == seg.speaker - 1]
        assert any(turn.start - START_TOLERANCE_SECONDS <= seg.start <= turn.end for turn in own), (
            f"segment {seg} does not start in a turn of channel {seg.speaker - 1}")
    for turn in call.turns:  # every turn is heard, on its own channel
        assert any(s.speaker == turn.channel + 1 and s.start < turn.end and s.end > turn.start for s in t.segments), turn
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)


def test_split_gives_every_segment_its_channel(engine: Engine, call: Dialog) -> None:
    overlapping = [(a, b) for a, b in zip(call.turns, call.turns[1:]) if b.start < a.end]
    assert len(overlapping) == 2, "the call must have overlapping turns"
    t = engine.transcribe(call.path, channels="split")
    _check_channel_speakers(t, call)
    assert [sp.display for sp in t.speakers] == ["Speaker1", "Speaker2"]
    # both parties talking at once: both are kept, each with its own times
    for a, b in overlapping:
        lo, hi = b.start, a.end
        assert {s.speaker for s in t.segments if s.start < hi and s.end > lo} == {1, 2}


def test_names_reach_every_format(named: Transcript, call: Dialog) -> None:
    import srt
    import webvtt

    _check_channel_speakers(named, call)
    assert [sp.display for sp in named.speakers] == NAMES
    out = {fmt: writers.render(fmt, named) for fmt in writers.FORMATS}
    doc = writers.parse_json(out["json"])
    assert doc.speaker_names == {1: "客服", 2: "客户"} and doc.segments == named.segments
    assert all(s["speaker_name"] == NAMES[s["speaker"] - 1] for s in json.loads(out["json"])["segments"])
    for para in filter(None, out["txt"].split("\n\n")):
        assert re.match(r"(客服|客户) \[\d\d:\d\d:\d\d\]: ", para), para
    cues = list(srt.parse(out["srt"]))  # a valid srt, overlapping speech included
    assert cues and all(re.match(r"(客服|客户): ", c.content) for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:])) and all(c.start < c.end for c in cues)
    captions = webvtt.from_string(out["vtt"]).captions
    assert captions and all(c.voice in NAMES for c in captions)
    assert re.findall(r"\| (\S+)\n", out["sentences"]) == [NAMES[s.speaker - 1] for s in named.segments]
    rows = list(csv.reader(io.StringIO(out["tsv"]), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [r[2] for r in rows[1:]] == [NAMES[s.speaker - 1] for s in named.segments]

    rows = re.findall(r'<div class="speaker-row"[^>]*><span class="who"><svg class="swatch".*?</svg>([^<]*)</span>',
                      out["html"])
    assert rows == NAMES  # the timeline rows (writers/html_page.py: a swatch, then the name)
    turns = re.findall(r'<div class="turn"[^>]*><p class="who"><svg class="swatch".*?</svg><strong>([^<]*)</strong>',
                       out["html"])
    assert turns and set(t.strip() for t in turns) == set(NAMES)  # the transcript's turns


def test_more_channels_than_two(engine: Engine, tmp_path: Path) -> None:
    require_tools("espeak-ng")
    call = make_stereo_call(tmp_path / "three.wav", list(TEST_VOICES[:3]), seed=6, min_speech_seconds=15)
    t = engine.transcribe(call.path, channels=["a", "b", "c"])
    assert {s.speaker for s in t.segments} == {1, 2, 3}
    assert [sp.display for sp in t.speakers] == ["a", "b", "c"]
    # fewer names than channels: the rest keep their labels
    t = engine.transcribe(call.path, channels=["a"])
    assert [sp.display for sp in t.speakers] == ["a", "Speaker2", "Speaker3"]


def test_channel_settings_that_cannot_apply(engine: Engine, call: Dialog, two_voice_wav: Path) -> None:
    with pytest.raises(OptionsError, match="mono") as info:
        engine.transcribe(two_voice_wav, channels="split")
    assert info.value.kind == "bad_options" and info.value.permanent
    with pytest.raises(OptionsError, match="mono"):
        engine.transcribe(two_voice_wav, channels=["one"])
    with pytest.raises(OptionsError, match="3 names for a recording with 2 channels"):
        engine.transcribe(call.path, channels=["a", "b", "c"])


@pytest.fixture(scope="module")
def mono_dialog(tmp_path_factory: pytest.TempPathFactory) -> Dialog:
    require_tools("espeak-ng")
    return make_dialog(tmp_path_factory.mktemp("mono") / "dialog.wav", list(TEST_VOICES[:2]), seed=7)


def test_auto_mixes_dual_mono_and_splits_a_call(engine: Engine, mono_dialog: Dialog, call: Dialog,
                                                tmp_path: Path) -> None:
    stereo = dual_mono(tmp_path / "dual.wav", mono_dialog.path)
    mixed = engine.transcribe(mono_dialog.path)
    auto = engine.transcribe(stereo, channels="auto")
    assert len(auto.speakers) == len(mixed.speakers) == 2  # clustered, not split
    assert [(s.start, s.end, s.speaker) for s in auto.segments] == [(s.start, s.end, s.speaker) for s in mixed.segments]
    split = engine.transcribe(call.path, channels="auto")
    _check_channel_speakers(split, call)
    # mono under auto: nothing to split
    assert engine.transcribe(mono_dialog.path, channels="auto").segments == mixed.segments


def test_auto_criterion_on_generated_cases(mono_dialog: Dialog, call: Dialog, tmp_path: Path) -> None:
    """The share of speech frames in which one channel is >= 10 dB louder than the others."""
    rng = np.random.default_rng(0)
    left, right = decode_audio(call.path, keep_channels=True)
    mono = decode_audio(mono_dialog.path)
    n = left.size

    def noise(db: float) -> np.ndarray:
        return (rng.standard_normal(n) * 10 ** (db / 20)).astype(np.float32)

    # a spaced stereo pair in one room: each voice reaches the far microphone 6 dB down, 0.6 ms late
    delay = int(0.0006 * 16000)
    far_l, far_r = np.roll(right, delay) * 0.5, np.roll(left, delay) * 0.5
    cases = {
        "dual mono": (np.stack([mono, mono]), False),
        "stereo mic, everyone on both (6 dB apart)": (np.stack([left + far_l, right + far_r]), False),
        "stereo mic, 3 dB apart": (np.stack([left + far_l * 1.41, right + far_r * 1.41]), False),
        "call, clean": (np.stack([left, right]), True),
        "call, -25 dB echo and -55 dBFS line noise": (
            np.stack([left + 0.056 * right + noise(-55), right + 0.056 * left + noise(-55)]), True),
        "call, -15 dB crosstalk": (np.stack([left + 0.18 * right, right + 0.18 * left]), True),
    }
    for name, (channels, split) in cases.items():
        share = channel_separation(channels.astype(np.float32))
        print(f"auto: {name}: {share:.0%} of speech frames >= 10 dB apart -> {'split' if split else 'mix'}")
        assert (share >= AUTO_SPLIT_SHARE) == split, (name, share)
    # wav round trip of a generated file: the decoder keeps the channels apart
    path = write_wav(tmp_path / "lr.wav", [left, np.zeros_like(left)])
    decoded = decode_audio(path, keep_channels=True)
    assert decoded.shape == (2, n) and np.abs(decoded[1]).max() == 0.0
