"""Audio in: any container ffmpeg reads, decoded to 16 kHz float32 samples, and the
measure behind `channels: "auto"` (is each party on its own channel?).

Decoding ourselves, rather than letting FunASR pick a loader by extension, makes wav,
m4a, mp3, ... behave identically and tells the engine the duration up front. Nothing
here imports torch or funasr; numpy is imported inside the functions, so that
importing this module stays cheap for the supervisor and the CLI.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.errors import AudioError, FfmpegMissingError, NotAudioError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["AUTO_LEVEL_DIFFERENCE_DB", "AUTO_SPLIT_SHARE", "FFMPEG_TIMEOUT_SECONDS", "SAMPLE_RATE",
           "channel_separation", "decode_audio", "ffmpeg_missing"]

SAMPLE_RATE = 16000
# Generous: ffmpeg decodes hours of audio in seconds; a hang means a broken input or pipe.
FFMPEG_TIMEOUT_SECONDS = 600


def decode_audio(path: Path, *, timeout: float = FFMPEG_TIMEOUT_SECONDS, keep_channels: bool = False) -> "np.ndarray":
    """Decode any container ffmpeg understands into 16 kHz mono float32 samples
    (`keep_channels`: every channel, `[channels, samples]`, in the same single pass).

    Decoding ourselves (rather than letting FunASR pick a loader by extension) makes
    wav, m4a, mp3, ... behave identically and tells us the duration up front.
    Raises NotAudioError when the file has no audio stream, AudioError when ffmpeg
    cannot read it or it decodes to nothing."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    # ffmpeg writes raw samples to a temporary file rather than a pipe: reading a pipe
    # into bytes and then into a writable array would hold two copies (460 MB an hour).
    with tempfile.TemporaryDirectory(prefix="spkd-decode-") as tmp:
        raw = Path(tmp) / ("audio.wav" if keep_channels else "audio.f32")
        # several channels go into a WAV, whose header says how many
        layout = ["-f", "wav"] if keep_channels else ["-ac", "1", "-f", "f32le"]
        cmd = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-i", str(path),
            "-map", "0:a:0",  # the first audio stream; fails clearly when there is none
            "-vn", "-sn", "-dn",
            "-ar", str(SAMPLE_RATE), *layout, "-acodec", "pcm_f32le",
            str(raw),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise ffmpeg_missing() from exc
        except subprocess.TimeoutExpired as exc:
            raise AudioError(f"{path.name}: ffmpeg did not finish decoding within {timeout:.0f} s") from exc
        reason = _ffmpeg_reason(proc.stderr)
        if proc.returncode != 0:
            if "matches no streams" in reason or "does not contain any stream" in reason:
                raise NotAudioError(f"{path.name}: no audio stream ({reason})")
            raise AudioError(f"{path.name}: cannot decode audio: {reason or f'ffmpeg exit {proc.returncode}'}")
        if keep_channels:
            samples = _read_float_wav(raw) if raw.exists() else np.zeros((1, 0), dtype=np.float32)
        else:
            samples = np.fromfile(raw, dtype=np.float32) if raw.exists() else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise AudioError(f"{path.name}: decodes to no audio samples{': ' + reason if reason else ''}")
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return samples


def _read_float_wav(path: Path) -> "np.ndarray":
    """`[channels, samples]` from the float32 WAV ffmpeg wrote (RIFF chunks: `fmt ` for
    the channel count, `data` for the interleaved samples)."""
    import struct

    import numpy as np

    channels, offset, size = 0, None, 0
    with open(path, "rb") as handle:
        if handle.read(12)[8:12] != b"WAVE":
            raise AudioError(f"{path.name}: ffmpeg wrote no WAV")
        while offset is None:
            head = handle.read(8)
            if len(head) < 8:
                break
            chunk, length = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk == b"fmt ":
                channels = struct.unpack("<H", handle.read(length)[2:4])[0]
            elif chunk == b"data":
                offset, size = handle.tell(), length
            else:
                handle.seek(length + (length & 1), 1)
    if offset is None or channels < 1:
        raise AudioError(f"{path.name}: ffmpeg wrote an unreadable WAV")
    size = min(size, path.stat().st_size - offset) // (4 * channels) * channels
    data = np.fromfile(path, dtype="<f4", count=size, offset=offset)
    return data.reshape(-1, channels).T.copy()


def ffmpeg_missing() -> FfmpegMissingError:
    return FfmpegMissingError("ffmpeg not found on PATH (it decodes every input): install it "
                              "(apt-get install ffmpeg, brew install ffmpeg)")


def _ffmpeg_reason(stderr: bytes) -> str:
    """ffmpeg's complaint in one line: the last non-empty lines, de-duplicated."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    seen: list[str] = []
    for line in lines[-3:]:
        if line not in seen:
            seen.append(line)
    return " | ".join(seen)[:500]


# `channels: "auto"` splits a recording when, in most frames where anyone speaks, one
# channel is far louder than every other: each party on its own channel (a call
# recorder, one microphone per person). A dual-mono file (0 dB apart) or a stereo
# microphone that hears everyone (a few dB) is mixed. Measured on generated cases in
# tests/integration/test_channels.py (README: "Stereo calls").
AUTO_FRAME_SECONDS = 0.03
AUTO_LEVEL_DIFFERENCE_DB = 10.0
AUTO_SPLIT_SHARE = 0.5  # of the active frames
AUTO_ACTIVE_BELOW_PEAK_DB = 40.0  # frames this far below the loudest are not speech
AUTO_ACTIVE_FLOOR_DBFS = -60.0


def channel_separation(channels: "np.ndarray") -> float:
    """The share of active 30-ms frames in which the loudest channel is at least
    AUTO_LEVEL_DIFFERENCE_DB above the next loudest (0.0 for a single channel or silence)."""
    import numpy as np

    count, n = channels.shape
    frame = int(AUTO_FRAME_SECONDS * SAMPLE_RATE)
    frames = n // frame
    if count < 2 or frames == 0:
        return 0.0
    energy = np.square(channels[:, : frames * frame].reshape(count, frames, frame), dtype=np.float64).mean(axis=2)
    ordered = np.sort(energy, axis=0)
    loudest, second = ordered[-1], ordered[-2]
    floor = max(10 ** (AUTO_ACTIVE_FLOOR_DBFS / 10), loudest.max() * 10 ** (-AUTO_ACTIVE_BELOW_PEAK_DB / 10))
    active = loudest > floor
    if not active.any():
        return 0.0
    apart = 10 * np.log10(loudest[active] / np.maximum(second[active], 1e-12)) >= AUTO_LEVEL_DIFFERENCE_DB
    return float(apart.mean())
