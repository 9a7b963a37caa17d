"""Impossible folders are configuration errors: one function (daemon.folders) answers
for `spkd run`, which makes the folders, and `spkd doctor`, which only looks."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.folders import folder_problem, folder_problems, prepare_folders
from daemon.service import devices
from daemon.service.doctor import diagnose
from tests.support.config import make_config


def test_an_inbox_under_a_regular_file_is_named_with_its_key(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    config = make_config(tmp_path, paths={"inbox": "hostname/inbox"})
    [problem] = folder_problems(config)
    assert problem.key == "paths.inbox" and problem.path == tmp_path / "hostname" / "inbox"
    assert str(problem) == (f"paths.inbox: {tmp_path / 'hostname' / 'inbox'} cannot be created: "
                            f"{tmp_path / 'hostname'} is a file, not a directory")
    with pytest.raises(ConfigError) as caught:
        prepare_folders(config)
    assert str(caught.value) == str(problem) and "\n" not in str(caught.value)
    # nothing is made while any folder is impossible
    assert not (tmp_path / "outbox").exists() and not (tmp_path / "state").exists()


def test_deeper_under_a_file_and_a_file_in_the_folders_place(tmp_path):
    (tmp_path / "f").write_text("")
    (tmp_path / "outbox").write_text("not a folder")
    config = make_config(tmp_path, paths={"spool": "f/a/b/spool"})
    problems = {p.key: p.reason for p in folder_problems(config)}
    assert problems == {"paths.spool": f"cannot be created: {tmp_path / 'f'} is a file, not a directory",
                        "paths.outbox": "is not a directory (a file is in its place)"}
    both = r"paths\.outbox: .* is not a directory \(a file is in its place\); paths\.spool: .*cannot be created"
    with pytest.raises(ConfigError, match=both):
        prepare_folders(config)


def test_models_dir_is_only_read_but_must_be_a_folder(tmp_path):
    (tmp_path / "models").write_text("")
    config = make_config(tmp_path, models={"dir": "models"})
    assert [(p.key, p.reason) for p in folder_problems(config)] == [
        ("models.dir", "is not a directory (a file is in its place)")]
    # a missing models folder is the models check's to report; spkd run never makes it
    config = make_config(tmp_path, models={"dir": "elsewhere/models"})
    assert folder_problems(config) == []
    prepare_folders(config)
    assert not (tmp_path / "elsewhere").exists() and (tmp_path / "inbox").is_dir()


def test_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # root may write anywhere; a read-only folder is simulated where the check asks
    monkeypatch.setattr(os, "access",
                        lambda p, mode: False if str(p).startswith(str(locked)) else real_access(p, mode))
    assert folder_problem(locked) == "is not writable by this user (its permissions)"
    assert folder_problem(locked / "inbox") == \
        f"cannot be created: {locked} is not writable by this user (its permissions)"
    assert folder_problem(locked, writable=False) is None  # models.dir: only read
    config = make_config(tmp_path, paths={"archive": "locked/archive"})
    with pytest.raises(ConfigError, match=r"^paths\.archive: .*locked/archive cannot be created: .*not writable"):
        prepare_folders(config)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        assert "not writable" in folder_problem(locked / "inbox")
    finally:
        locked.chmod(0o755)


def test_a_link_to_nothing(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert folder_problem(tmp_path / "dangling") == "is a symbolic link to nothing"
    (tmp_path / "there").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "there")
    assert folder_problem(tmp_path / "link") is None


def test_doctor_reports_an_impossible_folder_as_not_ready(tmp_path):
    (tmp_path / "hostname").write_text("")
    config = make_config(tmp_path, paths={"inbox": "hostname/inbox"})
    report = diagnose(config, inventory=devices.Inventory(cpu_cores=2))
    [check] = [c for c in report.checks if c["check"] == "folders"]
    assert not check["ok"] and check["detail"].startswith("paths.inbox: ") and not report.ok
    assert not (tmp_path / "outbox").exists()  # doctor leaves nothing behind
    good = diagnose(make_config(tmp_path / "fine"), inventory=devices.Inventory(cpu_cores=2))
    assert [c["ok"] for c in good.checks if c["check"] == "folders"] == [True]


def refuse_mkdir(monkeypatch, refused: Path) -> None:
    """os.mkdir of `refused` fails as on /sys, even for root: what only an attempt shows."""
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path) == refused:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


def test_run_takes_back_the_folders_it_made_when_a_later_one_cannot_be_made(tmp_path, monkeypatch):
    (tmp_path / "outbox").mkdir()  # there before: stays
    config = make_config(tmp_path, paths={"spool": "deep/er/spool"})
    refuse_mkdir(monkeypatch, tmp_path / "deep" / "er" / "spool")
    with pytest.raises(ConfigError, match=r"^paths\.spool: .*spool cannot be created: operation not permitted$"):
        prepare_folders(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"], "inbox, archive, failed, deep/er taken back"
    monkeypatch.undo()
    prepare_folders(config)
    assert all(path.is_dir() for path in vars(config.paths).values())


def test_doctor_tries_to_make_each_missing_folder_and_leaves_no_trace(tmp_path, monkeypatch):
    config = make_config(tmp_path, paths={"inbox": "sys/inbox"})
    refuse_mkdir(monkeypatch, tmp_path / "sys" / "inbox")
    (tmp_path / "sys").mkdir()
    report = diagnose(config, inventory=devices.Inventory(cpu_cores=2))
    [check] = [c for c in report.checks if c["check"] == "folders"]
    assert not check["ok"] and not report.ok
    assert check["detail"] == f"paths.inbox: {tmp_path / 'sys' / 'inbox'} cannot be created: operation not permitted"
    # what run says, and neither made anything
    with pytest.raises(ConfigError, match="operation not permitted"):
        prepare_folders(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sys"] and not any((tmp_path / "sys").iterdir())
    monkeypatch.undo()
    good = diagnose(config, inventory=devices.Inventory(cpu_cores=2))
    assert [c["ok"] for c in good.checks if c["check"] == "folders"] == [True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sys"], "made to see, and removed again"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.isdir("/sys/kernel"), reason="needs root and a sysfs at /sys")
def test_a_folder_under_sys_for_real(tmp_path):
    config = make_config(tmp_path, paths={"inbox": "/sys/spkd-test-inbox"})
    [problem] = folder_problems(config, try_create=True)
    assert (problem.key, problem.reason) == ("paths.inbox", "cannot be created: operation not permitted")
    assert not any(tmp_path.iterdir())
