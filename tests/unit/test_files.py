"""The one " (n)" naming rule (daemon.files.numbered) as each of its users sees it: a
file in failed/ or archive/, a job's output stem, the outputs of one `spkd transcribe`."""

from __future__ import annotations

from pathlib import Path

from daemon import files
from daemon.cli.oneshot import output_stems


def test_numbered() -> None:
    assert files.numbered("talk", lambda name: False) == "talk"
    taken = {"talk", "talk (2)"}
    assert files.numbered("talk", taken.__contains__) == "talk (3)"
    assert files.numbered("a", {"a.wav"}.__contains__, ".wav") == "a (2).wav"


def test_free_name_keeps_the_suffix(tmp_path: Path) -> None:
    first = tmp_path / "team" / "a.m4a"
    assert files.free_name(first) == first
    first.parent.mkdir()
    first.write_bytes(b"x")
    (tmp_path / "team" / "a (2).m4a").write_bytes(b"x")
    assert files.free_name(first) == tmp_path / "team" / "a (3).m4a"


def test_one_shot_stems_follow_the_same_rule(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "talk.wav", tmp_path / "y" / "talk.m4a"
    assert output_stems([a, b, a], tmp_path / "out") == [(tmp_path / "out", "talk"), (tmp_path / "out", "talk (2)"),
                                                         (tmp_path / "out", "talk (3)")]


def test_one_shot_stems_whose_outputs_would_share_a_name_get_a_number(tmp_path: Path) -> None:
    a, b = tmp_path / "talk.wav", tmp_path / "talk.sentences.wav"  # talk.sentences.txt, twice
    assert output_stems([a, b], None) == [(tmp_path, "talk"), (tmp_path, "talk.sentences (2)")]


def test_nearest_existing(tmp_path: Path) -> None:
    assert files.nearest_existing(tmp_path / "not" / "yet") == tmp_path
    assert files.nearest_existing(tmp_path) == tmp_path


def test_a_name_someone_else_chose_becomes_one_plain_file_name() -> None:
    from daemon.files import NAME_MAX_BYTES, name_bytes, safe_file_name

    assert safe_file_name("../../etc/passwd.wav") == "passwd.wav"
    assert safe_file_name("C:\\Users\\me\\talk.m4a") == "talk.m4a"
    assert safe_file_name("...hidden.wav") == "hidden.wav"
    assert safe_file_name("tab\there\nnewline.wav") == "tab\\x09here\\x0anewline.wav", "as every name is shown"
    assert safe_file_name("  ") == "upload" and safe_file_name("../..") == "upload"
    assert safe_file_name("会议 记录.wav") == "会议 记录.wav"
    long = safe_file_name("长" * 300 + ".wav", reserve_bytes=10)
    assert long.endswith(".wav") and name_bytes(long) <= NAME_MAX_BYTES - 10 and long.startswith("长")
