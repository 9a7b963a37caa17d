"""One name rule (issue 26, X2, C7) for voices, renames, sidecar channel names and the
characters of uploaded file names; removing voices whose folders are not written the
way the library writes names, or whose enrolment runs (C1, C2); overlapping folders
refused (C4)."""

from __future__ import annotations

import pytest

from daemon import names, options
from daemon.config import ConfigError
from daemon.errors import OptionsError, VoiceError
from daemon.intake import voice_folder
from daemon.jobs import rename
from daemon.voices import library as voice_library
from daemon.voices import matching
from tests.support.config import make_config
from tests.unit.test_voices import NEAR_A, C, drop, finished, folder, run_enrolment, transcript  # noqa: F401

HOSTILE = ["red\x1b[31m", "bell\x07", "nul\x00x", "\u202egnp.exe", "a\u2066b\u2069", "rlm\u200f", "Speaker3",
           "speaker12", "😀" * 64, "x" * 65, "", "  ", "a/b", ".hidden"]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_source_of_names_refuses_the_same_names(name):
    assert names.name_problem(name) is not None
    with pytest.raises(VoiceError):
        matching.check_name(name)
    with pytest.raises(OptionsError, match="channels"):
        options.validate({"channels": [name, "Other"]})
    with pytest.raises(OptionsError, match="expected_speakers"):
        options.validate({"expected_speakers": [name]})


def test_names_people_write_are_kept_normalised():
    for good in ("王总", "José", "Li Lei", "O'Brien", "👩\u200d💻 dev", "😀" * 50):
        assert names.name_problem(good) is None, good
    assert options.validate({"channels": [" 客服 ", "Li\tLei"]}) == {"channels": ["客服", "Li Lei"]}
    assert names.normal_name("Jose\u0301  x") == "José x"


def test_the_length_is_counted_in_bytes_too():
    assert "bytes" in names.name_problem("😀" * 64)  # 64 characters, 256 bytes: no folder may be named so
    assert names.name_problem("😀" * 50) is None  # 200 bytes


def test_upload_names_are_checked_for_the_characters_alone():
    assert names.text_problem("report.wav") is None
    assert names.text_problem(".part name (1).wav") is None
    assert "bidirectional" in names.text_problem("evil\u202ewav.exe")
    assert "control" in names.text_problem("a\x1bb.wav")


def test_renames_refuse_hostile_names(folder):  # noqa: F811
    config, store = folder
    job_id = finished(config, store, "meeting.wav", transcript({1: NEAR_A, 2: C}))
    for bad in ("Term\x1b]0;pwned\x07", "\u202eevil", "😀" * 64):
        with pytest.raises(VoiceError):
            rename.rename_speakers(config, store, job_id, {"Speaker2": bad})


@pytest.mark.parametrize("written", ["Jose\u0301", "Li  Lei", "Li\tLei", " Li Lei"])
def test_removing_a_voice_moves_its_folder_however_the_name_is_written(folder, written):  # noqa: F811
    config, store = folder
    drop(config, f"{written}/a.wav", b"a")
    [job_id] = voice_folder.sync_folder(config, store).queued
    run_enrolment(store, job_id)
    voice = names.normal_name(written)
    assert [v.name for v in store.voice_summaries()] == [voice]
    assert voice_library.remove(config, store, voice) == 1
    assert not (config.paths.voices / written).exists()
    assert voice_folder.sync_folder(config, store).queued == []  # gone for good: not enrolled again
    assert store.voice_summaries() == []


def test_a_voice_removed_while_its_enrolment_runs_stays_removed(folder):  # noqa: F811
    config, store = folder
    drop(config, "Wendy/a.wav", b"a")
    drop(config, "Wendy/b.wav", b"b")
    first, second = voice_folder.sync_folder(config, store).queued
    run_enrolment(store, first)
    running = store.claim(slot=0, pid=7, device="cpu", lease_seconds=60)
    assert running is not None and running.id == second
    assert voice_library.remove(config, store, "Wendy") == 1
    # the worker finishes its embedding now: its result is refused, the voice stays gone
    sample = matching.sample_of(__import__("daemon.transcript", fromlist=["VoicePrint"]).VoicePrint(
        embedding=NEAR_A, speech_seconds=15.0, audio_seconds=16.0, model_name="cam++", model_revision="v2.0.2"),
        origin="folder", source="Wendy/b.wav", sha256=running.sha256, job_id=running.id)
    assert not store.complete_enrolment(running.id, pid=7, name="Wendy", sample=sample, processing_seconds=1,
                                        device="cpu")
    assert store.voice_summaries() == [] and store.job(second).state == "cancelled"


@pytest.mark.parametrize("paths, message", [
    ({"archive": "voices/archive"}, "paths.archive: .* lies inside paths.voices"),
    ({"voices": "archive/voices"}, "paths.voices: .* lies inside paths.archive"),
    ({"inbox": "voices/inbox"}, "paths.inbox: .* lies inside paths.voices"),
    ({"state": "voices/state"}, "paths.state: .* lies inside paths.voices"),
    ({"spool": "outbox"}, "is also paths.spool"),
    ({"failed": "archive/failed"}, "paths.failed: .* lies inside paths.archive"),
])
def test_overlapping_folders_are_a_config_error(tmp_path, paths, message):
    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, paths={"voices": "voices", **paths})
    make_config(tmp_path, paths={"voices": "voices", "spool": "state/spool"})  # the state folder may hold others
