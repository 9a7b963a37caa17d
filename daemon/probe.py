"""ffprobe a file before it is queued: its duration (for job timeouts and the
queue's bookkeeping) and whether it has an audio stream at all, so that a
photo or a text file fails at once instead of occupying a worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import AudioError

PROBE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Probe:
    duration_seconds: float | None
    audio_streams: int
    format_name: str | None
    channels: int | None = None  # of the first audio stream (the one the engine decodes)


def ffprobe_available() -> bool:
    return shutil.which("ffprobe") is not None


def _probe_pcm_wav(path: Path) -> Probe | None:
    """Plain PCM WAV, read from its header in microseconds instead of an ffprobe process
    (tens of milliseconds, which dominates a burst of recorder files). None for
    anything else, which ffprobe then judges."""
    if path.suffix.lower() != ".wav":
        return None
    try:
        with wave.open(str(path), "rb") as handle:
            frames, rate = handle.getnframes(), handle.getframerate()
            frame_bytes = handle.getsampwidth() * handle.getnchannels()
            channels = handle.getnchannels()
    except (wave.Error, EOFError, OSError):
        return None
    if rate <= 0 or frame_bytes <= 0:
        return None
    # A header that promises more frames than the file holds is a truncated file: ask ffprobe.
    if frames * frame_bytes > path.stat().st_size:
        return None
    return Probe(duration_seconds=frames / rate, audio_streams=1, format_name="wav", channels=channels)


def probe(path: Path) -> Probe:
    """Raise AudioError (kind `not_audio`) when the file has no decodable audio stream."""
    fast = _probe_pcm_wav(path)
    if fast is not None:
        return fast
    if not ffprobe_available():
        raise FileNotFoundError("ffprobe is not installed (install ffmpeg)")
    try:
        result = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        raise AudioError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS:.0f} s", kind="not_audio") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1].replace(f"{path}: ", "")
        raise AudioError(f"not a readable audio or video file: {reason}", kind="not_audio")
    try:
        info = json.loads(result.stdout or "{}")
    except ValueError:
        raise AudioError("ffprobe gave unreadable output", kind="not_audio") from None
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise AudioError("the file has no audio stream", kind="not_audio")
    fmt = info.get("format", {})
    duration = _float(fmt.get("duration")) or max((_float(s.get("duration")) or 0.0 for s in streams), default=0.0)
    channels = streams[0].get("channels")
    return Probe(duration_seconds=duration or None, audio_streams=len(streams), format_name=fmt.get("format_name"),
                 channels=channels if isinstance(channels, int) and channels > 0 else None)


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
