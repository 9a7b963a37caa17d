"""Every file in the inbox accounted for: the listing `spkd status` and the dashboard
show (daemon.intake.listing), the watcher's empty-file clock from the file's mtime, and
one log line per ignored file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from loguru import logger

from daemon.intake.listing import InboxFile, list_inbox
from daemon.intake.stability import ignored_because
from daemon.intake.watcher import Watcher
from daemon.store import Store, db
from tests.support.config import make_config
from tests.support.daemon import write_wav

NOW = 1_800_000_000.0


def dropped(path: Path, data: bytes = b"x" * 100, *, mtime: float = NOW - 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture()
def config(tmp_path):
    made = make_config(tmp_path, watch={"settle_seconds": 5, "empty_fail_seconds": 300})
    made.paths.inbox.mkdir()
    return made


def by_name(config, **kwargs) -> dict[str, InboxFile]:
    return {f.name: f for f in list_inbox(config, now=NOW, **kwargs).files}


def test_each_kind_of_file_with_its_state_and_time(config):
    inbox = config.paths.inbox
    dropped(inbox / "talk.wav", mtime=NOW - 2)  # still settling: 3 s to go
    dropped(inbox / "old.m4a")  # settled long ago: taken at the watcher's next look
    dropped(inbox / "empty.m4a", b"", mtime=NOW - 60)
    dropped(inbox / "notes.txt")
    dropped(inbox / ".hidden.wav")
    dropped(inbox / "film.mp4.part")
    dropped(inbox / "lonely.wav.spkd.json", b"{}")
    dropped(inbox / "team" / "a.wav")
    dropped(inbox / "team" / "a.wav.spkd.json", b"{}", mtime=NOW - 1)
    dropped(inbox / ".git" / "objects" / "x.wav")
    got = by_name(config)
    assert sorted(got) == [".git/", ".hidden.wav", "empty.m4a", "film.mp4.part", "lonely.wav.spkd.json", "notes.txt",
                           "old.m4a", "talk.wav", "team/a.wav"]
    assert (got["talk.wav"].state, got["talk.wav"].due_in(NOW)) == ("settling", pytest.approx(3))
    assert (got["old.m4a"].state, got["old.m4a"].due_in(NOW)) == ("settling", 0)
    # the watcher waits for the sidecar to settle too; the sidecar is no entry of its own
    assert got["team/a.wav"].due_in(NOW) == pytest.approx(4) and "a.wav.spkd.json" in got["team/a.wav"].note
    assert (got["empty.m4a"].state, got["empty.m4a"].due_at) == ("empty", NOW - 60 + 300)
    assert got["empty.m4a"].due_in(NOW) == pytest.approx(240)
    reasons = {name: f.reason for name, f in got.items() if f.state == "ignored"}
    assert reasons == {
        ".git/": "hidden (a folder: nothing in it is taken)",
        ".hidden.wav": "hidden",
        "film.mp4.part": "matches ignore pattern '*.part'",
        "lonely.wav.spkd.json": "sidecar without its audio: taken with lonely.wav once that arrives",
        "notes.txt": "extension not in watch.extensions (.txt)",
    }


def test_the_reasons_are_the_watchers_own(config):
    """One rule: what the listing calls ignored is exactly what ignored_because says."""
    from pathlib import PurePosixPath

    for name in ("notes.txt", ".hidden.wav", "film.mp4.part", "~$x.wav", "a.crdownload", "noext"):
        dropped(config.paths.inbox / name)
    for entry in list_inbox(config, now=NOW).files:
        assert entry.reason == ignored_because(config, PurePosixPath(entry.name))


def test_words_for_status_and_the_dashboard(config):
    inbox = config.paths.inbox
    dropped(inbox / "empty.m4a", b"", mtime=NOW - 10)
    dropped(inbox / "talk.wav", mtime=NOW - 1)
    dropped(inbox / "old.wav")
    dropped(inbox / "notes.txt")
    got = by_name(config)
    at = time.strftime("%H:%M:%S", time.localtime(NOW - 10 + 300))
    assert got["empty.m4a"].detail(NOW, running=True) == \
        f"fails as `empty` in 4 min 50 s (at {at}) unless it gets content"
    assert got["talk.wav"].detail(NOW, running=True) == "taken in ~4 s"
    assert got["old.wav"].detail(NOW, running=True) == "settled: taken at the watcher's next look"
    assert got["old.wav"].detail(NOW, running=False) == "settled: taken once the daemon runs"
    assert got["notes.txt"].detail(NOW, running=True) == "never taken: extension not in watch.extensions (.txt)"
    assert by_name(config)["empty.m4a"].as_json(NOW)["due_in_seconds"] == 290.0


def test_links_and_the_limit(config):
    inbox = config.paths.inbox
    (inbox / "link.wav").symlink_to("/etc/hostname")
    for i in range(5):
        dropped(inbox / f"n{i}.txt")
    listing = list_inbox(config, now=NOW, limit=3)
    assert [f.name for f in listing.files] == ["link.wav", "n0.txt", "n1.txt"] and listing.more == 3
    assert "symbolic link" in listing.files[0].note and listing.files[0].size_bytes is None


def test_no_inbox_yet_or_an_impossible_one(tmp_path):
    config = make_config(tmp_path)
    assert list_inbox(config).files == [] and list_inbox(config).problem is None
    (tmp_path / "file").write_text("")
    impossible = make_config(tmp_path, paths={"inbox": "file"})
    assert "not a directory" in list_inbox(impossible).problem


# --- the watcher ---------------------------------------------------------------------------

def make_watcher(root: Path, **watch: object) -> Watcher:
    url = f"sqlite:///{root / 'state' / 'spkd.db'}"
    (root / "state").mkdir(parents=True, exist_ok=True)
    db.migrate(url)
    config = make_config(root, url=url, host="h1", watch={"settle_seconds": 0, **watch})
    for path in (config.paths.inbox, config.paths.spool, config.paths.failed, config.paths.archive):
        path.mkdir(parents=True, exist_ok=True)
    return Watcher(config, Store(url, host="h1"))


@pytest.fixture()
def watcher(tmp_path):
    made = make_watcher(tmp_path, empty_fail_seconds=300)
    yield made
    made.store.close()


@pytest.fixture()
def logged():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip("\n")), level="INFO", format="{message}")
    yield lines
    logger.remove(sink)


def test_an_empty_files_clock_starts_at_its_mtime(watcher):
    """A restart (a new watcher) must not start the clock again: the file failed after
    300 s in the inbox, whoever watched it."""
    old = dropped(watcher.inbox / "empty.m4a", b"", mtime=time.time() - 301)
    young = dropped(watcher.inbox / "young.m4a", b"", mtime=time.time() - 10)
    watcher.scan()
    watcher.process_due()
    [job] = watcher.store.jobs(limit=10)
    assert (job.source_name, job.state, job.error_kind) == ("empty.m4a", "failed", "empty")
    assert "stayed empty for 301 s" in job.error_message
    assert not old.exists() and young.exists()


def test_an_ignored_file_is_logged_once(watcher, logged):
    notes = dropped(watcher.inbox / "notes.txt")
    dropped(watcher.inbox / ".hidden.wav")
    for _ in range(3):  # the start-up scan and two rescans
        watcher.scan()
    watcher.consider(notes)  # an event for it
    said = [line for line in logged if "notes.txt" in line]
    assert said == ["ignoring notes.txt in the inbox: extension not in watch.extensions (.txt)"]
    assert not [line for line in logged if ".hidden.wav" in line]  # hidden: DEBUG only
    # appended to: the same file, not said again; replaced by another file: said again
    with open(notes, "ab") as handle:
        handle.write(b"more")
    watcher.scan()
    assert len([line for line in logged if "notes.txt" in line]) == 1
    notes.unlink()
    watcher.scan()  # gone: forgotten
    dropped(watcher.inbox / "notes.txt")
    watcher.scan()
    assert len([line for line in logged if "notes.txt" in line]) == 2


def test_a_real_recording_is_not_listed_once_taken(watcher):
    write_wav(watcher.inbox / "a.wav")
    assert [f.name for f in list_inbox(watcher.config).files] == ["a.wav"]
    watcher.scan()
    watcher.process_due()
    assert list_inbox(watcher.config).files == []
