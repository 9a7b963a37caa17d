"""Fast checks of the inbox rules: stability, ignore patterns, sidecar options, dedup keys."""

import json
from pathlib import Path

import pytest

from daemon import options
from daemon.errors import OptionsError
from daemon.files import inside, safe_relative
from daemon.intake.stability import StabilityTracker
from daemon.intake.watcher import Watcher
from tests.support.config import make_config


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_file_resets_its_clock(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(2.0, clock=clock)
    path = tmp_path / "a.wav"
    path.write_bytes(b"x" * 10)
    tracker.touch(path)
    clock.now += 1.5
    assert tracker.due() == []
    with open(path, "ab") as f:
        f.write(b"more")
    clock.now += 1.0
    assert tracker.due() == []  # changed: the clock starts again
    clock.now += 1.9
    assert tracker.due() == []
    clock.now += 0.2
    [(due, age)] = tracker.due()
    assert due == path and age == pytest.approx(4.6)


def test_a_vanished_file_is_forgotten(tmp_path):
    tracker = StabilityTracker(0.0)
    path = tmp_path / "a.wav"
    path.write_bytes(b"x")
    tracker.touch(path)
    path.unlink()
    assert tracker.due() == [] and len(tracker) == 0


@pytest.fixture()
def watcher(tmp_path):
    config = make_config(tmp_path, paths={"inbox": "in", "outbox": "out", "archive": "arc", "failed": "f", "spool": "s",
                                          "state": "st"})
    return Watcher(config, store=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, reason", [
    ("a.wav", None), ("sub/dir/b.M4A", None), ("会议 记录.mp3", None),
    (".hidden.wav", "hidden"), ("dir/.x/a.wav", "hidden"), ("a.wav.part", "ignore"), ("a.crdownload", "ignore"),
    ("x.tmp", "ignore"), ("~$doc.wav", "ignore"), (".DS_Store", "hidden"), ("notes.txt", "extension"),
    ("a.wav.spkd.json", "sidecar"),
])
def test_ignore_rules(watcher, name, reason):
    got = watcher.ignore_reason(watcher.inbox / name)
    assert (got is None) if reason is None else (reason in got)


def test_sidecar_validation_names_the_key():
    assert options.parse(json.dumps({"speakers": 2, "hotwords": [" a ", "b"], "formats": ["srt", "srt"],
                                     "priority": 3})) == {"speakers": 2, "hotwords": ["a", "b"],
                                                          "formats": ["srt"], "priority": 3}
    for raw, key in [({"speakers": 0}, "speakers"), ({"speakers": "2"}, "speakers"), ({"hotwords": "a b"}, "hotwords"),
                     ({"formats": ["pdf"]}, "formats"), ({"priority": 1.5}, "priority"), ({"spk": 1}, "spk")]:
        with pytest.raises(OptionsError, match=key):
            options.validate(raw)
    with pytest.raises(OptionsError, match="not valid JSON"):
        options.parse("{")


def test_hotword_limit_counts_the_words_the_recogniser_sees():
    limit = options.MAX_HOTWORDS
    assert len(options.validate({"hotwords": [f"w{i}" for i in range(limit)]})["hotwords"]) == limit
    with pytest.raises(OptionsError, match=rf"hotwords: at most {limit} words .*got {limit + 1}"):
        options.validate({"hotwords": [f"w{i}" for i in range(limit + 1)]})
    # SeACo splits phrases at whitespace: 100 three-word phrases are 300 hotwords
    with pytest.raises(OptionsError, match=rf"got {3 * 100}"):
        options.validate({"hotwords": [f"a{i} b{i} c{i}" for i in range(100)]})
    # repeats are one hotword
    assert options.validate({"hotwords": ["x"] * (limit + 10)})["hotwords"] == ["x"] * (limit + 10)


def test_channels_setting():
    assert options.validate({"channels": "split"}) == {"channels": "split"}
    assert options.validate({"channels": [" 客服 ", "客户"]}) == {"channels": ["客服", "客户"]}
    for bad, why in [("stereo", "expected one of"), ([], "expected one of"), (["a", ""], "empty"),
                     (["a", "a"], "same name"), (["x" * 65], "at most"), (2, "expected one of")]:
        with pytest.raises(OptionsError, match=why):
            options.validate({"channels": bad})
    options.check_channels("auto", 1, source="a.wav")
    options.check_channels("mix", 1, source="a.wav")
    options.check_channels(["a"], 2, source="a.wav")
    with pytest.raises(OptionsError, match="a.wav: channels: .*mono"):
        options.check_channels("split", 1, source="a.wav")
    with pytest.raises(OptionsError, match="3 names for a recording with 2 channels"):
        options.check_channels(["a", "b", "c"], 2, source="a.wav")
    # "mix" is the default: the same dedup key as no setting at all
    assert options.dedup_key("a" * 64, {"channels": "mix"}) == options.dedup_key("a" * 64, {})
    assert options.dedup_key("a" * 64, {"channels": "split"}) != options.dedup_key("a" * 64, {})


def test_dedup_key_depends_on_content_and_transcript_options_only():
    base = options.dedup_key("a" * 64, {})
    assert base == options.dedup_key("a" * 64, {"priority": 9, "formats": ["srt"]})
    assert base != options.dedup_key("a" * 64, {"speakers": 2})
    assert base != options.dedup_key("b" * 64, {})
    assert options.dedup_key(None, {}) is None


def test_names_cannot_escape_their_folder(tmp_path):
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            inside(tmp_path, bad)
    assert inside(tmp_path, "team/a.json") == (tmp_path / "team" / "a.json").resolve()
    assert str(safe_relative("a/b.wav")) == "a/b.wav"


def test_pcm_wav_is_probed_from_its_header_and_anything_else_by_ffprobe(tmp_path):
    import wave

    from daemon.intake.probe import probe_pcm_wav

    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0" * 4 * 12000)
    found = probe_pcm_wav(path)
    assert found is not None and found.duration_seconds == 1.5
    truncated = tmp_path / "t.wav"
    truncated.write_bytes(path.read_bytes()[:1000])
    assert probe_pcm_wav(truncated) is None  # the header promises more than the file holds
    junk = tmp_path / "j.wav"
    junk.write_bytes(b"RIFX" + b"\1" * 100)
    assert probe_pcm_wav(junk) is None
    renamed = tmp_path / "a.mp3"
    renamed.write_bytes(path.read_bytes())
    assert probe_pcm_wav(renamed) is None
