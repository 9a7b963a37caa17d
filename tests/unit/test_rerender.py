"""Re-renders that finish or are repaired (issue 26, R1): a rename or rematch killed
(SIGKILL) at any step leaves jobs that the next start, the next rematch or `spkd doctor`
brings level: stored transcript, every output and the segment rows agree, for the job
and its duplicates alike. The kill is real: a forked child renames, and kills itself
just before its k-th write (a transcript, an output file, the intents, the segments),
for every k."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from daemon import files, writers
from daemon import store as st
from daemon.jobs import outputs, rename, results
from daemon.store import db
from tests.support.config import make_config
from tests.unit.test_voices import FORMATS, NEAR_A, C, finished, transcript

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks")


def setup(root: Path) -> tuple:
    url = f"sqlite:///{root / 'state' / 'spkd.db'}"
    (root / "state").mkdir(parents=True, exist_ok=True)
    db.migrate(url)
    config = make_config(root, url=url, host="h1")
    store = st.Store(url, host="h1")
    t = transcript({1: NEAR_A, 2: C}, names={2: "CtrlC"})
    job = finished(config, store, "meeting.wav", t)
    dups = [finished(config, store, f"copy {i}.wav", t, twin=job) for i in (1, 2)]
    return config, store, [job, *dups]


class Killed(Exception):
    pass


def run_killed_at(config, url: str, action, kill_at: int | None) -> int:
    """Fork; the child does `action(config, store)` and SIGKILLs itself just before its
    `kill_at`-th write. Returns how many writes the child made (when not killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            count = [0]
            store = st.Store(url, host="h1")

            def point() -> None:
                count[0] += 1
                if kill_at is not None and count[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            real_write, real_replace = files.atomic_write, os.replace
            real_begin, real_segments = store.begin_rerenders, store.replace_segments

            def atomic_write(*a, **k):
                point()
                return real_write(*a, **k)

            def replace(src, dst, *a, **k):
                if str(src).endswith(".next.json"):
                    point()
                return real_replace(src, dst, *a, **k)

            def begin(*a, **k):
                point()
                return real_begin(*a, **k)

            def segments(*a, **k):
                point()
                return real_segments(*a, **k)

            files.atomic_write, os.replace = atomic_write, replace
            store.begin_rerenders, store.replace_segments = begin, segments
            action(config, store)
            os.write(write, str(count[0]).encode())
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    made = os.read(read, 100)
    os.close(read)
    if kill_at is not None and os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return -1
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return int(made)


def names_everywhere(config, store, job_id: int) -> set[str]:
    """Speaker 2's name as the stored transcript, every output and the segments say it."""
    seen = set()
    stored = outputs.load_transcript(config, job_id)
    seen.add(stored.speaker_display(2))
    row = store.job(job_id)
    for fmt in FORMATS:
        data = (config.paths.outbox / (row.output_stem + writers.extension(fmt))).read_bytes()
        seen |= {name for name in ("CtrlC", "Term") if name.encode() in data}
    seen |= {s for (_i, _a, _b, s, _t) in store.segment_texts(job_id) if s != "Speaker1"}
    return seen


def rename_to_term(config, store) -> None:
    rename.rename_speakers(config, store, 1, {"CtrlC": "Term"})  # job 1: the first of `setup`


def test_a_rename_killed_at_any_step_is_whole_after_a_restart(tmp_path):
    config, store, jobs = setup(tmp_path / "count")
    writes = run_killed_at(config, store.url, rename_to_term, None)
    store.close()
    assert writes > 10  # 3 new transcripts, the intents, then per job: 6 outputs, the segments
    for kill_at in range(1, writes + 1):
        root = tmp_path / f"k{kill_at}"
        config, store, jobs = setup(root)
        assert jobs[0] == 1
        assert run_killed_at(config, store.url, rename_to_term, kill_at) == -1
        results.backfill_segments(config, store)  # what every start runs
        seen = [names_everywhere(config, store, j) for j in jobs]
        assert seen in ([{"CtrlC"}] * 3, [{"Term"}] * 3), (kill_at, seen)
        assert results.check_results(config, store) == {}, kill_at
        renamed = [e for j in jobs for e in store.events(j) if e.kind == "renamed"]
        assert len(renamed) == (3 if seen[0] == {"Term"} else 0), kill_at
        assert not list((config.paths.state / "transcripts").glob("*.next.json")) or seen[0] == {"CtrlC"}
        # the rename again, now: it ends the same way as one that was never interrupted
        rename.rename_speakers(config, store, jobs[0], {"Speaker2": "Term"} if seen[0] == {"CtrlC"}
                               else {"Term": "Term2"})
        want = {"Term"} if seen[0] == {"CtrlC"} else {"Term2"}
        for j in jobs:
            stored = outputs.load_transcript(config, j).speaker_display(2)
            assert stored == list(want)[0] and {s for (*_x, s, _t) in store.segment_texts(j)} == {"Speaker1", stored}
        assert results.check_results(config, store) == {}
        store.close()


def test_the_next_rematch_finishes_an_interrupted_rename_and_doctor_repairs(tmp_path):
    config, store, jobs = setup(tmp_path)
    # killed after the intents and the first job's new transcript: outputs still say CtrlC
    assert run_killed_at(config, store.url, rename_to_term, 6) == -1
    assert outputs.load_transcript(config, jobs[0]).speaker_display(2) == "Term"
    assert set(results.check_results(config, store)) == set(jobs)
    rename.rematch(config, store)
    assert [names_everywhere(config, store, j) for j in jobs] == [{"Term"}] * 3
    assert results.check_results(config, store) == {}

    # outputs and segments changed behind spkd's back: the doctor finds and repairs them
    out = config.paths.outbox / "copy 1.txt"
    out.write_text(out.read_text().replace("Term", "Mallory"))
    store.replace_segments(jobs[2], transcript({1: NEAR_A, 2: C}, names={2: "Eve"}))
    assert results.check_results(config, store) == {jobs[1]: ["txt"], jobs[2]: ["segments"]}
    repair = results.repair_results(config, store)
    assert repair.repaired == {jobs[1]: ("txt",), jobs[2]: ("segments",)} and repair.checked == 3
    assert [names_everywhere(config, store, j) for j in jobs] == [{"Term"}] * 3
    assert results.repair_results(config, store).repaired == {}  # nothing left to do
    assert [e.kind for e in store.events(jobs[1])][-2:] == ["rerender", "repaired"]
    store.close()


def test_a_rerender_done_twice_is_the_same_as_once(tmp_path):
    config, store, jobs = setup(tmp_path)
    t = outputs.load_transcript(config, jobs[0]).replace(speaker_names={2: "Bob"})
    assert results.rerender(config, store, jobs[0], t, event="renamed", names={"Speaker2": "Bob"})
    first = {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()}
    segs = store.segment_texts(jobs[0])
    assert results.rerender(config, store, jobs[0], t, event="renamed", names={"Speaker2": "Bob"})
    assert {p.name: p.read_bytes() for p in config.paths.outbox.iterdir()} == first
    assert store.segment_texts(jobs[0]) == segs
    assert store.pending_rerenders() == []
    store.close()


def test_a_fresh_result_agrees_with_its_stored_transcript(tmp_path):
    """The worker's outputs and segments are made from the transcript as stored, so a
    check (and a re-render) compares like with like."""
    config, store, _jobs = setup(tmp_path)
    t = transcript({1: NEAR_A, 2: C})
    fine = t.replace(segments=tuple(s.__class__(start=s.start + 0.0004, end=s.end + 0.00071, speaker=s.speaker,
                                                  text=s.text) for s in t.segments))
    job_id = store.enqueue(source_name="fine.wav", spool_path=str(config.paths.spool / "x" / "fine.wav"),
                           output_stem="fine", sha256=None, size_bytes=1)
    job = store.claim(slot=0, pid=5, device="cpu", lease_seconds=60)
    assert job.id == job_id
    written = results.write_outputs(config, job_id, fine, output_stem="fine", formats=["json", "srt", "txt"])
    assert results.record_transcribed(config, store, job, fine, written=written, pid=5, processing_seconds=1,
                                      device="cpu")
    assert results.disagreements(config, store, job_id) == []
    store.close()


def test_spkd_doctor_repairs_and_says_which_jobs(tmp_path):
    from daemon.service import doctor

    config, store, jobs = setup(tmp_path)
    assert run_killed_at(config, store.url, rename_to_term, 8) == -1  # in the middle of the first job's outputs
    store.close()
    report = doctor.Report()
    doctor.check_results(config, report)
    [check] = [c for c in report.checks if c["check"] == "results"]
    assert check["ok"] and check.get("warning") and "repaired 3 job(s)" in check["detail"]
    report = doctor.Report()
    doctor.check_results(config, report)
    [check] = report.checks
    assert "3 done job(s): outputs and segments agree" in check["detail"] and not check.get("warning")
    store = st.Store(config.database_url, host="h1")
    assert [names_everywhere(config, store, j) for j in jobs] == [{"Term"}] * 3
    store.close()
