"""The voice library on the real pipeline: FunASR's own CAM++ windows and clustering,
the tiny speaker model that separates voices, held-out voices only
(tests/support/dialog.py TEST_VOICES: A m3, B f1, C victor, D m7).

Enrol A from a solo recording; a dialog of A and B names A and leaves B `Speaker…`; a
dialog of B and C names nobody; a sample of another model revision is skipped with a
warning; `expected_speakers` restricts the candidates; a recording with too little
speech is refused. Renaming with --enrol and the folder under a running daemon are
tested end to end in tests/e2e/test_voices.py.
"""

from __future__ import annotations

import json

import pytest
from loguru import logger

from daemon.jobs import outputs, results
from daemon.voices import library, matching
from daemon.config import SpeakersConfig
from daemon.errors import EnrolmentError
from tests.support.audio import require_tools
from tests.support.config import write_config
from tests.support.dialog import TEST_VOICES, Dialog, attribution, make_dialog

# The engine's naming is under test here, not the database: the voice tables are tested on
# both backends in tests/unit/test_voices.py, and a PostgreSQL round would transcribe each
# recording a second time.
pytestmark = [pytest.mark.integration, pytest.mark.backends("sqlite")]

A, B, C, D = TEST_VOICES
# the shipped defaults (measured by `python -m bench voices`), so the tests hold them to their word
THRESHOLD, MARGIN = SpeakersConfig().match_threshold, SpeakersConfig().match_margin


@pytest.fixture(scope="module")
def engine(tiny_models):
    from daemon.engine.transcriber import Engine

    return Engine.load(tiny_models, device="cpu", ncpu=2)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dialog]:
    require_tools("espeak-ng")
    folder = tmp_path_factory.mktemp("voices")
    return {
        "solo A": make_dialog(folder / "solo-a.wav", [A], seed=11, min_speech_seconds=15),
        "solo A short": make_dialog(folder / "solo-a-short.wav", [A], seed=12, min_speech_seconds=3,
                                    turn_seconds=(1.0, 1.5), pause_seconds=2.5),
        "A B": make_dialog(folder / "a-b.wav", [A, B], seed=13),
        "B C": make_dialog(folder / "b-c.wav", [B, C], seed=14),
    }


def named_voices(transcript, dialog: Dialog) -> dict[str, str | None]:
    """True voice -> the name its speaker got (None: unnamed), by time overlap."""
    mapping = attribution([(s.start, s.end, s.speaker_label) for s in transcript.segments], dialog.turns).mapping
    by_label = {s.label: s.name for s in transcript.speakers}
    return {voice: by_label.get(label) for label, voice in mapping.items()}


def test_a_transcription_keeps_each_speaker_s_centroid(engine, recordings, tmp_path):
    t = engine.transcribe(recordings["A B"].path)
    assert len(t.speakers) == 2 and set(t.speaker_centroids) == {1, 2}
    dims = {len(c) for c in t.speaker_centroids.values()}
    assert len(dims) == 1 and dims.pop() > 1
    assert t.speaker_model is not None and t.speaker_model.name == "cam++"
    from daemon.writers.json_format import render_json

    stored = json.loads(render_json(t, centroids=True))
    assert all(len(s["centroid"]) == len(t.speaker_centroids[s["id"]]) for s in stored["speakers"])
    assert all("centroid" not in s for s in json.loads(render_json(t))["speakers"])


def test_an_enrolled_voice_is_named_and_unknown_voices_are_not(engine, recordings, store):
    [done] = library.enrol(store, "王总", [recordings["solo A"].path], engine=engine)
    assert done.speech_seconds >= matching.MIN_SPEECH_SECONDS and done.model.startswith("cam++@")
    samples = store.voice_samples_of()

    a_b = engine.transcribe(recordings["A B"].path)
    named = matching.name_speakers(a_b, samples, threshold=THRESHOLD, margin=MARGIN)
    assert named_voices(named, recordings["A B"]) == {A: "王总", B: None}
    unnamed = next(s for s in named.speakers if s.name is None)
    assert unnamed.display == "Speaker1"  # the first unnamed speaker, whatever its cluster label
    scored = matching.scores_for(a_b, samples, threshold=THRESHOLD, margin=MARGIN)
    print({f"Speaker{k}": [(c.name, c.score) for c in r.candidates] for k, r in scored.items()})

    b_c = engine.transcribe(recordings["B C"].path)
    nobody = matching.name_speakers(b_c, samples, threshold=THRESHOLD, margin=MARGIN)
    assert nobody.speaker_names == {}, matching.scores_for(b_c, samples, threshold=THRESHOLD, margin=MARGIN)


def test_expected_speakers_restrict_the_candidates(engine, recordings, store):
    library.enrol(store, "王总", [recordings["solo A"].path], engine=engine)
    a_b = engine.transcribe(recordings["A B"].path)
    samples = store.voice_samples_of()
    only_others = matching.name_speakers(a_b, samples, threshold=THRESHOLD, margin=MARGIN, expected=["李雷"])
    assert only_others.speaker_names == {}
    assert named_voices(matching.name_speakers(a_b, samples, threshold=THRESHOLD, margin=MARGIN,
                                               expected=["王总"]), recordings["A B"])[A] == "王总"


def test_a_voice_of_another_model_revision_is_skipped_with_a_warning(engine, recordings, store):
    voice = engine.embed_voice(recordings["solo A"].path)
    store.add_voice_sample("王总", matching.sample_of(voice, origin="cli", source="solo-a.wav", sha256=None)
                           | {"model_revision": "another-revision"})
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        named = matching.name_speakers(engine.transcribe(recordings["A B"].path), store.voice_samples_of(),
                                       threshold=THRESHOLD, margin=MARGIN)
    finally:
        logger.remove(sink)
    assert named.speaker_names == {}
    assert any("王总" in m and "another-revision" in m and "skipped" in m for m in messages), messages


def test_too_little_speech_is_refused(engine, recordings, store):
    with pytest.raises(EnrolmentError, match="of speech; a voice needs at least 10 s"):
        library.enrol(store, "王总", [recordings["solo A"].path, recordings["solo A short"].path], engine=engine)
    assert store.voice_samples_of() == []  # the good recording was not added either


def test_the_stored_transcript_names_without_transcribing_again(engine, recordings, store, tmp_path):
    """What rematch and rename rely on: centroids survive the stored json bit for bit
    enough to give the same names."""
    from daemon import config as cfg

    config = cfg.load(write_config(tmp_path, paths={"voices": "voices"}), env={})
    library.enrol(store, "王总", [recordings["solo A"].path], engine=engine)
    fresh = engine.transcribe(recordings["A B"].path)
    results.save_transcript(config, 1, fresh)
    again = outputs.load_transcript(config, 1)
    samples = store.voice_samples_of()
    assert (matching.name_speakers(again, samples, threshold=THRESHOLD, margin=MARGIN).speaker_names
            == matching.name_speakers(fresh, samples, threshold=THRESHOLD, margin=MARGIN).speaker_names)


def test_spkd_transcribe_voices_names_an_enrolled_voice_reading_the_library_only(engine, recordings, store,
                                                                                tiny_models, tmp_path):
    """`spkd transcribe --voices` as a user runs it: the library of the config's database
    names A as the daemon would, and the database is only read (not a byte changes)."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    from daemon import writers

    library.enrol(store, "王总", [recordings["solo A"].path], engine=engine)
    store.checkpoint()
    database = Path(store.url.removeprefix("sqlite:///"))
    config = write_config(tmp_path, url=store.url, models={"dir": str(tiny_models.asr.parent)},
                          workers={"device": "cpu"})

    def snapshot() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(database.parent.glob(database.name + "*")) if not p.name.endswith("-shm")}

    def transcribe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config), "transcribe",
                               str(recordings["A B"].path), "--formats", "json", "--device", "cpu", *args],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)

    before = snapshot()
    out = tmp_path / "named"
    proc = transcribe("--voices", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    transcript = writers.parse_json((out / "a-b.json").read_text(encoding="utf-8"))
    assert named_voices(transcript, recordings["A B"]) == {A: "王总", B: None}
    assert "2 speakers (王总, Speaker1)" in proc.stderr or "2 speakers (Speaker1, 王总)" in proc.stderr, proc.stderr
    assert snapshot() == before

    others = transcribe("--expected-speakers", "李雷", "--out", str(tmp_path / "others"))
    assert others.returncode == 0, others.stderr
    assert "none of 李雷 is enrolled" in others.stderr
    assert writers.parse_json((tmp_path / "others" / "a-b.json").read_text(encoding="utf-8")).speaker_names == {}
    assert snapshot() == before
