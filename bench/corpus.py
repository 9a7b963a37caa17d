"""Distinct ~30-s two-voice recordings for the end-to-end benchmarks, cached.

Built from the same espeak-ng voices and sentences as the tests (tests/support/audio.py):
recording i starts at sentence i and uses pauses of 2.0 + 0.1·(i mod 7) s, so every file
has its own sha256 (the daemon would otherwise deduplicate identical files) while all
stay ~30 s with the same speech density. Utterances are synthesised once and reused.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from bench.common import CACHE
from tests.support.audio import (
    LINES,
    VOICE_A,
    VOICE_B,
    duration_seconds,
    make_silence_wav,
    make_varied_wav,
    run_tool,
    speak,
)

CORPUS_VERSION = 1


def _utterances(directory: Path) -> dict[tuple[int, str], Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out: dict[tuple[int, str], Path] = {}
    for i, text in enumerate(LINES):
        for speaker, voice in (("A", VOICE_A), ("B", VOICE_B)):
            path = directory / f"utt{i}{speaker}.wav"
            if not path.exists():
                speak(text, voice, path)
            out[(i, speaker)] = path
    return out


def recording(index: int, target: Path, *, min_speech_seconds: float = 16.0) -> Path:
    """Recording `index`: voices A and B alternate from sentence `index`, with 2 s+ pauses."""
    if target.exists():
        return target
    utts = _utterances(CACHE / "audio" / "utterances")
    pause = 2.0 + 0.1 * (index % 7)
    with tempfile.TemporaryDirectory(prefix="spkd-bench-audio-") as tmp:
        edge = make_silence_wav(Path(tmp) / "edge.wav", pause / 2)
        gap = make_silence_wav(Path(tmp) / "gap.wav", pause)
        parts: list[Path] = [edge]
        speech, turn = 0.0, 0
        while speech < min_speech_seconds or turn < 4:
            utt = utts[((index + turn) % len(LINES), "AB"[turn % 2])]
            if turn:
                parts.append(gap)
            parts.append(utt)
            speech += duration_seconds(utt)
            turn += 1
        parts.append(edge)
        partial = target.with_suffix(".partial.wav")
        target.parent.mkdir(parents=True, exist_ok=True)
        run_tool(["sox", *map(str, parts), str(partial)])
        partial.replace(target)
    return target


def corpus(count: int) -> list[Path]:
    """`count` distinct ~30-s two-voice wavs (built on first use, then cached)."""
    directory = CACHE / "audio" / f"v{CORPUS_VERSION}"
    paths = [recording(i, directory / f"rec{i:02d}.wav") for i in range(count)]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == len(paths), "corpus files must differ (the daemon deduplicates by content)"
    return paths


def short_clip(target: Path | None = None) -> Path:
    """A short job: "Thank you very much." in voice A between 0.25 s of silence (~1.5 s)."""
    target = target or CACHE / "audio" / f"v{CORPUS_VERSION}" / "short2.wav"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spkd-bench-audio-") as tmp:
        utt = Path(tmp) / "utt.wav"
        speak("Thank you very much.", VOICE_A, utt)
        edge = make_silence_wav(Path(tmp) / "edge.wav", 0.25)
        partial = target.with_suffix(".partial.wav")
        run_tool(["sox", str(edge), str(utt), str(edge), str(partial)])
        partial.replace(target)
    return target



def varied_recording(seconds: float, target: Path, *, seed: int = 0, voices: int = 6) -> Path:
    """A long, varied recording (tests.support.audio.make_varied_wav), built once, its
    utterances cached under bench/.cache."""
    if not target.exists():
        make_varied_wav(target, seconds, seed=seed, voices=voices, cache_dir=CACHE / "audio" / "varied-utterances")
    return target
