"""A stand-in for `ffmpeg` on benchmark machines that have none (the GPU machine).

Benchmarks only: it understands exactly the command line of `daemon.engine.decode_audio`
(`ffmpeg ... -i IN ... -ac 1 -ar 16000 -f f32le ... OUT`) and decodes with soundfile
(libsndfile: WAV, FLAC, Ogg Vorbis/Opus, MP3), mixing to mono. Inputs must already be
16 kHz, as the benchmark audio is: it refuses to resample rather than do it differently
from ffmpeg. bench/gpu_setup.sh puts it on PATH as `ffmpeg`:

    printf '#!/bin/sh\\nexec python3 /path/to/bench/ffmpeg_standin.py "$@"\\n' > /tmp/bin/ffmpeg
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if "-i" not in argv or len(argv) < 3:
        print("ffmpeg stand-in: needs -i INPUT ... OUTPUT", file=sys.stderr)
        return 2
    source, target = argv[argv.index("-i") + 1], argv[-1]
    rate = int(argv[argv.index("-ar") + 1]) if "-ar" in argv else 16000
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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
