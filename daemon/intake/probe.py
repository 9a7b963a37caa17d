"""ffprobe a file before it is queued: its duration (for job timeouts and the
queue's bookkeeping) and whether it has an audio stream at all, so that a
photo or a text file fails at once instead of occupying a worker."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import NotAudioError

__all__ = ["Probe", "ffprobe_available", "incomplete_reason", "probe", "probe_pcm_wav"]

PROBE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Probe:
    duration_seconds: float | None
    audio_streams: int
    format_name: str | None
    channels: int | None = None  # of the first audio stream (the one the engine decodes)


def ffprobe_available() -> bool:
    return shutil.which("ffprobe") is not None


def probe_pcm_wav(path: Path) -> Probe | None:
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
    """Raise NotAudioError when the file has no decodable audio stream."""
    fast = probe_pcm_wav(path)
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
        raise NotAudioError(f"ffprobe took longer than {PROBE_TIMEOUT_SECONDS:.0f} s") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1].replace(f"{path}: ", "")
        raise NotAudioError(f"not a readable audio or video file: {reason}")
    try:
        info = json.loads(result.stdout or "{}")
    except ValueError:
        raise NotAudioError("ffprobe gave unreadable output") from None
    streams = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
    if not streams:
        raise NotAudioError("the file has no audio stream")
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


# How many top-level boxes of an MP4 are looked at before giving up (a real file has a handful).
_MAX_BOXES = 10_000
# The sizes a WAV writer puts into the header until it knows the real ones.
_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)


def incomplete_reason(path: Path) -> str | None:
    """Why the container says the file is not whole yet, or None (whole, or a format
    without such a check). A writer streaming a WAV fills in its RIFF and data sizes only
    when it finishes; an MP4/M4A/MOV gets its `moov` index (without which nothing can be
    decoded) at the end, and each box's size says where the next one starts."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            size = path.stat().st_size
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                return _wav_incomplete(handle, head, size)
            if head[4:8] == b"ftyp":
                return _mp4_incomplete(handle, size)
    except OSError:
        return None
    return None


def _wav_incomplete(handle, head: bytes, size: int) -> str | None:  # type: ignore[no-untyped-def]
    riff_size = struct.unpack("<I", head[4:8])[0]
    if riff_size in _PLACEHOLDER_SIZES:
        return "the WAV header does not give its size yet (still being written)"
    if riff_size + 8 > size:
        return f"the WAV header promises {riff_size + 8} bytes, the file has {size}"
    offset = 12
    while offset + 8 <= size:
        handle.seek(offset)
        chunk = handle.read(8)
        if len(chunk) < 8:
            break
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
        if chunk_id == b"data":
            if chunk_size in _PLACEHOLDER_SIZES and size > offset + 8:
                return "the WAV data size is not filled in yet (still being written)"
            if offset + 8 + chunk_size > size:
                return f"the WAV header promises {chunk_size} bytes of audio, the file has {size - offset - 8}"
            return None
        offset += 8 + chunk_size + (chunk_size & 1)
    return None


def _mp4_incomplete(handle, size: int) -> str | None:  # type: ignore[no-untyped-def]
    offset, moov = 0, False
    for _ in range(_MAX_BOXES):
        if offset == size:
            return None if moov else "the MP4 has no moov index (still being written, or cut short)"
        handle.seek(offset)
        header = handle.read(16)
        if len(header) < 8:
            return "the MP4 ends inside a box header"
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if box_size == 1 and len(header) == 16:
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:  # "to the end of the file": only the last box may say so
            return None if moov else "the MP4 has no moov index (still being written, or cut short)"
        if box_size < 8:
            return None  # not a layout we know: let ffprobe judge it
        moov = moov or box_type == b"moov"
        if offset + box_size > size:
            return f"the MP4 box {box_type.decode('latin-1')!r} runs past the end of the file (still being written)"
        offset += box_size
    return None
