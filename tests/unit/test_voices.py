"""The voice library without models: matching rules, the store's voice tables on both
backends, the folder scan, renaming and re-matching finished jobs from their stored
transcripts (daemon.voices, daemon.intake.voice_folder, daemon.jobs.rename). The real
pipeline's embeddings are tested in tests/integration/test_voices.py."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon import config as cfg
from daemon import options
from daemon.intake import voice_folder
from daemon.jobs import outputs, rename, results
from daemon.voices import library as voice_library
from daemon.voices import matching
from daemon import store as st
from daemon.errors import EnrolmentError, OptionsError, VoiceError
from daemon.transcript import EngineInfo, ModelInfo, Segment, SpeakerMatch, Transcript, VoicePrint
from tests.support.config import write_config

MODEL = ModelInfo(role="spk", name="cam++", revision="v2.0.2")


def unit(*values: float) -> tuple[float, ...]:
    norm = math.sqrt(sum(v * v for v in values))
    return tuple(v / norm for v in values)


# Three well separated directions and one between the first two.
A, B, C = unit(1, 0, 0, 0), unit(0, 1, 0, 0), unit(0, 0, 1, 0)
NEAR_A = unit(0.95, 0.1, 0.05, 0)


def sample_row(voice_id: int, name: str, embedding: tuple[float, ...], *, revision: str | None = "v2.0.2",
               model: str = "cam++", sample_id: int | None = None) -> st.SampleRow:
    import datetime as dt

    return st.SampleRow(id=sample_id or voice_id, voice_id=voice_id, name=name, embedding=embedding,
                        model_name=model, model_revision=revision, dimension=len(embedding), sha256=None,
                        speech_seconds=20.0, origin="cli", source=None, job_id=None,
                        created_at=dt.datetime(2026, 12, 1))


def transcript(centroids: dict[int, tuple[float, ...]], *, names: dict[int, str] | None = None,
               matches: dict[int, SpeakerMatch] | None = None) -> Transcript:
    segments = tuple(Segment(start=5.0 * i, end=5.0 * i + 4, speaker=s, text=f"第{i}句")
                     for i, s in enumerate(sorted(centroids) * 2))
    segments = tuple(sorted(segments, key=lambda s: s.start))
    return Transcript(segments=segments, audio_seconds=60.0,
                      engine=EngineInfo(funasr_version="1.4.16", device="cpu", models=(MODEL,)),
                      speaker_names=dict(names or {}), speaker_matches=dict(matches or {}),
                      speaker_centroids=dict(centroids))


LIBRARY = [sample_row(1, "王总", A), sample_row(2, "李雷", B)]


# --- matching ----------------------------------------------------------------------------

def test_a_close_voice_is_named_and_an_unknown_one_is_not():
    named = matching.name_speakers(transcript({1: NEAR_A, 2: C}), LIBRARY, threshold=0.75, margin=0.1)
    assert named.speaker_names == {1: "王总"}
    assert named.speaker_matches[1].voice == 1 and named.speaker_matches[1].score > 0.9
    assert [named.speaker_display(s) for s in (1, 2)] == ["王总", "Speaker1"]  # unnamed numbered among themselves
    assert [s.label for s in named.speakers] == ["Speaker1", "Speaker2"]  # labels stay the clusters'


def test_below_the_threshold_nobody_is_named():
    halfway = unit(1, 1, 0, 0)  # cosine 0.707 with both voices
    scored = matching.scores_for(transcript({1: halfway}), LIBRARY, threshold=0.75, margin=0.0)
    assert scored[1].chosen is None and "< threshold" in scored[1].reason
    assert matching.name_speakers(transcript({1: halfway}), LIBRARY, threshold=0.75, margin=0.0).speaker_names == {}


def test_the_best_voice_must_beat_the_runner_up_by_the_margin():
    library = [sample_row(1, "王总", A), sample_row(2, "王总的弟弟", unit(0.9, 0.3, 0, 0))]
    centroid = unit(1, 0.1, 0, 0)
    assert matching.name_speakers(transcript({1: centroid}), library, threshold=0.5, margin=0.2).speaker_names == {}
    scored = matching.scores_for(transcript({1: centroid}), library, threshold=0.5, margin=0.2)
    assert "within the margin" in scored[1].reason and [c.name for c in scored[1].candidates] == ["王总", "王总的弟弟"]
    # with one voice in the library there is no runner-up to beat
    alone = matching.name_speakers(transcript({1: centroid}), library[:1], threshold=0.5, margin=0.2)
    assert alone.speaker_names == {1: "王总"}


def test_one_voice_names_one_speaker_the_one_it_scores_highest_with():
    two_halves_of_a = {1: unit(0.9, 0.2, 0.1, 0), 2: NEAR_A}
    named = matching.name_speakers(transcript(two_halves_of_a), LIBRARY, threshold=0.75, margin=0.1)
    assert named.speaker_names == {2: "王总"}
    scored = matching.scores_for(transcript(two_halves_of_a), LIBRARY, threshold=0.75, margin=0.1)
    assert scored[1].chosen is None and "went to Speaker2" in scored[1].reason


def test_expected_speakers_are_the_only_candidates():
    named = matching.name_speakers(transcript({1: NEAR_A, 2: B}), LIBRARY, threshold=0.75, margin=0.1,
                                   expected=["李雷"])
    assert named.speaker_names == {2: "李雷"}


def test_samples_of_another_model_are_skipped_with_a_warning():
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        other = [sample_row(1, "王总", A, revision="v1.0.0"), sample_row(2, "李雷", B)]
        named = matching.name_speakers(transcript({1: NEAR_A}), other, threshold=0.75, margin=0.1)
        wider = [sample_row(1, "王总", A + (0.0,))]  # another dimension
        assert matching.name_speakers(transcript({1: NEAR_A}), wider, threshold=0.75, margin=0.1).speaker_names == {}
    finally:
        logger.remove(sink)
    assert named.speaker_names == {}  # 王总's only sample is of v1.0.0: never compared
    assert any("王总" in m and "cam++@v1.0.0/4" in m and "skipped" in m for m in messages), messages
    assert any("cam++@v2.0.2/5" in m for m in messages), messages


def test_a_voice_is_the_mean_of_its_unit_samples():
    library = matching.library([sample_row(1, "王总", (3.0, 0, 0, 0), sample_id=1),
                                sample_row(1, "王总", (0, 0.5, 0, 0), sample_id=2)],
                               model_name="cam++", model_revision="v2.0.2", dimension=4)
    assert [(v.name, v.samples) for v in library] == [("王总", 2)]
    assert library[0].vector == pytest.approx((0.5, 0.5, 0, 0))


def test_names_people_gave_stay_and_stale_library_names_go():
    renamed = transcript({1: NEAR_A, 2: C}, names={1: "老板", 2: "李雷"},
                         matches={1: SpeakerMatch(renamed=True), 2: SpeakerMatch(voice=2, score=0.8)})
    named = matching.name_speakers(renamed, LIBRARY, threshold=0.75, margin=0.1)
    # 1 keeps its given name (王总 is not forced on it); 2 no longer matches 李雷 (C is not B)
    assert named.speaker_names == {1: "老板"} and named.speaker_matches == {1: SpeakerMatch(renamed=True)}


def test_a_transcript_without_centroids_is_left_as_it_is():
    channels = Transcript(segments=(Segment(0, 1, 1, "喂"),), audio_seconds=2, speaker_names={1: "客服"})
    assert matching.name_speakers(channels, LIBRARY, threshold=0.0, margin=0.0) is channels


def test_too_little_speech_is_refused_with_the_reason():
    short = VoicePrint(embedding=A, speech_seconds=6.5, audio_seconds=9.0, model_name="cam++")
    with pytest.raises(EnrolmentError, match=r"only 6.5 s of speech; a voice needs at least 10 s"):
        matching.enrol_print(short, source="hello.wav")
    matching.enrol_print(VoicePrint(embedding=A, speech_seconds=10.0, audio_seconds=12, model_name="cam++"),
                         source="ok.wav")


@pytest.mark.parametrize("name", ["", "   ", "a/b", "a\\b", ".hidden", "Speaker3", "speaker12", "x" * 65, "bell\x07",
                                  7])
def test_names_that_cannot_be_a_voice_are_refused_by_the_one_rule(name):
    with pytest.raises(VoiceError):
        matching.check_name(name)
    with pytest.raises(OptionsError, match="expected_speakers"):
        options.validate({"expected_speakers": [name]})


def test_names_are_normalised_alike_everywhere():
    assert matching.check_name("  Li   Lei ") == "Li Lei"
    assert options.validate({"expected_speakers": ["王总", " 王总 ", "Li  Lei"]}) == {
        "expected_speakers": ["王总", "Li Lei"]}
    for bad in ([], "王总", [1]):
        with pytest.raises(OptionsError):
            options.validate({"expected_speakers": bad})


# --- the store (the `store` fixture of tests/conftest.py, on both backends) ------------------

def a_sample(embedding=A, **extra):
    return {"embedding": embedding, "model_name": "cam++", "model_revision": "v2.0.2", "sha256": "ab" * 32,
            "speech_seconds": 21.5, "origin": "cli", "source": "/rec/wang.wav", **extra}


def test_samples_gather_under_one_voice_and_a_voice_goes_with_its_last_sample(store):
    first = store.add_voice_sample("王总", a_sample())
    second = store.add_voice_sample("王总", a_sample(NEAR_A, origin="folder", source="王总/b.wav"))
    other = store.add_voice_sample("李雷", a_sample(B))
    assert first[0] == second[0] != other[0]
    [lei, wang] = store.voice_summaries()
    assert (wang.name, wang.samples, wang.speech_seconds, wang.models, wang.origins) == (
        "王总", 2, 43.0, ("cam++@v2.0.2/4",), ("cli", "folder"))
    assert lei.name == "李雷"
    rows = store.voice_samples_of(names=["王总"])
    assert [r.embedding for r in rows] == [A, NEAR_A] and {r.dimension for r in rows} == {4}
    assert store.remove_voice_samples([first[1]]) == []  # 王总 keeps a sample
    assert store.remove_voice_samples([second[1]]) == ["王总"]
    assert [v.name for v in store.voice_summaries()] == ["李雷"]
    assert store.remove_voice("李雷") == 1 and store.remove_voice("李雷") == 0
    assert store.voice_summaries() == []


def test_an_enrolment_is_done_with_its_sample_once_and_only_by_its_holder(store):
    job_id = store.enqueue(source_name="voices/王总/a.wav", spool_path="/spool/x/.enrol-a.wav", output_stem="a",
                           sha256="cd" * 32, size_bytes=10, options={"voice": "王总"}, task="enrol",
                           priority=voice_folder.ENROL_PRIORITY)
    later = store.enqueue(source_name="talk.wav", spool_path="/spool/y/talk.wav", output_stem="talk", sha256=None,
                          size_bytes=1)
    job = store.claim(slot=0, pid=41, device="cpu", lease_seconds=60)
    assert job.id == job_id and job.task == "enrol"  # enrolments go first
    sample = a_sample(origin="folder", source="王总/a.wav", job_id=job_id, audio_seconds=30.0)
    assert not store.complete_enrolment(job_id, pid=99, name="王总", sample=sample, processing_seconds=1,
                                        device="cpu")  # not the holder
    assert store.complete_enrolment(job_id, pid=41, name="王总", sample=sample, processing_seconds=1, device="cpu")
    assert not store.complete_enrolment(job_id, pid=41, name="王总", sample=sample, processing_seconds=1,
                                        device="cpu")  # done already
    assert len(store.voice_samples_of()) == 1
    row = store.job(job_id)
    assert row.state == "done" and row.task == "enrol" and row.audio_seconds == 30.0
    assert store.job(later).task == "transcribe"
    [done] = [e for e in store.events(job_id) if e.kind == "done"]
    assert done.detail["voice"] == "王总" and done.detail["sample_id"] == store.voice_samples_of()[0].id
    assert [j.id for j in store.enrol_jobs()] == [job_id]
    assert store.done_transcriptions() == []


# --- the folder ----------------------------------------------------------------------------

@pytest.fixture()
def folder(tmp_path, url, make_store):
    """A config with a voices folder, loaded from its file, and the store on its database."""
    config = cfg.load(write_config(tmp_path, url=url, paths={"voices": "voices"}, watch={"settle_seconds": 1.0}),
                      env={})
    return config, make_store(config.host)


def drop(config: cfg.Config, rel: str, content: bytes = b"RIFF....", *, age_seconds: float = 10.0) -> Path:
    path = config.paths.voices / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def run_enrolment(store: st.Store, job_id: int, *, embedding=A) -> None:
    """What a worker does with a claimed enrolment job."""
    job = store.claim(slot=0, pid=7, device="cpu", lease_seconds=60)
    assert job is not None and job.id == job_id
    sample = matching.sample_of(VoicePrint(embedding=embedding, speech_seconds=15.0, audio_seconds=16.0,
                                           model_name="cam++", model_revision="v2.0.2"),
                                origin="folder", source=voice_library.folder_source(job.source_name),
                                sha256=job.sha256, job_id=job.id)
    assert store.complete_enrolment(job.id, pid=7, name=job.options["voice"], sample=sample, processing_seconds=1,
                                    device="cpu")


def test_a_file_in_a_name_folder_becomes_one_enrolment_job(folder):
    config, store = folder
    drop(config, "王总/monday.wav", b"one")
    drop(config, "王总/.monday.wav.part", b"half")  # a dot-name is never taken
    drop(config, "王总/fresh.wav", b"still being copied", age_seconds=0.0)  # not settled yet
    drop(config, "Speaker9/x.wav", b"bad name")  # not a name
    first = voice_folder.sync_folder(config, store)
    assert len(first.queued) == 1
    job = store.job(first.queued[0])
    assert (job.task, job.source_name, job.options, job.priority) == (
        "enrol", "voices/王总/monday.wav", {"voice": "王总"}, voice_folder.ENROL_PRIORITY)
    copy = Path(job.spool_path)
    assert copy.read_bytes() == b"one" and copy.name.startswith(voice_folder.ENROL_COPY_PREFIX)
    assert (config.paths.voices / "王总" / "monday.wav").exists()  # the folder's file stays
    assert voice_folder.sync_folder(config, store).queued == []  # queued already: not again
    os.utime(config.paths.voices / "王总" / "fresh.wav", (time.time() - 10, time.time() - 10))
    assert len(voice_folder.sync_folder(config, store).queued) == 1  # settled now


def test_removing_the_file_or_the_folder_removes_the_voice(folder):
    config, store = folder
    drop(config, "王总/a.wav", b"a")
    drop(config, "李雷/b.wav", b"b")
    queued = voice_folder.sync_folder(config, store).queued
    for job_id in sorted(queued):
        run_enrolment(store, job_id)
    assert [v.name for v in store.voice_summaries()] == ["李雷", "王总"]
    store.add_voice_sample("王总", a_sample())  # one from the command line too
    assert voice_folder.sync_folder(config, store).queued == []  # enrolled: nothing to do
    import shutil

    shutil.rmtree(config.paths.voices / "李雷")
    report = voice_folder.sync_folder(config, store)
    assert report.removed_voices == ["李雷"] and report.removed_samples == 1
    (config.paths.voices / "王总" / "a.wav").unlink()
    assert voice_folder.sync_folder(config, store).removed_voices == []  # 王总 keeps the command line's sample
    assert [(v.name, v.origins) for v in store.voice_summaries()] == [("王总", ("cli",))]


def test_a_changed_file_is_enrolled_again_and_a_failed_one_waits_until_it_changes(folder):
    config, store = folder
    drop(config, "王总/a.wav", b"first take")
    [job_id] = voice_folder.sync_folder(config, store).queued
    run_enrolment(store, job_id)
    drop(config, "王总/a.wav", b"second take")
    report = voice_folder.sync_folder(config, store)
    assert report.removed_samples == 1 and len(report.queued) == 1
    job = store.claim(slot=0, pid=8, device="cpu", lease_seconds=60)
    store.fail(job.id, pid=8, kind=EnrolmentError.kind, message="only 3 s of speech", permanent=True,
               retry_backoff_seconds=0)
    assert voice_folder.sync_folder(config, store).queued == []  # the same content failed: not again
    drop(config, "王总/a.wav", b"third take, longer")
    assert len(voice_folder.sync_folder(config, store).queued) == 1


def test_a_rescan_hashes_only_files_that_changed(folder, monkeypatch):
    config, store = folder
    drop(config, "王总/a.wav", b"first take")
    drop(config, "李雷/b.wav", b"b")
    digests: dict = {}
    for job_id in sorted(voice_folder.sync_folder(config, store, digests=digests).queued):
        run_enrolment(store, job_id)
    from daemon import files

    hashed: list[str] = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    assert voice_folder.sync_folder(config, store, digests=digests).queued == [] and hashed == []
    drop(config, "王总/a.wav", b"second take")  # same folder entry, new content and mtime
    report = voice_folder.sync_folder(config, store, digests=digests)
    assert hashed == ["a.wav"] and report.removed_samples == 1 and len(report.queued) == 1
    (config.paths.voices / "李雷" / "b.wav").unlink()
    assert voice_folder.sync_folder(config, store, digests=digests).removed_voices == ["李雷"]
    assert set(digests) == {"王总/a.wav"}  # what is gone is forgotten


def test_a_copy_left_by_a_crash_is_tidied(folder):
    config, store = folder
    orphan = config.paths.spool / "h1-1-abc" / (voice_folder.ENROL_COPY_PREFIX + "a.wav")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    assert voice_folder.settle_enrol_copies(config, store) == 0  # young: perhaps being queued right now
    old = time.time() - voice_folder.ORPHAN_COPY_SECONDS - 5
    os.utime(orphan, (old, old))
    assert voice_folder.settle_enrol_copies(config, store) == 1 and not orphan.exists()


def test_removing_a_voice_moves_its_folder_out_of_the_way(folder):
    config, store = folder
    drop(config, "王总/a.wav", b"a")
    run_enrolment(store, voice_folder.sync_folder(config, store).queued[0])
    assert voice_library.remove(config, store, "王总") == 1
    assert not (config.paths.voices / "王总").exists()
    [kept] = list((config.paths.state / voice_library.REMOVED_FOLDER).iterdir())
    assert (kept / "a.wav").read_bytes() == b"a"
    assert voice_folder.sync_folder(config, store).queued == []  # not enrolled again
    with pytest.raises(VoiceError, match="no voice named"):
        voice_library.remove(config, store, "王总")


def test_a_dropped_recording_arrives_whole_under_the_voices_folder(folder, tmp_path):
    config, _store = folder
    upload = tmp_path / "upload.tmp"
    upload.write_bytes(b"audio")
    placed = voice_folder.drop_for_enrolment(config, " 王总 ", upload, file_name="../../etc/passwd.wav")
    assert placed == config.paths.voices / "王总" / "passwd.wav" and placed.read_bytes() == b"audio"
    assert not list(placed.parent.glob(".*"))
    assert not upload.exists()  # moved into place, not copied
    with pytest.raises(VoiceError):
        voice_folder.drop_for_enrolment(config, "../x", upload, file_name="a.wav")
    # what the folder scan would leave alone is refused, not left there unenrolled
    with pytest.raises(VoiceError, match="extension not in watch.extensions"):
        voice_folder.drop_for_enrolment(config, "王总", upload, file_name="../../etc/passwd")
    with pytest.raises(VoiceError, match="extension not in watch.extensions"):
        voice_folder.drop_for_enrolment(config, "王总", upload, file_name="notes.txt")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(VoiceError, match="empty"):
        voice_folder.drop_for_enrolment(config, "王总", tmp_path / "empty.wav", file_name="empty.wav")
    assert sorted(p.name for p in placed.parent.iterdir()) == ["passwd.wav"]


# --- renaming and re-matching done jobs ------------------------------------------------------

FORMATS = ["json", "txt", "srt", "vtt", "sentences", "md"]


def finished(config: cfg.Config, store: st.Store, name: str, t: Transcript, *, twin: int | None = None) -> int:
    """A done job with its stored transcript and outputs, as a worker leaves it."""
    stem = name.rsplit(".", 1)[0]
    if twin is None:
        job_id = store.enqueue(source_name=name, spool_path=f"/spool/{name}", output_stem=stem, sha256=None,
                               size_bytes=1)
        store.claim(slot=0, pid=5, device="cpu", lease_seconds=60)
    written = results.publish(config, output_stem=stem, transcript=t, formats=FORMATS)
    if twin is None:
        store.complete(job_id, pid=5, audio_seconds=60, processing_seconds=1, speakers=len(t.speakers),
                       outputs=written, device="cpu", transcript=t)
    else:
        twin_job = store.job(twin)
        assert twin_job is not None
        job_id = store.add_reused(source_name=name, spool_path=f"/spool/{name}", output_stem=stem, sha256=None,
                                  size_bytes=1, options={}, dedup_key=None, twin=twin_job, outputs=written,
                                  audio_seconds=60, speakers=len(t.speakers), transcript=t)
    results.save_transcript(config, job_id, t)
    return job_id


def test_renaming_rerenders_every_output_of_the_job_and_its_duplicates(folder):
    config, store = folder
    t = transcript({1: NEAR_A, 2: C})
    job_id = finished(config, store, "meeting.wav", t)
    dup = finished(config, store, "copy of meeting.wav", t, twin=job_id)
    before = {fmt: (config.paths.outbox / ("meeting" + __import__("daemon").writers.extension(fmt))).read_bytes()
              for fmt in FORMATS}
    result = rename.rename_speakers(config, store, job_id, {"Speaker2": "李雷"}, enrol_voices=True)
    assert result.jobs == (job_id, dup) and result.enrolled == ("李雷",)
    from daemon import writers

    for stem in ("meeting", "copy of meeting"):
        for fmt in FORMATS:
            data = (config.paths.outbox / (stem + writers.extension(fmt))).read_bytes()
            assert "李雷".encode() in data, (stem, fmt)
            if stem == "meeting":
                assert data != before[fmt]
    doc = json.loads((config.paths.outbox / "meeting.json").read_text())
    speaker2 = doc["speakers"][1]
    assert (speaker2["label"], speaker2["name"], speaker2["renamed"]) == ("Speaker2", "李雷", True)
    assert "centroid" not in speaker2  # the outbox copy leaves the centroids out
    stored = outputs.load_transcript(config, job_id)
    assert stored.speaker_names == {2: "李雷"}
    for speaker, centroid in t.speaker_centroids.items():  # kept, to the 6 decimals stored
        assert stored.speaker_centroids[speaker] == pytest.approx(centroid, abs=1e-6)
    assert [r for r in store.voice_samples_of() if r.origin == "rename"][0].embedding == C
    events = [e for e in store.events(job_id) if e.kind == "renamed"]
    assert events and events[0].detail["names"] == {"Speaker2": "李雷"}
    assert [e.detail["via"] for e in store.events(dup) if e.kind == "renamed"] == [job_id]
    from daemon.store import search

    assert {h.job_id for h in search.search(store, "第1句", speaker="李雷").hits} == {job_id, dup}
    # the name as shown now works as the key too, and a wrong name can be corrected
    rename.rename_speakers(config, store, job_id, {"李雷": "韩梅梅"})
    assert outputs.load_transcript(config, job_id).speaker_names == {2: "韩梅梅"}


def test_renaming_refuses_what_it_cannot_do(folder):
    config, store = folder
    job_id = finished(config, store, "m.wav", transcript({1: A, 2: B}, names={1: "王总"},
                                                        matches={1: SpeakerMatch(voice=1, score=0.9)}))
    for names, message in (({"Speaker7": "x"}, "no speaker 'Speaker7'"),
                           ({"Speaker1": "李雷", "王总": "李雷"}, "the same name"),
                           ({"Speaker2": "王总"}, "already has a speaker named"),
                           ({"Speaker2": "Speaker5"}, "SpeakerN"),
                           ({}, "LABEL=NAME")):
        with pytest.raises(VoiceError, match=message):
            rename.rename_speakers(config, store, job_id, names)
    with pytest.raises(VoiceError, match="not a done transcription"):
        rename.rename_speakers(config, store, 999, {"Speaker1": "x"})


def test_rematching_names_the_past_is_idempotent_and_keeps_given_names(folder):
    config, store = folder
    first = finished(config, store, "a.wav", transcript({1: NEAR_A, 2: B}))
    second = finished(config, store, "b.wav", transcript({1: B, 2: C}, names={2: "韩梅梅"},
                                                         matches={2: SpeakerMatch(renamed=True)}))
    assert rename.rematch(config, store) == []  # an empty library changes nothing
    store.add_voice_sample("王总", a_sample(A))
    store.add_voice_sample("李雷", a_sample(B))
    assert rename.rematch(config, store) == [first, second]
    assert outputs.load_transcript(config, first).speaker_names == {1: "王总", 2: "李雷"}
    assert outputs.load_transcript(config, second).speaker_names == {1: "李雷", 2: "韩梅梅"}
    assert "王总 [00:00:00]" in (config.paths.outbox / "a.txt").read_text()
    assert rename.rematch(config, store) == []  # nothing changed since
    store.remove_voice("王总")
    assert rename.rematch(config, store) == [first]  # the name goes with the voice
    assert outputs.load_transcript(config, first).speaker_names == {2: "李雷"}
    assert [e.kind for e in store.events(first)].count("rematched") == 2
