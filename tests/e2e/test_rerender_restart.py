"""A rename killed mid-way (SIGKILL, the real `spkd speakers` process), then a restart of
the real daemon: the job and its duplicate agree everywhere (issue 26, R1)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

from daemon import config as cfg
from daemon import store as st
from daemon.jobs import outputs, results
from tests.support.daemon import Daemon, write_wav

# `spkd speakers 1 Speaker2=Term`, killed (SIGKILL) just before its 4th file write (two new
# transcripts, then json, then txt): the intents are recorded, the first job's new
# transcript is in place, its txt is not.
KILLED_RENAME = """
import os, signal, sys
from daemon import files
from daemon.cli.main import main
real, count = files.atomic_write, [0]
def write(*a, **k):
    count[0] += 1
    if count[0] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
files.atomic_write = write
sys.exit(main(["--config", sys.argv[1], "speakers", "1", "Speaker2=Term"]))
"""


def test_a_rename_killed_mid_way_is_finished_by_the_next_start(tmp_path):
    with Daemon(tmp_path, config={"workers": {"count": 1}}) as d:
        d.start()
        write_wav(d.inbox / "meeting.wav", seconds=3.0)
        d.wait_finished(1)
        shutil.copyfile(tmp_path / "archive" / "meeting.wav", d.inbox / "copy.wav")  # a duplicate: reused
        jobs = d.wait_finished(2)
        assert [j["state"] for j in jobs] == ["done", "done"] and jobs[1]["reused_from"] == 1
        assert d.stop() == 0

        killed = subprocess.run([sys.executable, "-c", KILLED_RENAME, str(d.config_path)], env=d.env,
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        config = cfg.load(d.config_path, env={})
        store = st.Store(config.database_url, host=config.host)
        try:
            assert outputs.load_transcript(config, 1).speaker_display(2) == "Term"
            assert "Term" not in (d.outbox / "meeting.txt").read_text()  # half done, as the kill left it
            assert set(results.check_results(config, store)) == {1, 2}

            d.start()
            d.wait(lambda: results.check_results(config, store) == {}, timeout=60, what="the rename finished")
            for job_id, stem in ((1, "meeting"), (2, "copy")):
                assert outputs.load_transcript(config, job_id).speaker_display(2) == "Term"
                assert "Term" in (d.outbox / f"{stem}.txt").read_text()
                assert "Term" in {s for (*_x, s, _t) in store.segment_texts(job_id)}
                assert [e["kind"] for e in d.events(job_id)][-2:] == ["rerender", "renamed"]
        finally:
            store.close()
        assert d.stop() == 0
