"""Synthetic dialogs with ground truth, for attribution tests and the diarization bench.

Voices are espeak-ng variants the tiny CAM++ never heard in training
(`daemon.engine.speaker_training.held_out_voices`); the sentences are not the training
phrases either. Each turn is one espeak-ng utterance cut to a target length, turns are
separated by pauses, and the returned `DialogTurn`s say who speaks when. A stereo call
puts each voice on its own channel, optionally with overlapping turns.

Scoring is by time, not words (the tiny ASR's words are meaningless):
`attribution` maps hypothesis speakers one-to-one onto the true voices so that the most
speech time agrees, and says which share of the true speech time is covered by a
segment of the mapped speaker.
"""

from __future__ import annotations

import itertools
import random
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daemon.engine.speaker_training import SAMPLE_RATE, held_out_voices, is_training_voice, synthesize

# Held-out voices the tests use, chosen to be distinct from each other (male, female,
# low, high); the bench draws from every held-out variant.
TEST_VOICES = ("m3", "f1", "victor", "m7")

# Mandarin lines for dialogs (none of them a training phrase).
DIALOG_LINES = (
    "我们下周一开始新的项目请大家提前准备好材料",
    "这个季度的销售额比去年同期增长了百分之十",
    "麻烦您再说一遍您的电话号码我记一下",
    "会议推迟到下午三点钟地点不变",
    "我刚才看了一下报告里面有几个数字不对",
    "那我们就按照这个时间表来安排工作",
    "如果有问题的话随时给我打电话",
    "仓库里的货物已经全部清点完毕了",
    "你说的这个办法我觉得可以试一试",
    "新来的同事下个月一号正式上班",
    "这条路早上八点左右特别堵车",
    "我们需要在月底之前把文件交上去",
    "今年的年会准备在南方的一个城市举行",
    "你先别着急我们慢慢想办法解决",
    "网站的访问量这两天突然增加了很多",
    "楼下新开了一家咖啡店味道还不错",
)


@dataclass(frozen=True)
class DialogTurn:
    speaker: str  # the voice (espeak-ng variant)
    start: float  # seconds
    end: float
    channel: int = 0  # 0 for mono; the channel the voice is on in a stereo call

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Dialog:
    path: Path
    turns: tuple[DialogTurn, ...]
    voices: tuple[str, ...]
    channels: int

    @property
    def speech_seconds(self) -> float:
        return sum(t.seconds for t in self.turns)

    def share(self, voice: str) -> float:
        return sum(t.seconds for t in self.turns if t.speaker == voice) / self.speech_seconds


def check_held_out(voices: Sequence[str]) -> None:
    trained = [v for v in voices if is_training_voice(v)]
    if trained:
        raise ValueError(f"{trained} are training voices of the tiny CAM++; attribution needs held-out voices")


def _turn_audio(voice: str, seconds: float, rng: random.Random, language: str) -> np.ndarray:
    """About `seconds` of one voice: lines joined until long enough, then cut (with a
    short fade) at the target length."""
    pieces: list[np.ndarray] = []
    total = 0
    target = int(seconds * SAMPLE_RATE)
    while total < target:
        line = rng.choice(DIALOG_LINES)
        audio = synthesize(line, f"{language}+{voice}", words_per_minute=rng.randint(240, 300))
        pieces.append(audio)
        total += audio.size
    out = np.concatenate(pieces)[:target].copy()
    fade = min(out.size, SAMPLE_RATE // 50)
    out[out.size - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def write_wav(path: Path, channels: Sequence[np.ndarray]) -> Path:
    """16-bit PCM at 16 kHz, one array per channel (padded to the longest)."""
    n = max(c.size for c in channels)
    data = np.zeros((n, len(channels)), dtype=np.float32)
    for i, c in enumerate(channels):
        data[: c.size, i] = c
    pcm = (np.clip(data, -1.0, 1.0) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def make_dialog(
    path: Path,
    voices: Sequence[str],
    *,
    seed: int = 0,
    turn_seconds: tuple[float, float] = (3.0, 6.0),
    pause_seconds: float = 2.0,
    min_speech_seconds: float = 30.0,
    dominant_share: float | None = None,
    language: str = "cmn",
) -> Dialog:
    """A mono dialog: turns of `turn_seconds` (uniform), `pause_seconds` apart, until at
    least `min_speech_seconds` of speech; the voices take turns in order (A B A B ...),
    or, with `dominant_share`, the first voice speaks that share of the time."""
    check_held_out(voices)
    rng = random.Random(seed)
    pieces: list[np.ndarray] = [np.zeros(int(SAMPLE_RATE * pause_seconds / 2), dtype=np.float32)]
    clock = pause_seconds / 2
    turns: list[DialogTurn] = []
    talk = {v: 0.0 for v in voices}
    i = 0
    while sum(talk.values()) < min_speech_seconds or len(turns) < 2 * len(voices):
        if dominant_share is None:
            voice = voices[i % len(voices)]
        else:
            # the dominant voice speaks whenever it is below its share (several turns in
            # a row, a pause between them); the others take turns among themselves
            total = sum(talk.values())
            behind = total == 0 or talk[voices[0]] / total < dominant_share
            others = list(voices[1:])
            voice = voices[0] if behind else others[sum(1 for t in turns if t.speaker != voices[0]) % len(others)]
        audio = _turn_audio(voice, rng.uniform(*turn_seconds), rng, language)
        seconds = audio.size / SAMPLE_RATE
        if turns:
            pieces.append(np.zeros(int(SAMPLE_RATE * pause_seconds), dtype=np.float32))
            clock += pause_seconds
        pieces.append(audio)
        turns.append(DialogTurn(voice, round(clock, 3), round(clock + seconds, 3)))
        clock += seconds
        talk[voice] += seconds
        i += 1
    pieces.append(np.zeros(int(SAMPLE_RATE * pause_seconds / 2), dtype=np.float32))
    write_wav(path, [np.concatenate(pieces)])
    return Dialog(Path(path), tuple(turns), tuple(voices), 1)


def make_scripted_dialog(
    path: Path,
    script: Sequence[tuple[str, float]],
    *,
    seed: int = 0,
    pause_seconds: float = 2.0,
    language: str = "cmn",
) -> Dialog:
    """A mono dialog that follows `script`: (voice, seconds) turns in that order,
    `pause_seconds` apart (a short interjection, a meeting plan)."""
    voices = tuple(dict.fromkeys(v for v, _ in script))
    check_held_out(voices)
    rng = random.Random(seed)
    pieces: list[np.ndarray] = [np.zeros(int(SAMPLE_RATE * pause_seconds / 2), dtype=np.float32)]
    clock = pause_seconds / 2
    turns: list[DialogTurn] = []
    for voice, seconds in script:
        audio = _turn_audio(voice, seconds, rng, language)
        if turns:
            pieces.append(np.zeros(int(SAMPLE_RATE * pause_seconds), dtype=np.float32))
            clock += pause_seconds
        pieces.append(audio)
        turns.append(DialogTurn(voice, round(clock, 3), round(clock + audio.size / SAMPLE_RATE, 3)))
        clock += audio.size / SAMPLE_RATE
    pieces.append(np.zeros(int(SAMPLE_RATE * pause_seconds / 2), dtype=np.float32))
    write_wav(path, [np.concatenate(pieces)])
    return Dialog(Path(path), tuple(turns), voices, 1)


def interjection_script(main: str, other: str, *, seed: int = 0) -> list[tuple[str, float]]:
    """`main` speaks eight turns of 4-7 s; `other` says two short sentences (1.4-1.7 s
    each, about 3 s in all) after the second and the fifth."""
    rng = random.Random(seed)
    script: list[tuple[str, float]] = []
    for turn in range(8):
        script.append((main, rng.uniform(4.0, 7.0)))
        if turn in (1, 4):
            script.append((other, rng.uniform(1.4, 1.7)))
    return script


def meeting_script(voices: Sequence[str], minutes: float, *, seed: int = 0,
                   turn_seconds: tuple[float, float] = (4.0, 14.0)) -> list[tuple[str, float]]:
    """Turns of `turn_seconds` by voices drawn at random (never the same twice in a
    row; the first voice talks most, the last least) until `minutes` of speech."""
    rng = random.Random(seed)
    weights = [1.0 + (len(voices) - i) / len(voices) for i in range(len(voices))]
    script: list[tuple[str, float]] = []
    total, last = 0.0, None
    while total < minutes * 60:
        voice = rng.choices([v for v in voices if v != last], [w for v, w in zip(voices, weights) if v != last])[0]
        seconds = rng.uniform(*turn_seconds)
        script.append((voice, seconds))
        total += seconds
        last = voice
    return script


def make_stereo_call(
    path: Path,
    voices: Sequence[str],
    *,
    seed: int = 0,
    turn_seconds: tuple[float, float] = (2.5, 5.0),
    pause_seconds: float = 2.0,
    overlap_seconds: float = 0.0,
    overlaps: int = 0,
    min_speech_seconds: float = 20.0,
    language: str = "cmn",
) -> Dialog:
    """Each voice on its own channel (voice i on channel i), taking turns; the first
    `overlaps` changes of speaker start `overlap_seconds` *before* the previous turn
    ends (both talk at once), the others after `pause_seconds` of silence."""
    check_held_out(voices)
    rng = random.Random(seed)
    tracks = [np.zeros(0, dtype=np.float32) for _ in voices]
    turns: list[DialogTurn] = []
    clock = pause_seconds / 2
    i = 0
    while sum(t.seconds for t in turns) < min_speech_seconds or len(turns) < 2 * len(voices):
        channel = i % len(voices)
        audio = _turn_audio(voices[channel], rng.uniform(*turn_seconds), rng, language)
        if turns:
            clock = turns[-1].end - overlap_seconds if i <= overlaps else turns[-1].end + pause_seconds
        start = int(round(clock * SAMPLE_RATE))
        track = tracks[channel]
        if track.size < start + audio.size:
            track = np.concatenate([track, np.zeros(start + audio.size - track.size, dtype=np.float32)])
        track[start : start + audio.size] += audio
        tracks[channel] = track
        turns.append(DialogTurn(voices[channel], round(start / SAMPLE_RATE, 3),
                                round((start + audio.size) / SAMPLE_RATE, 3), channel))
        i += 1
    end = max(t.size for t in tracks) + int(SAMPLE_RATE * pause_seconds / 2)
    tracks = [np.concatenate([t, np.zeros(end - t.size, dtype=np.float32)]) for t in tracks]
    write_wav(path, tracks)
    return Dialog(Path(path), tuple(turns), tuple(voices), len(voices))


def dual_mono(path: Path, mono: Path, *, channels: int = 2) -> Path:
    """The same samples on every channel (a mono recording stored as stereo)."""
    with wave.open(str(mono), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32767
    return write_wav(path, [frames] * channels)


def overlap_seconds(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def outside_seconds(segments: Sequence[tuple[float, float, str]], turns: Sequence[DialogTurn]) -> float:
    """Transcript time that no true turn covers (a segment's time over silence)."""
    total = 0.0
    for start, end, _ in segments:
        covered = sum(overlap_seconds((start, end), (t.start, t.end)) for t in turns)
        total += max(0.0, (end - start) - covered)
    return total


@dataclass(frozen=True)
class Attribution:
    share: float  # of the true speech time, carried by a segment of the mapped speaker
    speakers: int  # distinct speakers in the hypothesis
    mapping: dict[str, str]  # hypothesis speaker -> true voice

    def __str__(self) -> str:
        return f"{self.share:.1%} of speech time right, {self.speakers} speakers, mapping {self.mapping}"


def attribution(segments: Sequence[tuple[float, float, str]], turns: Sequence[DialogTurn]) -> Attribution:
    """Score (start, end, speaker) segments against the true turns under the best
    one-to-one mapping of hypothesis speakers onto voices."""
    hyp = sorted({s for _, _, s in segments})
    ref = sorted({t.speaker for t in turns})
    agree = {(h, r): 0.0 for h in hyp for r in ref}
    for start, end, speaker in segments:
        for turn in turns:
            agree[speaker, turn.speaker] += overlap_seconds((start, end), (turn.start, turn.end))
    best: dict[str, str] = {}
    best_time = -1.0
    # brute force: a handful of speakers at most
    for perm in itertools.permutations(ref, min(len(ref), len(hyp))):
        for chosen in itertools.combinations(hyp, len(perm)):
            time_ = sum(agree[h, r] for h, r in zip(chosen, perm))
            if time_ > best_time:
                best_time, best = time_, dict(zip(chosen, perm))
    total = sum(t.seconds for t in turns)
    return Attribution(share=max(0.0, best_time) / total if total else 0.0, speakers=len(hyp), mapping=best)


__all__ = [
    "DIALOG_LINES",
    "TEST_VOICES",
    "Attribution",
    "Dialog",
    "DialogTurn",
    "attribution",
    "check_held_out",
    "dual_mono",
    "held_out_voices",
    "interjection_script",
    "make_dialog",
    "make_scripted_dialog",
    "make_stereo_call",
    "meeting_script",
    "outside_seconds",
    "overlap_seconds",
    "write_wav",
]
