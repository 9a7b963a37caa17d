"""A fast fake engine for queue and supervisor tests (never used by the product).

Its behaviour is chosen by the audio file's name, so a test can drop a file
that crashes, hangs or fails its worker:

* `*crashonce*` - the worker SIGKILLs itself on the first attempt only
* `*crash*`     - the worker SIGKILLs itself on every attempt
* `*hang*`      - the worker stops heartbeating (a frozen process) on the first attempt
* `*boom*`      - a transient error (RuntimeError)
* `*bad*`       - a permanent error (AudioError)
* `*oom*`       - out of memory on any device but the CPU
* `*slow*`      - takes SPKD_FAKE_SLOW_SECONDS (default 3 s)
* `*deaf*`      - takes SPKD_FAKE_SLOW_SECONDS without a progress report on the way (like one long
                  call into FunASR: a cancel cannot interrupt it)
* `*zh*`        - sentences in Chinese mixed with English (and full-width letters)

`embed_voice` (an enrolment) follows the same names (crash, slow, bad) and gives an
8-dimensional embedding drawn from the file's content, with the audio's length (its
size at 16 kHz, 16 bits) as its speech.

Like the real engine, it tells a `progress` callback its stages: decoding, vad, asr
(its fraction rising while it "recognises"), punctuation, speakers.

`SPKD_FAKE_BOOT_FAIL` = comma-separated device kinds ("cuda,cpu") or "all" makes
boots on those devices fail, `SPKD_FAKE_BOOT_FAIL_SLOTS` = slot numbers likewise; `SPKD_FAKE_SECONDS` is each job's duration.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.errors import AudioError, OutOfMemoryError
from daemon.progress import ProgressCallback
from daemon.transcript import EngineInfo, Segment, Timing, Transcript, VoicePrint


def _marker(path: Path, what: str) -> bool:
    """True the first time it is asked for this file's content and `what`."""
    state = Path(os.environ.get("SPKD_FAKE_STATE_DIR", "/tmp"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    marker = state / f"{what}-{digest}"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _crash_if_asked(path: Path) -> None:
    """`*crashonce*`: SIGKILL this worker on the first attempt; `*crash*`: on every one."""
    name = path.name.lower()
    if "crashonce" in name:
        if _marker(path, "crash"):
            os.kill(os.getpid(), signal.SIGKILL)
    elif "crash" in name:
        os.kill(os.getpid(), signal.SIGKILL)


class FakeEngine:
    def __init__(self, device: str) -> None:
        self.device = device
        self.batch_size_s = 300
        self.seconds = float(os.environ.get("SPKD_FAKE_SECONDS", "0.1"))

    def transcribe(self, audio_path: Path, *, speakers: int | None = None, hotwords: Any = (),
                   source_name: str | None = None, progress: ProgressCallback | None = None,
                   channels: Any = "mix") -> Transcript:
        started = time.monotonic()
        report = progress or (lambda stage, fraction: None)
        report("decoding", None)
        name = audio_path.name.lower()
        _crash_if_asked(audio_path)
        if "hang" in name and _marker(audio_path, "hang"):
            os.kill(os.getpid(), signal.SIGSTOP)  # frozen: no more heartbeats
        if "oom" in name and not self.device.startswith("cpu"):
            raise OutOfMemoryError("CUDA out of memory (fake)")
        if "boom" in name:
            raise RuntimeError("boom: a transient failure")
        if "bad" in name:
            raise AudioError("cannot decode: fake bad audio")
        report("vad", None)
        if "deaf" in name:
            time.sleep(float(os.environ.get("SPKD_FAKE_SLOW_SECONDS", "3")))
        busy = float(os.environ.get("SPKD_FAKE_SLOW_SECONDS", "3")) if "slow" in name else self.seconds
        steps = 10
        for step in range(steps):
            report("asr", step / steps)
            time.sleep(busy / steps)
        report("punctuation", None)
        report("speakers", None)
        size = audio_path.stat().st_size
        audio_seconds = max(1.0, size / 32000.0)
        n = 1 + size % 3
        step = audio_seconds / (2 * n)
        segments = tuple(Segment(start=round(2 * i * step, 3), end=round((2 * i + 1) * step, 3),
                                 speaker=1 + i % 2, text=_sentence(i, audio_path.name, speakers, hotwords, channels))
                         for i in range(n))
        # one centroid per speaker, as a clustering gives (no speaker model is named, so
        # the voice library never compares them: matching is tested with the real one)
        centroids = {k: tuple(1.0 if i == k else 0.0 for i in range(4)) for k in {seg.speaker for seg in segments}}
        return Transcript(segments=segments, audio_seconds=audio_seconds, speaker_centroids=centroids,
                          engine=EngineInfo(funasr_version="fake", device=self.device),
                          timing=Timing(load_seconds=0.0, transcribe_seconds=time.monotonic() - started))

    def embed_voice(self, audio_path: Path, *, source_name: str | None = None) -> VoicePrint:
        name = audio_path.name.lower()
        _crash_if_asked(audio_path)
        if "bad" in name:
            raise AudioError("cannot decode: fake bad audio")
        time.sleep(float(os.environ.get("SPKD_FAKE_SLOW_SECONDS", "3")) if "slow" in name else self.seconds)
        digest = hashlib.sha256(audio_path.read_bytes()).digest()
        seconds = round(audio_path.stat().st_size / 32000.0, 3)
        return VoicePrint(embedding=tuple((b - 127.5) / 127.5 for b in digest[:8]), speech_seconds=seconds,
                          audio_seconds=seconds, model_name="fake")

    def release(self) -> None:
        pass


def _sentence(i: int, name: str, speakers: int | None, hotwords: Any, channels: Any) -> str:
    if "zh" in name.lower():
        return f"第{i + 1}句：我们讨论一下{name}的预算，ＫＰＩ要重新定。"
    return f"sentence {i + 1} of {name} speakers={speakers} hotwords={','.join(hotwords)} channels={channels}"


def make(config: Config, device: str) -> FakeEngine:
    # What a real engine's torch would be shown: tests read it to check the slot's card.
    state = Path(os.environ.get("SPKD_FAKE_STATE_DIR", "/tmp"))
    state.mkdir(parents=True, exist_ok=True)
    (state / f"visible-slot-{os.environ.get('SPKD_WORKER_SLOT', '?')}").write_text(
        os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    fail = os.environ.get("SPKD_FAKE_BOOT_FAIL", "")
    kinds = {k.strip() for k in fail.split(",") if k.strip()}
    if "all" in kinds or device.partition(":")[0] in kinds:
        raise RuntimeError(f"fake boot failure on {device}")
    slots = {s.strip() for s in os.environ.get("SPKD_FAKE_BOOT_FAIL_SLOTS", "").split(",") if s.strip()}
    if os.environ.get("SPKD_WORKER_SLOT") in slots:
        raise RuntimeError(f"fake boot failure of slot {os.environ['SPKD_WORKER_SLOT']}")
    return FakeEngine(device)
