"""Hostile names and hostile sidecars: every name spkd derives fits the file system's
limit, names that are not UTF-8 get one readable form, and a sidecar that cannot be
read as a small JSON object is an OptionsError, whatever it is."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon import files, options
from daemon.jobs import outputs
from daemon.jobs import spool
from daemon.errors import NotRegularFileError, OptionsError, SymlinkError

NAME_MAX = files.NAME_MAX_BYTES


def nbytes(name: str) -> int:
    return len(os.fsencode(name))


# --- shortening and the one numbering rule ---------------------------------------------

def test_short_names_are_left_alone():
    assert files.shorten("talk", 10) == "talk"
    assert files.numbered("talk", lambda n: False, ".wav") == "talk.wav"
    assert files.readable_relative("team/会议 记录.wav") == "team/会议 记录.wav"


def test_every_numbered_name_of_a_long_stem_fits_and_the_cut_is_the_same_for_all():
    stem = "x" * 300
    taken: set[str] = set()
    names = []
    for _ in range(12):
        name = files.numbered(stem, taken.__contains__, ".wav", max_bytes=NAME_MAX - 11)
        taken.add(name)
        names.append(name)
    assert all(nbytes(n) <= NAME_MAX - 11 for n in names)
    base = names[0][: -len(".wav")]
    assert names[1] == f"{base} (2).wav" and names[11] == f"{base} (12).wav"
    assert files.numbered(stem, lambda n: False, ".wav", max_bytes=NAME_MAX - 11) == names[0]  # deterministic


def test_two_long_names_with_the_same_beginning_stay_two_names():
    a, b = "会" * 120 + "A", "会" * 120 + "B"
    short_a, short_b = files.shorten(a, 100), files.shorten(b, 100)
    assert short_a != short_b and nbytes(short_a) <= 100 and nbytes(short_b) <= 100
    assert short_a.encode("utf-8")  # cut at a character boundary: still valid UTF-8
    assert short_a.startswith("会" * 30)


def test_a_stem_with_folders_is_cut_in_its_last_component_only():
    stem = "team/" + "y" * 260
    name = files.numbered(stem, lambda n: False, max_bytes=NAME_MAX - outputs.EXTENSION_MAX_BYTES)
    head, _, last = name.rpartition("/")
    assert head == "team" and nbytes(last) + outputs.EXTENSION_MAX_BYTES <= NAME_MAX


def test_free_name_keeps_room_for_what_is_appended(tmp_path):
    long = tmp_path / ("z" * 250 + ".wav")
    free = files.free_name(long, reserve_bytes=len(spool.ERROR_SUFFIX))
    assert nbytes(free.name) + len(spool.ERROR_SUFFIX) <= NAME_MAX and free.name.endswith(".wav")
    free.write_bytes(b"x")
    spool.error_file_of(free).write_text("{}")  # the .error.json beside it can be created
    again = files.free_name(long, reserve_bytes=len(spool.ERROR_SUFFIX))
    assert again != free and again.name.endswith(" (2).wav")


def test_atomic_write_and_move_work_for_names_at_the_limit(tmp_path):
    target = tmp_path / ("w" * (NAME_MAX - 4) + ".txt")
    files.atomic_write(target, "hello")  # its temporary name is shortened, not the file's
    assert target.read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_lookups_of_names_too_long_to_exist_say_they_are_absent(tmp_path):
    long = tmp_path / ("v" * 250 + ".wav")
    long.write_bytes(b"x")
    sidecar = spool.sidecar_of(long)  # 260 bytes: no file can have this name
    assert files.file_identity(sidecar) is None and not files.exists(sidecar)


# --- names that are not UTF-8, names with control characters ---------------------------

def test_a_name_that_is_not_utf8_gets_a_readable_form():
    name = os.fsdecode(b"team\xff/\xff\xfe.wav")
    readable = files.readable_relative(name)
    assert readable == "team\\xff/\\xff\\xfe.wav"
    assert readable.encode("utf-8")  # storable in the database, writable to a log


def test_control_characters_are_escaped():
    assert files.readable_relative("a\nb\tc\x7f.wav") == "a\\x0ab\\x09c\\x7f.wav"


def test_a_readable_form_grown_past_the_limit_is_shortened_keeping_its_suffix():
    name = os.fsdecode(b"\xff" * 200 + b".wav")  # 204 bytes on disk, 804 when escaped
    readable = files.readable_relative(name, reserve_bytes=len(spool.SIDECAR_SUFFIX))
    assert readable.endswith(".wav") and nbytes(readable) + len(spool.SIDECAR_SUFFIX) <= NAME_MAX
    assert readable.startswith("\\xff\\xff")


# --- opening only regular files ----------------------------------------------------------

def test_open_regular_never_blocks_on_a_fifo_and_never_follows_links(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        files.open_regular(fifo)  # would block forever with a plain open()
    with pytest.raises(NotRegularFileError, match="folder"):
        files.open_regular(tmp_path)
    link = tmp_path / "link.wav"
    os.symlink("/etc/hostname", link)
    with pytest.raises(SymlinkError):
        files.open_regular(link)
    real = tmp_path / "real.wav"
    real.write_bytes(b"abc")
    with files.open_regular(real) as handle:
        assert handle.read() == b"abc"


# --- sidecars ------------------------------------------------------------------------

@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text("[" * 30_000 + "]" * 30_000), "nested too deeply"),
    (lambda p: p.write_text(json.dumps({"hotwords": ["word"] * 20_000})), "larger than 64 KB"),
    (lambda p: p.write_text(""), "not valid JSON"),
    (lambda p: p.write_bytes(b'{"speakers": 2, "x": "\xff"}'), "not UTF-8"),
    (lambda p: p.mkdir(), "folder"),
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: os.symlink("/etc/hostname", p), "symbolic link"),
])
def test_any_sidecar_that_cannot_be_parsed_is_an_options_error(tmp_path, make, expected):
    sidecar = tmp_path / "a.wav.spkd.json"
    make(sidecar)
    with pytest.raises(OptionsError, match=expected):
        options.read_sidecar(sidecar)


def test_a_sidecar_is_never_read_whole_when_it_is_huge(tmp_path, monkeypatch):
    sidecar = tmp_path / "a.wav.spkd.json"
    with open(sidecar, "wb") as handle:
        handle.truncate(50 * 2**20)  # 50 MB (sparse)
    reads: list[int] = []
    real_open = files.open_regular

    def spying(path: Path):  # type: ignore[no-untyped-def]
        handle = real_open(path)
        original = handle.read
        handle.read = lambda n=-1: (reads.append(n), original(n))[1]  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(files, "open_regular", spying)
    with pytest.raises(OptionsError, match="larger than 64 KB"):
        options.read_sidecar(sidecar)
    assert reads == [options.MAX_SIDECAR_BYTES + 1]


def test_a_copy_across_file_systems_that_fails_leaves_no_half_copy(tmp_path, monkeypatch):
    import errno
    import shutil

    src = tmp_path / "a" / "x.wav"
    src.parent.mkdir()
    src.write_bytes(b"audio" * 1000)
    dst = tmp_path / "b" / "x.wav"

    def cross_device(*_args):  # type: ignore[no-untyped-def]
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def full(fin, fout, _size):  # type: ignore[no-untyped-def]
        fout.write(fin.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(shutil, "copyfileobj", full)
    with pytest.raises(OSError, match="No space left"):
        files.move(src, dst)
    assert src.read_bytes() == b"audio" * 1000 and list(dst.parent.iterdir()) == []
