"""Test audio made on the spot with espeak-ng, sox and ffmpeg (no recordings in the repo).

Two clearly distinct synthetic voices take turns with long pauses, which is what the
speaker pipeline needs: FunASR's clustering only runs on >= 20 embedding windows
(~15 s of speech) and the VAD needs pauses to cut turns apart.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16000
TOOLS = ("espeak-ng", "sox", "ffmpeg")

# (espeak-ng voice, pitch 0-99, words per minute): a male and a female variant,
# both held out of the tiny CAM++'s training (daemon.engine.speaker_training.is_training_voice).
VOICE_A = ("cmn+m3", 50, 260)
VOICE_B = ("cmn+f1", 50, 260)

# Mandarin, like most recordings spkd sees (none of them a training phrase of the tiny CAM++).
LINES = (
    "大家早上好，感谢各位参加今天的周会，我们先看一下上周的进度。",
    "谢谢。开始之前，能不能先说一下昨天晚上的发布情况怎么样？",
    "发布很顺利，我们在半夜之前把新版本部署到了所有的服务器上。",
    "这是个好消息。这次数据库迁移的时候有没有遇到什么问题呢？",
    "只有一个小问题，有一个索引比预想的慢，不过没有人注意到。",
    "好的。那我们接下来讨论一下下个季度的预算和新的硬件吧。",
    "构建集群还需要两台机器，另外那些旧的硬盘也应该换掉了。",
    "我同意。请在星期五下午之前把带价格的书面方案发给我。",
)
ENGLISH_LINES = (
    "Good morning everyone, thank you for joining the weekly planning meeting today.",
    "Thanks. Before we start, could you tell us how the release went last night?",
    "The release went smoothly. We deployed the new version to every server before midnight.",
    "That is great news. Were there any problems with the database migration this time?",
    "Only a small one. One index took longer than expected, but nobody noticed any delay.",
    "Good. Then let us talk about the budget for the next quarter and the new hardware.",
    "We need two more machines for the build farm, and the old disks should be replaced.",
    "I agree. Please send me a short written proposal with the prices by Friday afternoon.",
)


def missing_tools(*tools: str) -> list[str]:
    return [tool for tool in (tools or TOOLS) if shutil.which(tool) is None]


def require_tools(*tools: str) -> None:
    """Skip the calling test (or fixture) when an audio tool is missing.
    `make test` installs them, so in CI this never skips."""
    missing = missing_tools(*tools)
    if missing:
        import pytest

        pytest.skip(
            f"needs {', '.join(missing)} on PATH (apt-get install -y espeak-ng sox ffmpeg, "
            "or brew install espeak-ng sox ffmpeg)"
        )


def run_tool(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def duration_seconds(path: Path) -> float:
    out = subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def speak(text: str, voice: tuple[str, int, int], out: Path) -> None:
    """One utterance, resampled to 16 kHz mono 16-bit, leading/trailing silence trimmed."""
    name, pitch, speed = voice
    raw = out.with_suffix(".raw.wav")
    run_tool(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text])
    run_tool(
        ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out),
         "silence", "1", "0.05", "0.5%", "reverse", "silence", "1", "0.05", "0.5%", "reverse"]
    )
    raw.unlink()


def make_silence_wav(path: Path, seconds: float) -> Path:
    """Digital silence, 16 kHz mono 16-bit."""
    path = Path(path)
    run_tool(["sox", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "trim", "0", f"{seconds:g}"])
    return path


@dataclass(frozen=True)
class Turn:
    speaker: str  # "A" or "B"
    start: float
    end: float
    text: str


def make_two_voice_wav(
    path: Path, *, min_speech_seconds: float = 16, pause_seconds: float = 2.0
) -> list[Turn]:
    """Write a 16 kHz mono wav where voice A and voice B alternate (A B A B ...) with
    `pause_seconds` of silence between turns (and half of that at both ends) until at
    least `min_speech_seconds` of speech. Returns the turns with their times."""
    if pause_seconds < 2.0:
        raise ValueError("pauses shorter than 2 s let the VAD merge turns")
    path = Path(path)
    turns: list[Turn] = []
    with tempfile.TemporaryDirectory(prefix="spkd-audio-") as tmp:
        tmpdir = Path(tmp)
        edge = make_silence_wav(tmpdir / "edge.wav", pause_seconds / 2)
        gap = make_silence_wav(tmpdir / "gap.wav", pause_seconds)
        parts: list[Path] = [edge]
        clock = pause_seconds / 2
        speech = 0.0
        i = 0
        while speech < min_speech_seconds or len(turns) < 4:
            speaker = "AB"[i % 2]
            text = LINES[i % len(LINES)]
            utt = tmpdir / f"utt{i:02d}.wav"
            speak(text, VOICE_A if speaker == "A" else VOICE_B, utt)
            seconds = duration_seconds(utt)
            if parts[-1] is not edge:
                parts.append(gap)
                clock += pause_seconds
            parts.append(utt)
            turns.append(Turn(speaker, round(clock, 3), round(clock + seconds, 3), text))
            clock += seconds
            speech += seconds
            i += 1
        parts.append(edge)
        run_tool(["sox", *map(str, parts), str(path)])
    return turns


# Speakers of the long, varied recordings: (espeak-ng voice, pitch, words per minute).
VARIED_VOICES = (
    ("en-us+m3", 30, 160), ("en-gb+f4", 80, 150), ("en-us+m7", 45, 175), ("en-gb+f2", 65, 140),
    ("en-us+klatt", 50, 150), ("en-gb-x-rp+m1", 25, 130), ("en-us+f5", 90, 185), ("en+Andy", 40, 165),
)


def make_varied_wav(path: Path, seconds: float, *, seed: int = 0, voices: int = 6,
                    cache_dir: Path | None = None) -> Path:
    """`seconds` of `voices` speakers taking turns in a shuffled order, each turn one or two
    sentences at one of two speaking rates, with pauses of 0.3-3.5 s (so the VAD both cuts
    and merges turns), over faint pink noise: long, varied input for the identity checks,
    where a float moved across a threshold would show. 16 kHz mono; the format follows
    the suffix (.wav, .flac, .ogg). Same seed, same recording. `cache_dir` keeps the
    synthesised utterances for the next call."""
    import random

    path = Path(path)
    rng = random.Random(seed)
    cast = VARIED_VOICES[:max(1, voices)]
    with tempfile.TemporaryDirectory(prefix="spkd-audio-") as tmp:
        tmpdir = Path(tmp)
        cache = Path(cache_dir) if cache_dir is not None else tmpdir
        cache.mkdir(parents=True, exist_ok=True)
        parts: list[Path] = []
        total, speaker, n = 0.0, -1, 0
        while total < seconds:
            speaker = rng.choice([i for i in range(len(cast)) if i != speaker or len(cast) == 1])
            name, pitch, wpm = cast[speaker]
            for _ in range(rng.choice((1, 1, 2))):
                line = rng.randrange(len(LINES))
                rate = wpm if rng.random() < 0.5 else int(wpm * 1.25)
                utt = cache / f"{name}-{pitch}-{rate}-{line}.wav"
                if not utt.exists():
                    speak(LINES[line], (name, pitch, rate), utt)
                pause = make_silence_wav(tmpdir / f"gap{n}.wav", round(rng.uniform(0.3, 3.5), 2))
                n += 1
                parts += [pause, utt]
                total += duration_seconds(pause) + duration_seconds(utt)
        # sox opens every input at once: join in groups to stay under the open-file limit
        joined = []
        for i in range(0, len(parts), 200):
            out = tmpdir / f"group{i}.wav"
            run_tool(["sox", *map(str, parts[i:i + 200]), str(out)])
            joined.append(out)
        speech = tmpdir / "speech.wav"
        run_tool(["sox", *map(str, joined), str(speech), "trim", "0", f"{seconds:g}"])
        noise = tmpdir / "noise.wav"
        run_tool(["sox", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(noise), "synth", f"{seconds:g}",
              "pinknoise", "vol", "0.004"])
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial" + path.suffix)
        run_tool(["sox", "-m", str(speech), str(noise), "-r", str(SAMPLE_RATE), "-c", "1", *(
            ["-b", "16"] if path.suffix.lower() in (".wav", ".flac") else []), str(partial)])
        partial.replace(path)
    return path


def make_image_file(path: Path) -> Path:
    """A small PNG: a real media file without any audio stream."""
    run_tool(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=16x16",
          "-frames:v", "1", str(path)])
    return Path(path)


def _ffmpeg(src: Path, dst: Path, *codec: str) -> Path:
    run_tool(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *codec, str(dst)])
    return Path(dst)


def to_m4a(wav: Path, m4a: Path, *, lossless: bool = False) -> Path:
    """AAC in an MP4 container, as phones record; `lossless=True` uses ALAC, which
    decodes to exactly the wav's samples (same container path, no codec noise)."""
    codec = ("-c:a", "alac") if lossless else ("-c:a", "aac", "-b:a", "96k")
    return _ffmpeg(Path(wav), Path(m4a), *codec)


def to_mp3(wav: Path, mp3: Path) -> Path:
    return _ffmpeg(Path(wav), Path(mp3), "-c:a", "libmp3lame", "-b:a", "96k")
