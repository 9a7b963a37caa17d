"""The real FunASR pipeline (VAD + SeACo Paraformer + CT punctuation + CAM++) on tiny
random models over a synthetic two-voice recording.

The tiny models' words are meaningless: these tests assert structure, timing and
bookkeeping, never words. The engine is loaded once per module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daemon.engine.transcriber import Engine, guard_empty_batches, rows_from_result
from daemon.errors import AudioError, DeviceError, NotAudioError, OptionsError, OutOfMemoryError
from daemon.engine.models import PINNED, ModelDirs
from daemon.options import MAX_SPEAKERS, hotword_words, validate
from daemon.transcript import Transcript
from tests.support.audio import (
    duration_seconds,
    make_image_file,
    make_silence_wav,
    require_tools,
    to_m4a,
    to_mp3,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tiny_models: ModelDirs) -> Engine:
    return Engine.load(tiny_models, device="cpu", batch_size_s=300)


@pytest.fixture(scope="module")
def two_voice_transcript(engine: Engine, two_voice_wav: Path) -> Transcript:
    return engine.transcribe(two_voice_wav, source_name="meeting/two_voices.wav")


def assert_well_formed(t: Transcript) -> None:
    assert t.audio_seconds > 0
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts), "segments out of order"
    for s in t.segments:
        assert 0.0 <= s.start < s.end <= t.audio_seconds + 1e-6, s
        assert s.speaker >= 1 and s.text.strip(), s
    used = sorted({s.speaker for s in t.segments})
    assert used == list(range(1, len(used) + 1)), f"speakers not numbered 1..n: {used}"
    # numbered by first appearance
    first_seen: list[int] = []
    for s in t.segments:
        if s.speaker not in first_seen:
            first_seen.append(s.speaker)
    assert first_seen == sorted(first_seen)


def test_two_voices_structure(two_voice_transcript: Transcript, two_voice_wav: Path) -> None:
    t = two_voice_transcript
    assert len(t.segments) >= 2
    assert_well_formed(t)
    assert t.audio_seconds == pytest.approx(duration_seconds(two_voice_wav), abs=0.05)
    # speech is inside the recording's speech span: nothing in the leading silence
    assert t.segments[0].start >= 0.5 and t.segments[-1].end <= t.audio_seconds
    assert t.source is not None and t.source.name == "meeting/two_voices.wav"
    assert t.source.duration_seconds == pytest.approx(t.audio_seconds)
    # no hint: the trained tiny CAM++ and FunASR's clustering find the two held-out voices
    assert t.text and len(t.speakers) == 2


def test_progress_names_each_stage_in_order(engine: Engine, two_voice_wav: Path,
                                            two_voice_transcript: Transcript) -> None:
    """The stages come from FunASR's own sub-model calls (wrapped per instance, on top of
    the speaker batching hooks); reporting them changes nothing in the result."""
    heard: list[tuple[str, float | None]] = []
    t = engine.transcribe(two_voice_wav, source_name="meeting/two_voices.wav",
                          progress=lambda stage, fraction: heard.append((stage, fraction)))
    firsts = list(dict.fromkeys(stage for stage, _ in heard))
    assert firsts == ["decoding", "vad", "asr", "punctuation", "speakers"], heard
    asr = [f for stage, f in heard if stage == "asr"]
    assert all(f is not None for f in asr) and asr == sorted(asr), asr
    assert asr[0] == 0.0 and asr[-1] == pytest.approx(1.0), "the fraction counts the VAD segments' speech"
    assert engine.speaker_batcher is not None and engine.speaker_batcher.last_stats.windows > 0
    assert t.segments == two_voice_transcript.segments


def test_bookkeeping(two_voice_transcript: Transcript, engine: Engine, tiny_models: ModelDirs) -> None:
    t = two_voice_transcript
    assert t.engine is not None
    assert t.engine.funasr_version and t.engine.funasr_version[0].isdigit()
    assert t.engine.device == "cpu"
    assert [m.role for m in t.engine.models] == ["asr", "vad", "punc", "spk"]
    assert [m.name for m in t.engine.models] == ["paraformer-zh", "fsmn-vad", "ct-punc-c", "cam++"]
    assert [m.path for m in t.engine.models] == [str(p) for _, p in tiny_models.items()]
    assert t.engine.models[0].revision == "tiny"
    assert t.timing.load_seconds == engine.load_seconds and engine.load_seconds > 0
    assert t.timing.transcribe_seconds is not None and t.timing.transcribe_seconds > 0
    assert t.rtf is not None and 0 < t.rtf < 5


def test_m4a_matches_wav(engine: Engine, two_voice_transcript: Transcript, two_voice_wav: Path,
                         tmp_path: Path) -> None:
    # same samples through the m4a container path: exactly the same segmentation
    t = engine.transcribe(to_m4a(two_voice_wav, tmp_path / "lossless.m4a", lossless=True))
    assert t.audio_seconds == two_voice_transcript.audio_seconds
    assert [(s.start, s.end, s.speaker) for s in t.segments] == [
        (s.start, s.end, s.speaker) for s in two_voice_transcript.segments
    ]


def test_aac_m4a_matches_wav_closely(engine: Engine, two_voice_transcript: Transcript, two_voice_m4a: Path) -> None:
    # AAC shifts onsets by a frame or two, which may move a tiny model's token count by
    # one and with it a (position-driven) sentence end; speech span and size must hold.
    t = engine.transcribe(two_voice_m4a)
    wav = two_voice_transcript
    assert_well_formed(t)
    assert t.audio_seconds == pytest.approx(wav.audio_seconds, abs=0.1)
    assert abs(len(t.segments) - len(wav.segments)) <= 2
    assert t.segments[0].start == pytest.approx(wav.segments[0].start, abs=0.3)
    assert t.segments[-1].end == pytest.approx(wav.segments[-1].end, abs=0.3)
    assert len(t.text) == pytest.approx(len(wav.text), rel=0.15)


def test_mp3_decodes_too(engine: Engine, two_voice_wav: Path, two_voice_transcript: Transcript,
                         tmp_path: Path) -> None:
    require_tools("ffmpeg")
    t = engine.transcribe(to_mp3(two_voice_wav, tmp_path / "two.mp3"))
    assert_well_formed(t)
    assert len(t.segments) == len(two_voice_transcript.segments)


def test_silence_gives_zero_segments(engine: Engine, tmp_path: Path) -> None:
    require_tools("sox")
    t = engine.transcribe(make_silence_wav(tmp_path / "silence.wav", 5.0))
    assert t.segments == ()
    assert t.audio_seconds == pytest.approx(5.0, abs=0.01)
    assert t.speakers == () and t.text == ""
    assert t.engine is not None and t.timing.transcribe_seconds is not None


def test_random_bytes_are_bad_audio(engine: Engine, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(AudioError) as info:
        engine.transcribe(junk)
    assert info.value.kind == "bad_audio" and info.value.permanent
    assert "junk.wav" in str(info.value) and "\n" not in str(info.value)


def test_file_without_audio_stream_is_not_audio(engine: Engine, tmp_path: Path) -> None:
    require_tools("ffmpeg")
    with pytest.raises(NotAudioError) as info:
        engine.transcribe(make_image_file(tmp_path / "picture.png"))
    assert info.value.kind == "not_audio" and "no audio stream" in str(info.value)


def test_missing_and_empty_files(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        engine.transcribe(tmp_path / "gone.wav")
    (tmp_path / "empty.m4a").write_bytes(b"")
    with pytest.raises(AudioError) as info:
        engine.transcribe(tmp_path / "empty.m4a")
    assert info.value.kind == "bad_audio"


def test_speaker_count_hint(engine: Engine, two_voice_wav: Path) -> None:
    t = engine.transcribe(two_voice_wav, speakers=2)
    assert_well_formed(t)
    assert len(t.speakers) == 2
    # the hint is FunASR's oracle count: three asked, three given, though two spoke
    assert len(engine.transcribe(two_voice_wav, speakers=3).speakers) == 3
    with pytest.raises(OptionsError):
        engine.transcribe(two_voice_wav, speakers=0)


@pytest.mark.parametrize("speakers", [MAX_SPEAKERS + 1, 30])
def test_a_speaker_count_validation_refuses_the_engine_refuses_alike(engine: Engine, two_voice_wav: Path,
                                                                      speakers: int) -> None:
    """One limit, one check: what a sidecar may not ask for, the engine refuses with the
    same message (a job queued with it fails as bad_options in the worker, never inside FunASR)."""
    with pytest.raises(OptionsError) as by_sidecar:
        validate({"speakers": speakers}, source="two_voices.wav")
    with pytest.raises(OptionsError) as by_engine:
        engine.transcribe(two_voice_wav, speakers=speakers, source_name="two_voices.wav")
    assert str(by_engine.value) == str(by_sidecar.value)
    assert by_engine.value.kind == "bad_options" and by_engine.value.permanent


def test_a_job_asking_for_too_many_speakers_fails_in_the_worker_as_validation_says(
        engine: Engine, two_voice_wav: Path, tmp_path: Path) -> None:
    """A job queued with `speakers: 30` (by an older spkd, whose limit was 64) fails in
    the worker exactly as the sidecar check would have failed it: permanently, as
    bad_options, with the same message, its source in failed/ with its .error.json."""
    import shutil

    from daemon.store import db
    from daemon.jobs import spool
    from daemon.store import Store
    from daemon.jobs.worker import Worker, WorkerSpec
    from tests.support.config import make_config

    config = make_config(tmp_path)
    db.migrate(config.database_url)
    source = spool.new_slot(config.paths.spool) / "many.wav"
    source.parent.mkdir(parents=True)
    shutil.copy2(two_voice_wav, source)
    store = Store(config.database_url, host="h1")
    try:
        job_id = store.enqueue(source_name="many.wav", spool_path=str(source), output_stem="many", sha256=None,
                               size_bytes=source.stat().st_size, options={"speakers": 30})
        worker = Worker(config, WorkerSpec(slot=0, device="cpu", env={}, threads=1), store=store)
        worker.engine = engine
        job = store.claim(slot=0, pid=worker.pid, device="cpu", lease_seconds=60)
        assert job is not None and job.options == {"speakers": 30}
        worker.process(job)
        row = store.job(job_id)
    finally:
        store.close()
    with pytest.raises(OptionsError) as by_sidecar:
        validate({"speakers": 30}, source="many.wav")
    assert (row.state, row.error_kind, row.attempts) == ("failed", "bad_options", 1)
    assert row.error_message == str(by_sidecar.value)
    assert (config.paths.failed / "many.wav").is_file() and (config.paths.failed / "many.wav.error.json").is_file()


def test_the_most_speakers_validation_allows_run_through_funasr(engine: Engine, two_voice_wav: Path) -> None:
    assert validate({"speakers": MAX_SPEAKERS})["speakers"] == MAX_SPEAKERS
    assert_well_formed(engine.transcribe(two_voice_wav, speakers=MAX_SPEAKERS))


def test_max_speakers_is_what_funasrs_clusterer_can_always_give() -> None:
    """FunASR clusters from 20 speaker windows up and cannot make more clusters than
    windows: MAX_SPEAKERS works on the smallest clustered input, one more fails there."""
    import numpy as np
    import torch

    from daemon.engine.models import import_funasr

    import_funasr()
    from funasr.models.campplus.cluster_backend import ClusterBackend

    windows = torch.tensor(np.random.default_rng(0).normal(size=(20, 192)), dtype=torch.float32)
    labels = ClusterBackend()(windows, oracle_num=MAX_SPEAKERS)
    assert len(set(labels.tolist())) == MAX_SPEAKERS
    with pytest.raises(ValueError):
        ClusterBackend()(windows, oracle_num=MAX_SPEAKERS + 1)


def test_hotwords(engine: Engine, two_voice_wav: Path, two_voice_transcript: Transcript) -> None:
    # a hotword starting with "http" must not make FunASR try to download anything
    t = engine.transcribe(two_voice_wav, hotwords=["http://example.invalid/x", "spkd", "魔搭", "spkd", "notes.txt"])
    assert_well_formed(t)
    assert len(t.segments) == len(two_voice_transcript.segments)


# Common characters (the tiny vocabulary's among them) for hotword lists of any length.
_CHARS = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"


def _hotword_list(n: int) -> list[str]:
    return [_CHARS[i % len(_CHARS)] + _CHARS[(i * 7 + 3) % len(_CHARS)] + str(i) for i in range(n)]


def test_sixty_hotwords_take_seacos_filtered_path(engine: Engine, two_voice_wav: Path,
                                                  two_voice_transcript: Transcript,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # From 50 hotwords on, SeACo first keeps the 50 most relevant (forward_asf6, which runs
    # six attention layers of the hotword decoder, as many as the real model has)
    seaco_decoder = engine.model.model.seaco_decoder
    filtered: list[int] = []
    original = seaco_decoder.forward_asf6

    def forward_asf6(contextual_info: Any, *args: Any, **kwargs: Any) -> Any:
        filtered.append(int(contextual_info.shape[1]))
        return original(contextual_info, *args, **kwargs)

    monkeypatch.setattr(seaco_decoder, "forward_asf6", forward_asf6)
    words = _hotword_list(60)
    assert len(set(words)) == 60
    t = engine.transcribe(two_voice_wav, hotwords=words)
    assert filtered and set(filtered) == {61}  # the 60 words and SeACo's own end marker
    assert_well_formed(t)
    # the tiny model's hotword head defers to the plain decoder: the same transcript
    assert [(s.start, s.end, s.speaker, s.text) for s in t.segments] == [
        (s.start, s.end, s.speaker, s.text) for s in two_voice_transcript.segments]

    # fewer than 50 take the direct path
    filtered.clear()
    engine.transcribe(two_voice_wav, hotwords=_hotword_list(10))
    assert filtered == []


def test_the_sidecar_hotword_limit_runs(engine: Engine, two_voice_wav: Path) -> None:
    from daemon.options import MAX_HOTWORDS, validate

    words = validate({"hotwords": _hotword_list(MAX_HOTWORDS)})["hotwords"]
    assert_well_formed(engine.transcribe(two_voice_wav, hotwords=words))


def test_tiny_models_load_the_way_fetched_ones_do(engine: Engine, tiny_models: ModelDirs) -> None:
    # FunASR loads a directory with a configuration.json from the files it names: the
    # tiny models are laid out like the real repositories, so they take that branch
    import torch

    loaded = {"asr": (engine.model.kwargs, engine.model.model), "vad": (engine.model.vad_kwargs, engine.model.vad_model),
              "punc": (engine.model.punc_kwargs, engine.model.punc_model),
              "spk": (engine.model.spk_kwargs, engine.model.spk_model)}
    for role, path in tiny_models.items():
        pinned = PINNED[role]
        conf = json.loads((path / "configuration.json").read_text(encoding="utf-8"))
        assert conf["file_path_metas"] == pinned.file_path_metas
        assert conf["model_name_in_hub"]["ms"] == pinned.model_id
        kwargs, model = loaded[role]
        assert kwargs["init_param"] == str(path / pinned.weights)
        saved = torch.load(path / pinned.weights, map_location="cpu")
        state = model.state_dict()
        assert saved.keys() == state.keys()
        assert all(torch.equal(saved[k], state[k].cpu()) for k in saved), f"{role}: weights not loaded"
    assert (tiny_models.spk / "campplus_cn_common.bin").is_file() and not (tiny_models.spk / "model.pt").exists()
    # paths that only the configuration.json branch fills in
    asr = tiny_models.asr
    assert engine.model.kwargs["tokenizer_conf"]["seg_dict_file"] == str(asr / "seg_dict")
    assert engine.model.kwargs["tokenizer_conf"]["token_list"] == str(asr / "tokens.json")
    assert engine.model.kwargs["frontend_conf"]["cmvn_file"] == str(asr / "am.mvn")


def test_relative_model_paths_reach_funasr_absolute(tiny_models: ModelDirs, two_voice_wav: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # `cam++` relative to here is also FunASR's hub alias for CAM++: it must never see it
    # (and if it tried the hub, it should fail at once)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tiny_models.spk.parent)
    relative = ModelDirs(asr=Path("paraformer-zh"), vad=Path("./fsmn-vad"), punc=Path("ct-punc-c"),
                         spk=Path("./cam++"))
    engine = Engine.load(relative, device="cpu")
    assert engine.model.spk_kwargs["init_param"] == str(tiny_models.spk / "campplus_cn_common.bin")
    t = engine.transcribe(two_voice_wav)
    assert_well_formed(t)
    assert len(t.segments) >= 2


def test_without_speaker_model_everyone_is_speaker_1(tiny_models: ModelDirs, two_voice_wav: Path) -> None:
    engine = Engine.load(ModelDirs(asr=tiny_models.asr, vad=tiny_models.vad, punc=tiny_models.punc, spk=None))
    t = engine.transcribe(two_voice_wav, speakers=2)  # the hint is ignored, not an error
    assert_well_formed(t)
    assert len(t.segments) >= 2 and {s.speaker for s in t.segments} == {1}
    assert [m.role for m in t.engine.models] == ["asr", "vad", "punc"]  # type: ignore[union-attr]


def test_asr_batch_without_tokens_does_not_crash(engine: Engine, two_voice_wav: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # SeACo returns no result at all for a batch without tokens (real models: a noise
    # burst); FunASR's speaker path then failed with IndexError before the guard.
    asr = engine.model.model
    real = asr.inference.__wrapped__
    calls = {"n": 0}

    def flaky(data_in: Any, data_lengths: Any = None, key: Any = None, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            return ([],)
        return real(data_in, data_lengths=data_lengths, key=key, **kwargs)

    shim = SimpleNamespace(inference=flaky)
    guard_empty_batches(shim)
    monkeypatch.setattr(asr, "inference", shim.inference)
    t = engine.transcribe(two_voice_wav, speakers=2)
    assert calls["n"] > 2
    assert_well_formed(t)
    assert t.segments


def test_out_of_memory_becomes_device_error(engine: Engine, two_voice_wav: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.model, "generate", boom)
    with pytest.raises(OutOfMemoryError) as info:
        engine.transcribe(two_voice_wav)
    assert info.value.kind == "oom" and not info.value.permanent
    assert "batch_size_s=300" in str(info.value)


def test_batch_size_is_settable_and_release_is_safe(engine: Engine, two_voice_wav: Path) -> None:
    before = engine.batch_size_s
    try:
        engine.batch_size_s = 5
        t = engine.transcribe(two_voice_wav)
        assert_well_formed(t)
    finally:
        engine.batch_size_s = before
    engine.release()
    engine.release()


def test_unavailable_device_is_refused(tiny_models: ModelDirs) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(DeviceError, match="not available"):
        Engine.load(tiny_models, device="cuda:0")


# --------------------------------------------------------------------------- result mapping


def test_result_rows_from_sentence_info() -> None:
    result = {
        "text": "甲乙。丙丁。",
        "sentence_info": [
            {"start": 880, "end": 1960, "text": "甲乙。", "spk": 3},
            {"start": 2000, "end": 2000, "text": ["丙", "丁"], "spk": 1},  # list text, zero length
            {"start": 2100, "end": 9000, "text": "", "spk": 1},  # empty: dropped
            {"start": 4900, "end": 7000, "text": "戊", "spk": 2},  # past the end: clamped
            {"start": 5000, "end": 5000, "text": "己", "spk": 2},  # zero length at the end
        ],
    }
    rows = rows_from_result(result, duration=5.0, with_speakers=True)
    assert rows[0] == (0.88, 1.96, 3, "甲乙。")
    assert rows[1][2:] == (1, "丙 丁") and rows[1][:2] == pytest.approx((2.0, 2.001))
    assert rows[2] == (4.9, 5.0, 2, "戊")
    assert rows[3][:2] == pytest.approx((4.999, 5.0))
    assert len(rows) == 4
    assert [r[2] for r in rows_from_result(result, 5.0, with_speakers=False)] == [None] * 4


def test_result_rows_without_sentence_info() -> None:
    result = {"text": "甲乙丙", "timestamp": [[500, 700], [700, 900], [900, 7000]]}
    assert rows_from_result(result, duration=6.0, with_speakers=False) == [(0.5, 6.0, None, "甲乙丙")]
    assert rows_from_result({"key": "k", "text": "", "timestamp": []}, 6.0, True) == []


def test_hotword_cleaning() -> None:
    assert hotword_words(["魔搭", " spkd ", "New York", "spkd", ""]) == ["魔搭", "spkd", "New", "York"]
