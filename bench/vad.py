"""FSMN-VAD's frame loop: FunASR's against spkd's (daemon/engine/vad_loop.py), in one run.

    python -m bench.vad --models DIR --audio FILE [--seconds 300] [--repeat 3] [--device cpu]

Loads the VAD model of DIR once (the tiny model set's is the real FSMN-VAD), decodes FILE
and tiles it to --seconds, then runs FunASR's VAD (`AutoModel.generate`, offline, as the
pipeline calls it) alternately with FunASR's own frame loop and with spkd's hook, best of
--repeat each after a warm-up. Prints the whole VAD call and the frame loop inside it
(`DetectCommonFrames`/`DetectLastFrames`) for both, their ratios, and whether the
segments are identical. Needs no GPU; on a GPU host `--device cuda` times the same
with the encoder there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import loadavg, machine_line


class _LoopClock:
    """Times the calls into the model's frame loop (whichever stands there)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, model: Any) -> None:
        for name in ("DetectCommonFrames", "DetectLastFrames"):
            inner = getattr(model, name)
            object.__setattr__(model, name, self._timed(inner))

    def _timed(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        return timed

    def unwrap(self, model: Any) -> None:
        for name in ("DetectCommonFrames", "DetectLastFrames"):
            vars(model).pop(name, None)


def _tiled(samples: Any, seconds: float) -> Any:
    import numpy as np

    want = int(seconds * 16000)
    if want <= samples.size:
        return samples[:want]
    return np.resize(samples, want)  # the recording repeated end to start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.vad", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models directory (default names inside; default: the tiny set)")
    ap.add_argument("--audio", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=300.0, help="tile the audio to this length (default 300)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from daemon.engine import vad_loop
    from daemon.engine.decode import decode_audio
    from daemon.engine.models import import_funasr, resolve_model_dirs

    if args.models is None:
        from tests.support.models import cached_tiny_models

        args.models = cached_tiny_models()
    dirs = resolve_model_dirs(args.models)
    import_funasr()
    from funasr import AutoModel

    auto = AutoModel(model=str(dirs.vad), device=args.device, disable_update=True, disable_pbar=True,
                     log_level="WARNING")
    model = auto.model
    samples = _tiled(decode_audio(args.audio), args.seconds)
    seconds = samples.size / 16000

    def run(hooked: bool) -> tuple[float, float, list]:
        undo = vad_loop.hook(model) if hooked else None
        clock = _LoopClock()
        clock.wrap(model)
        try:
            began = time.perf_counter()
            result = auto.generate(input=samples)
            wall = time.perf_counter() - began
        finally:
            clock.unwrap(model)
            if undo is not None:
                undo()
        return wall, clock.seconds, result[0]["value"]

    best: dict[str, tuple[float, float]] = {}
    segments: dict[str, list] = {}
    run(False), run(True)  # warm-up
    for _ in range(max(1, args.repeat)):
        for label, hooked in (("FunASR", False), ("spkd", True)):
            wall, loop, segments[label] = run(hooked)
            if label not in best or wall < best[label][0]:
                best[label] = (wall, loop)
    same = segments["FunASR"] == segments["spkd"]
    print(machine_line())
    print(f"audio {args.audio.name} tiled to {seconds:.0f} s ({int(seconds * 100):,} frames); device {args.device}; "
          f"best of {args.repeat} after a warm-up; load {loadavg()}")
    print(f"{'frame loop':<12} {'VAD call':>9} {'loop':>8} {'loop µs/frame':>14}")
    for label, (wall, loop) in best.items():
        print(f"{label:<12} {wall:9.3f} {loop:8.3f} {loop / (seconds * 100) * 1e6:14.2f}")
    (fw, fl), (sw, sl) = best["FunASR"], best["spkd"]
    print(f"spkd/FunASR: VAD call {sw / fw:.3f}x, frame loop {sl / fl:.3f}x ({fl / sl:.0f} times faster); "
          f"{len(segments['spkd'])} segments, identical: {same}")
    if args.json:
        args.json.write_text(json.dumps({"audio_seconds": seconds, "device": args.device, "identical": same,
                                         "segments": len(segments["spkd"]),
                                         "funasr": {"wall": fw, "loop": fl}, "spkd": {"wall": sw, "loop": sl}},
                                        indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
