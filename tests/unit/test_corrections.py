"""Corrections with history (issue 27, part 1; daemon.jobs.corrections): `spkd edit`,
`spkd history`, `spkd revert` on each database backend. An edit or revert re-renders every
output, the segment and search rows and the job's duplicates through the one place that
records a result; renames and re-matches keep the corrected words; refusals change nothing;
a process killed (SIGKILL) at any step of an edit leaves the old or the new version whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import writers
from daemon import store as st
from daemon.cli.main import main
from daemon.errors import (
    BadTextError,
    CorrectionError,
    EmptyTextError,
    ExitCode,
    NoSuchJobError,
    NoSuchSegmentError,
    NoSuchVersionError,
    VersionConflictError,
)
from daemon.jobs import corrections, outputs, rename, results
from daemon.store import db
from daemon.store.corrections import NewVersion
from daemon.transcript import EngineInfo, ModelInfo, Segment, Transcript
from tests.support.config import make_config, write_config
from tests.support.jobs import queued_job

FORMATS = ["json", "txt", "srt", "vtt", "sentences", "md"]
MODEL = ModelInfo(role="spk", name="cam++", revision="v2.0.2")
WORDS = ["good morning everyone", "the budget is forty thousand", "we ship on friday", "any questions",
         "none from me", "then we are done"]
# A sentence the srt cuts into several cues (more than 2 lines of 42 columns): numbered by its first.
LONG = ("this sentence is long enough that the subtitle writer has to cut it into more than one cue because two "
        "lines of forty two columns cannot hold all of its many words")


def meeting(*, long: bool = False) -> Transcript:
    texts = list(WORDS)
    if long:
        texts.insert(1, LONG)
    segments = tuple(Segment(start=5.0 * i, end=5.0 * i + 4, speaker=1 + i % 2, text=t) for i, t in enumerate(texts))
    return Transcript(segments=segments, audio_seconds=60.0,
                      engine=EngineInfo(funasr_version="1.4.16", device="cpu", models=(MODEL,)),
                      speaker_names={2: "Bob"}, speaker_centroids={1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 0.0)})


def finished(config, store, name: str, t: Transcript, *, twin: int | None = None) -> int:
    """A done job with its stored transcript, outputs and segments, as a worker (or a reuse) leaves it."""
    stem = name.rsplit(".", 1)[0]
    if twin is not None:
        reuse = results.Reuse(twin=store.job(twin), transcript=outputs.load_transcript(config, twin))
        return results.record_reused(config, store, reuse, spool_path=config.paths.spool / "nowhere" / name,
                                     source_name=name, output_stem=stem, sha256="a" * 64, size_bytes=1,
                                     options={"formats": FORMATS}, dedup_key=None)
    job_id = store.enqueue(source_name=name, spool_path=str(config.paths.spool / "nowhere" / name), output_stem=stem,
                           sha256=None, size_bytes=1)
    job = store.claim(slot=0, pid=5, device="cpu", lease_seconds=60)
    written = results.write_outputs(config, job_id, t, output_stem=stem, formats=FORMATS)
    assert results.record_transcribed(config, store, job, t, written=written, pid=5, processing_seconds=1,
                                      device="cpu")
    return job_id


def everywhere(config, store, job_id: int, words: str) -> dict[str, bool]:
    """Where `words` are: the stored transcript, each output, the segment rows, search."""
    row = store.job(job_id)
    seen = {"stored": any(s.text == words for s in outputs.load_transcript(config, job_id).segments)}
    for fmt in FORMATS:
        seen[fmt] = words in (config.paths.outbox / (row.output_stem + writers.extension(fmt))).read_text()
    seen["segments"] = any(t == words for (*_x, t) in store.segment_texts(job_id))
    found, _more = store.search_segments(st_query(words), job_id=job_id)
    seen["search"] = bool(found)
    return seen


def st_query(words: str):
    from daemon.store.search import parse_query

    return parse_query(words)


def srt_cue(config, store, job_id: int, number: int) -> str:
    """The text of cue `number` of the job's srt, as a reader of the file sees it."""
    text = (config.paths.outbox / (store.job(job_id).output_stem + ".srt")).read_text()
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines[0] == str(number):
            return " ".join(lines[2:])
    raise AssertionError(f"no cue {number}")


@pytest.fixture()
def config(tmp_path: Path, url: str):  # type: ignore[no-untyped-def]
    return make_config(tmp_path, url=url, host="h1")


def test_an_edit_reaches_every_output_and_search_and_a_revert_brings_the_old_words_back(config, store) -> None:
    job_id = finished(config, store, "meeting.wav", meeting())
    assert store.transcript_version(job_id) == 1
    old, new = WORDS[1], "the budget is fourteen thousand"
    assert srt_cue(config, store, job_id, 2).endswith(old)
    assert corrections.edit_segment(config, store, job_id, 2, text=new, origin="cli") == 2
    assert store.transcript_version(job_id) == 2
    assert all(everywhere(config, store, job_id, new).values())
    assert not any(everywhere(config, store, job_id, old).values())
    assert srt_cue(config, store, job_id, 2) == f"Bob: {new}"
    assert results.check_results(config, store) == {}
    [event] = [e for e in store.events(job_id) if e.kind == "corrected"]
    assert event.detail == {"segment": 2, "version": 2, "origin": "cli", "intent": event.detail["intent"]}

    assert corrections.revert(config, store, job_id, 1, origin="web") == 3
    assert all(everywhere(config, store, job_id, old).values())
    assert not any(everywhere(config, store, job_id, new).values())
    assert corrections.revert(config, store, job_id, 2, origin="cli") == 4
    assert all(everywhere(config, store, job_id, new).values())
    history = corrections.history(store, job_id)
    assert [(v.version, v.origin) for v in history] == [(1, "engine"), (2, "cli"), (3, "web"), (4, "cli")]
    assert history[1].change == f'segment 2: text "{old}" -> "{new}"'
    assert [v.change for v in history[2:]] == ["reverted to version 1", "reverted to version 2"]
    assert history[0].created_at == store.job(job_id).finished_at and history[3].overlay == history[1].overlay
    assert [e.kind for e in store.events(job_id)][-2:] == ["rerender", "reverted"]
    # the same again changes nothing and adds no version
    assert corrections.edit_segment(config, store, job_id, 2, text=new, origin="cli") == 4
    assert corrections.revert(config, store, job_id, 2, origin="cli") == 4
    assert store.transcript_version(job_id) == 4


def test_renames_and_rematches_keep_the_corrected_words(config, store) -> None:
    from daemon.transcript import VoicePrint
    from daemon.voices.matching import sample_of

    job_id = finished(config, store, "meeting.wav", meeting())
    corrections.edit_segment(config, store, job_id, 3, text="we ship on monday", origin="cli")
    rename.rename_speakers(config, store, job_id, {"Bob": "Robert"})
    # the voice library learns speaker 1's voice: a rematch names it, and keeps the words
    voice = VoicePrint(embedding=(1.0, 0.0, 0.0), speech_seconds=20.0, audio_seconds=20.0, model_name="cam++",
                       model_revision="v2.0.2")
    store.add_voice_sample("Alice", sample_of(voice, origin="cli", source="alice.wav", sha256=None))
    assert rename.rematch(config, store) == [job_id]
    assert all(everywhere(config, store, job_id, "we ship on monday").values())
    assert srt_cue(config, store, job_id, 3) == "Alice: we ship on monday"
    assert "Robert" in (config.paths.outbox / "meeting.txt").read_text()
    # and a revert after the rename keeps the new name, with the engine's words
    assert corrections.revert(config, store, job_id, 1, origin="cli") == 3
    assert all(everywhere(config, store, job_id, WORDS[2]).values())
    assert outputs.load_transcript(config, job_id).speaker_display(2) == "Robert"


def test_duplicates_follow_and_a_later_duplicate_takes_the_corrections_with_their_history(config, store) -> None:
    job_id = finished(config, store, "meeting.wav", meeting())
    dup = finished(config, store, "copy.wav", meeting(), twin=job_id)
    assert corrections.edit_segment(config, store, job_id, 1, text="good evening everyone", origin="web") == 2
    for j in (job_id, dup):
        assert all(everywhere(config, store, j, "good evening everyone").values()), j
    assert [(v.version, v.origin, v.change) for v in corrections.history(store, dup)][1:] == [
        (2, "web", f'segment 1: text "good morning everyone" -> "good evening everyone" (of job {job_id})')]
    later = finished(config, store, "again.wav", meeting(), twin=job_id)
    assert all(everywhere(config, store, later, "good evening everyone").values())
    assert corrections.history(store, later)[-1].change.startswith(f"the corrections of job {job_id}")
    assert corrections.revert(config, store, later, 1, origin="cli") == 3
    assert all(everywhere(config, store, later, "good morning everyone").values())
    assert all(everywhere(config, store, job_id, "good evening everyone").values())  # the twin keeps its own
    assert results.check_results(config, store) == {}


def test_a_segment_is_numbered_as_the_srt_numbers_its_cues(config, store) -> None:
    t = meeting(long=True)
    job_id = finished(config, store, "long.wav", t)
    numbered = corrections.numbering(outputs.load_transcript(config, job_id))
    assert numbered[1].cues > 1 and numbered[2].number == 2 + numbered[1].cues
    third = numbered[2].number
    assert srt_cue(config, store, job_id, third) == f"Speaker1: {WORDS[1]}"
    corrections.edit_segment(config, store, job_id, third, text="the budget is fine", origin="cli")
    assert srt_cue(config, store, job_id, third) == "Speaker1: the budget is fine"
    with pytest.raises(NoSuchSegmentError, match="cue 3 is part 2 of .* numbered 2: give --segment 2"):
        corrections.edit_segment(config, store, job_id, 3, text="x", origin="cli")
    assert corrections.segment_number(outputs.load_transcript(config, job_id), 2) == third


def test_a_sentence_changes_speaker_to_one_of_the_transcript_or_a_new_one_and_back(config, store) -> None:
    job_id = finished(config, store, "meeting.wav", meeting())
    assert corrections.edit_segment(config, store, job_id, 1, speaker="Bob", origin="cli") == 2
    assert srt_cue(config, store, job_id, 1) == f"Bob: {WORDS[0]}"
    assert corrections.edit_segment(config, store, job_id, 4, speaker="Carol", text="any question", origin="cli") == 3
    assert srt_cue(config, store, job_id, 4) == "Carol: any question"
    assert {s for (*_x, s, _t) in store.segment_texts(job_id)} == {"Speaker1", "Bob", "Carol"}
    assert corrections.history(store, job_id)[-1].change == \
        f'segment 4: text "{WORDS[3]}" -> "any question"; speaker Bob -> Carol'
    assert corrections.revert(config, store, job_id, 1, origin="cli") == 4
    assert outputs.load_transcript(config, job_id) == results.as_stored(meeting())
    assert corrections.revert(config, store, job_id, 3, origin="cli") == 5
    assert srt_cue(config, store, job_id, 4) == "Carol: any question"


def test_refusals_say_why_and_change_nothing(config, store) -> None:
    t = Transcript(segments=(Segment(0, 4, 1, "one"), Segment(5, 9, 2, "two"), Segment(10, 14, 1, "three")),
                   audio_seconds=20.0, speaker_centroids={1: (1.0, 0.0), 2: (0.0, 1.0)})
    job_id = finished(config, store, "meeting.wav", t)
    before = {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()}
    queued = queued_job(config, store, "later.wav")
    cases = [
        (NoSuchJobError, "^no job 999$", lambda: corrections.edit_segment(config, store, 999, 1, text="x",
                                                                        origin="cli")),
        (CorrectionError, f"job {queued} is queued: only a done", lambda: corrections.history(store, queued)),
        (NoSuchSegmentError, "no segment 4: the transcript's are numbered 1 to 3",
         lambda: corrections.edit_segment(config, store, job_id, 4, text="x", origin="cli")),
        (EmptyTextError, "must not be empty", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                             text=" \n\t", origin="cli")),
        (BadTextError, "control character", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                            text="a\x1b[2Jb", origin="cli")),
        (BadTextError, "bidirectional", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                       text="abc\u202edef", origin="cli")),
        (BadTextError, "at most 5000", lambda: corrections.edit_segment(config, store, job_id, 1, text="x" * 5001,
                                                                      origin="cli")),
        (BadTextError, "SpeakerN is how unnamed", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                                  speaker="Speaker7", origin="cli")),
        (BadTextError, "control character", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                            speaker="Eve\x07", origin="cli")),
        (CorrectionError, "Speaker2's only sentence: its voice would be lost; rename the speaker instead",
         lambda: corrections.edit_segment(config, store, job_id, 2, speaker="Speaker1", origin="cli")),
        (CorrectionError, "say what the segment becomes", lambda: corrections.edit_segment(config, store, job_id, 1,
                                                                                         origin="cli")),
        (NoSuchVersionError, f"job {job_id} has no version 2: its versions are 1 to 1",
         lambda: corrections.revert(config, store, job_id, 2, origin="cli")),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    assert store.transcript_version(job_id) == 1 and [v.version for v in corrections.history(store, job_id)] == [1]
    assert {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()} == before
    assert [e.kind for e in store.events(job_id)] == ["queued", "claimed", "done"]
    # a text is kept as one line, normalised (NFC, blanks as one space)
    assert corrections.edit_segment(config, store, job_id, 1, text="  Cafe\u0301\n ok ", origin="cli") == 2
    assert outputs.load_transcript(config, job_id).segments[0].text == "Caf\u00e9 ok"


def test_a_correction_made_from_a_version_that_is_no_longer_the_latest_records_nothing(config, store) -> None:
    job_id = finished(config, store, "meeting.wav", meeting())
    corrections.edit_segment(config, store, job_id, 1, text="hello", origin="cli")
    stale = results.Change(job_id, meeting(), "corrected", {"segment": 1},
                           NewVersion(base=1, origin="web", change="segment 1: …", overlay={}))
    with pytest.raises(VersionConflictError, match="changed meanwhile"):
        results.rerender_jobs(config, store, [stale])
    assert store.transcript_version(job_id) == 2 and store.pending_rerenders() == []
    assert not results.next_transcript_path(config, job_id).exists()
    assert all(everywhere(config, store, job_id, "hello").values())


def test_two_corrections_at_once_both_land_one_after_the_other(config, store, make_store) -> None:
    import threading

    job_id = finished(config, store, "meeting.wav", meeting())
    errors: list[BaseException] = []

    def edit(number: int, text: str, origin: str) -> None:
        own = make_store("h1")  # a process of its own would have its own store
        try:
            corrections.edit_segment(config, own, job_id, number, text=text, origin=origin)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=edit, args=(1, "hello all", "web")),
               threading.Thread(target=edit, args=(3, "we ship on monday", "cli"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [v.version for v in corrections.history(store, job_id)] == [1, 2, 3]
    for words in ("hello all", "we ship on monday"):
        assert all(everywhere(config, store, job_id, words).values()), words
    assert results.check_results(config, store) == {}


def test_retry_force_and_remove_take_the_versions_with_the_result(config, store) -> None:
    from daemon.jobs import remove

    job_id = finished(config, store, "meeting.wav", meeting())
    corrections.edit_segment(config, store, job_id, 1, text="hello", origin="cli")
    results.withdraw(config, store, store.job(job_id))
    assert store.transcript_versions(job_id) == [] and store.transcript_version(job_id) == 1
    other = finished(config, store, "other.wav", meeting())
    corrections.edit_segment(config, store, other, 1, text="hello", origin="cli")
    removals, refused = remove.plan(config, store, [other])
    assert refused == [] and remove.remove(config, store, removals) == [other]
    assert store.transcript_versions(other) == []


# --- the commands ----------------------------------------------------------------------------

@pytest.fixture()
def cli(tmp_path: Path, url: str, config):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path, url=url, host="h1")
    return lambda *argv: main(["--config", str(path), *argv])


def test_spkd_edit_history_and_revert(cli, config, store, capsys) -> None:
    job_id = finished(config, store, "meeting.wav", meeting())
    assert cli("edit", str(job_id), "--segment", "2", "--text", "the budget is fourteen thousand") == ExitCode.OK
    assert capsys.readouterr().out.strip() == (f'job {job_id}: version 2: segment 2: text "{WORDS[1]}" -> '
                                               '"the budget is fourteen thousand"')
    assert cli("search", "fourteen") == ExitCode.OK
    assert "fourteen" in capsys.readouterr().out
    assert cli("history", str(job_id)) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "created_at", "origin", "change"] and len(lines) == 3
    assert lines[1].split()[0] == "1" and "engine" in lines[1] and "as transcribed" in lines[1]
    assert lines[2].split()[:2] == ["2", "*"] and " cli " in lines[2]
    assert cli("revert", str(job_id), "1") == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"job {job_id}: version 3: reverted to version 1"
    assert cli("history", str(job_id), "--json") == ExitCode.OK
    shown = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["origin"], v["change"]) for v in shown][2] == (3, "cli", "reverted to version 1")
    assert cli("search", "fourteen") == ExitCode.FAILED
    assert capsys.readouterr().err.strip() == "spkd search: no segment contains 'fourteen'"
    # refusals: one line named after the command, exit 1; bad usage exit 2
    assert cli("edit", "999", "--segment", "1", "--text", "x") == ExitCode.FAILED
    assert capsys.readouterr().err.strip() == "spkd edit: no job 999"
    assert cli("edit", str(job_id), "--segment", "99", "--text", "x") == ExitCode.FAILED
    assert capsys.readouterr().err.startswith("spkd edit: no segment 99: the transcript's are numbered 1 to 6")
    assert cli("revert", str(job_id), "9") == ExitCode.FAILED
    assert "spkd revert: job 1 has no version 9: its versions are 1 to 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli("edit", str(job_id), "--segment", "0", "--text", "x")
    assert exit_.value.code == ExitCode.ERROR


def test_spkd_cancel_on_a_queued_job_ends_it_cancelled_with_no_outputs(cli, config, store, capsys) -> None:
    job_id = queued_job(config, store, "later.wav")
    assert cli("cancel", str(job_id)) == ExitCode.OK
    assert f"cancelled job {job_id} (was queued): later.wav" in capsys.readouterr().out
    assert store.job(job_id).state == "cancelled" and store.job(job_id).outputs is None
    assert not config.paths.outbox.exists() or list(config.paths.outbox.iterdir()) == []
    assert store.claim(slot=0, pid=1, device="cpu", lease_seconds=60) is None


REPO = Path(__file__).resolve().parents[2]


def test_from_outside_edit_search_revert(tmp_path, url, config, store) -> None:
    """The issue's check, as a user runs it: `spkd edit JOB --segment 2 --text T`, then T is in
    the json, txt, srt and vtt and `spkd search` finds T and not the old words; `spkd revert
    JOB 1` brings the old words back everywhere and search no longer finds T."""
    path = write_config(tmp_path, url=url, host="h1")
    job_id = finished(config, store, "meeting.wav", meeting())

    def spkd(*argv: str, status: int = 0) -> str:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("SPKD_")}, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "daemon", "--config", str(path), *argv], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == status and (status or done.stderr == ""), done.stderr
        return done.stdout + done.stderr

    def outputs_say(words: str) -> list[bool]:
        return [words in (config.paths.outbox / f"meeting.{ext}").read_text() for ext in ("json", "txt", "srt", "vtt")]

    spkd("edit", str(job_id), "--segment", "2", "--text", "quarterly revenue tripled")
    assert outputs_say("quarterly revenue tripled") == [True] * 4 and outputs_say(WORDS[1]) == [False] * 4
    assert "Bob  quarterly [revenue tripled]" in spkd("search", "revenue tripled")  # the match in brackets
    assert spkd("search", "forty thousand", status=1) == "spkd search: no segment contains 'forty thousand'\n"
    spkd("revert", str(job_id), "1")
    assert outputs_say(WORDS[1]) == [True] * 4 and outputs_say("quarterly revenue tripled") == [False] * 4
    assert spkd("search", "revenue tripled", status=1) == "spkd search: no segment contains 'revenue tripled'\n"
    assert "Bob  the budget is [forty thousand]" in spkd("search", "forty thousand")


# --- a kill at any step ------------------------------------------------------------------------

@pytest.mark.backends("sqlite")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks")
def test_an_edit_killed_at_any_step_leaves_the_old_or_the_new_version_whole(tmp_path) -> None:
    from tests.unit.test_rerender import run_killed_at

    def setup(root: Path):
        url = f"sqlite:///{root / 'state' / 'spkd.db'}"
        (root / "state").mkdir(parents=True, exist_ok=True)
        db.migrate(url)
        config = make_config(root, url=url, host="h1")
        store = st.Store(url, host="h1")
        job = finished(config, store, "meeting.wav", meeting())
        dup = finished(config, store, "copy.wav", meeting(), twin=job)
        return config, store, [job, dup]

    def edit(config, store) -> None:
        corrections.edit_segment(config, store, 1, 2, text="the budget is zero", origin="cli")

    config, store, _jobs = setup(tmp_path / "count")
    writes = run_killed_at(config, store.url, edit, None)
    store.close()
    assert writes > 10  # 2 new transcripts, the intents with the versions, then per job: 6 outputs, the segments
    outcomes = set()
    for kill_at in range(1, writes + 1):
        config, store, jobs = setup(tmp_path / f"k{kill_at}")
        assert run_killed_at(config, store.url, edit, kill_at) == -1
        results.backfill_segments(config, store)  # what every start runs
        for j in jobs:
            new, old = everywhere(config, store, j, "the budget is zero"), everywhere(config, store, j, WORDS[1])
            version = store.transcript_version(j)
            assert (all(new.values()) and not any(old.values()) and version == 2) or \
                (all(old.values()) and not any(new.values()) and version == 1), (kill_at, j, new, old, version)
            outcomes.add(version)
        assert results.check_results(config, store) == {}, kill_at
        # the edit again, now: it ends as one never interrupted
        edit(config, store)
        assert all(store.transcript_version(j) == 2 and all(everywhere(config, store, j, "the budget is zero")
                                                             .values()) for j in jobs)
        store.close()
    assert outcomes == {1, 2}


# --- the migration -------------------------------------------------------------------------------

def test_migration_0012_adds_the_versions_table_and_takes_it_away_again(empty_url) -> None:
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import IntegrityError

    from tests.unit.test_migrations import alembic_to

    alembic_to(empty_url, "0011")
    alembic_to(empty_url, "0012")
    engine = db.make_engine(empty_url)
    try:
        assert "transcript_versions" in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO jobs (source_name, spool_path, output_stem, state, attempts, max_attempts,"
                              " priority, created_at, task) VALUES ('a.wav', '/s/a.wav', 'a', 'done', 1, 3, 0,"
                              " '2026-12-07 00:00:00', 'transcribe')"))
        for bad in ("INSERT INTO transcript_versions (job_id, version, created_at, origin, change, overlay)"
                    " VALUES (1, 1, '2026-12-07 00:00:00', 'cli', 'x', '{}')",  # version 1 has no row
                    "INSERT INTO transcript_versions (job_id, version, created_at, origin, change, overlay)"
                    " VALUES (1, 2, '2026-12-07 00:00:00', 'mail', 'x', '{}')"):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(text(bad))
    finally:
        engine.dispose()
    alembic_to(empty_url, "0011", down=True)
    engine = db.make_engine(empty_url)
    try:
        assert "transcript_versions" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
