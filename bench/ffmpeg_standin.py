"""A stand-in for `ffmpeg` on benchmark machines that have none (the GPU machine).

Benchmarks only: it understands exactly the command line of `daemon.engine.decode.decode_audio`
(`ffmpeg ... -i IN ... -ac 1 -ar 16000 -f f32le ... OUT`) and decodes with libsndfile
(WAV, FLAC, Ogg Vorbis/Opus, MP3), mixing to mono. Inputs must already be 16 kHz, as the
benchmark audio is: it refuses to resample rather than do it differently from ffmpeg.
For FLAC and WAV the samples it writes are ffmpeg's, byte for byte (libsndfile scales
integers by 1/32768 as ffmpeg does; checked on the benchmark audio); for Ogg Vorbis
libvorbis and ffmpeg's own decoder differ in the last bits (both pipelines of
`bench.stages` get the same decoded samples, so this moves no comparison).
bench/gpu_setup.sh puts it on PATH as `ffmpeg`:

    printf '#!/bin/sh\\nexec python3 -S /path/to/bench/ffmpeg_standin.py "$@"\\n' > /tmp/bin/ffmpeg

Its own cost must stay near ffmpeg's, since every job of `bench.workers` decodes through
it: a mono file is decoded by calling the libsndfile that the soundfile wheel carries
through ctypes, with no numpy and no site packages imported (`python3 -S`). Importing
numpy and soundfile instead cost ~0.4 s a call on the GPU machine (2026-12-02, 16 cores;
ffmpeg itself took 0.13 s a call for the same 50-s FLAC on this repository's slower 2-core
VM, this stand-in 0.05 s there), half of every 50-s job's time in `bench.workers` there.
Several channels are mixed with numpy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

SFM_READ = 0x10


class _SfInfo(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


def _libsndfile() -> ctypes.CDLL | None:
    """The libsndfile bundled in the soundfile wheel (found on sys.path without importing
    anything), else the system's."""
    for entry in sys.path:
        for path in sorted(glob.glob(os.path.join(entry or ".", "_soundfile_data", "libsndfile*.so"))):
            return ctypes.CDLL(path)
    name = ctypes.util.find_library("sndfile")
    return ctypes.CDLL(name) if name else None


def _decode_mono_ctypes(source: str, target: str, rate: int) -> int | None:
    """Decode a mono file straight into OUT (float32 little-endian); None: not handled here."""
    lib = _libsndfile()
    if lib is None or sys.byteorder != "little":
        return None
    lib.sf_open.restype = ctypes.c_void_p
    lib.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_SfInfo)]
    lib.sf_readf_float.restype = ctypes.c_int64
    lib.sf_readf_float.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.sf_close.argtypes = [ctypes.c_void_p]
    lib.sf_strerror.restype = ctypes.c_char_p
    lib.sf_strerror.argtypes = [ctypes.c_void_p]
    info = _SfInfo()
    handle = lib.sf_open(os.fsencode(source), SFM_READ, ctypes.byref(info))
    if not handle:
        reason = lib.sf_strerror(None).decode("utf-8", "replace")
        print(f"{source}: Invalid data found when processing input ({reason})", file=sys.stderr)
        return 1
    try:
        if info.channels != 1 or info.frames < 0:
            return None
        if info.samplerate != rate:
            print(f"{source}: stand-in cannot resample {info.samplerate} Hz to {rate} Hz", file=sys.stderr)
            return 1
        buffer = (ctypes.c_float * max(1, info.frames))()
        got = lib.sf_readf_float(handle, buffer, info.frames)
    finally:
        lib.sf_close(handle)
    with open(target, "wb") as out:
        out.write(memoryview(buffer).cast("B")[: 4 * got])
    return 0


def _decode_numpy(source: str, target: str, rate: int) -> int:
    import site

    site.main()  # started with -S: numpy and soundfile live in the site packages
    import numpy as np
    import soundfile as sf

    try:
        data, source_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - report like ffmpeg: one line, non-zero exit
        print(f"{source}: Invalid data found when processing input ({exc})", file=sys.stderr)
        return 1
    if source_rate != rate:
        print(f"{source}: stand-in cannot resample {source_rate} Hz to {rate} Hz", file=sys.stderr)
        return 1
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    np.ascontiguousarray(mono, dtype="<f4").tofile(target)
    return 0


def main(argv: list[str]) -> int:
    if "-i" not in argv or len(argv) < 3:
        print("ffmpeg stand-in: needs -i INPUT ... OUTPUT", file=sys.stderr)
        return 2
    source, target = argv[argv.index("-i") + 1], argv[-1]
    rate = int(argv[argv.index("-ar") + 1]) if "-ar" in argv else 16000
    done = _decode_mono_ctypes(source, target, rate)
    return done if done is not None else _decode_numpy(source, target, rate)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
