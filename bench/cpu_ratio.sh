#!/usr/bin/env bash
# The CPU ratio of spkd against bare FunASR on this machine, in one command:
#   bench/cpu_ratio.sh [SECONDS] [REPEAT]      (default 128 s of two-voice audio, best of 3)
# Builds the real-size random-weight models (bench/.cache/models-real, ~1.3 GB, once) and
# the recording (bench/.cache/audio, once), then runs bench.stages on the CPU with torch's
# default thread count, bare FunASR and spkd's engine side by side in one process, and
# prints the load average before and after: run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
seconds=${1:-128}; repeat=${2:-3}
models=bench/.cache/models-real
audio=bench/.cache/audio/two${seconds}.wav
[ -f "$models/paraformer-zh/model.pt" ] || $PY -c "import sys; from daemon.engine.tiny_models import build_tiny_models; build_tiny_models(sys.argv[1], real_sizes=True)" "$models"
if [ ! -f "$audio" ]; then
  $PY - "$audio" "$seconds" <<'PYEOF'
import subprocess, sys
from pathlib import Path
from bench.corpus import recording
target, seconds = Path(sys.argv[1]), float(sys.argv[2])
long = recording(0, target.with_suffix(".long.wav"), min_speech_seconds=0.75 * seconds + 5)
subprocess.run(["sox", str(long), str(target), "trim", "0", f"{seconds:g}"], check=True)
long.unlink()
PYEOF
fi
echo "before: $(uptime)"; lscpu | grep -m1 "Model name" || true
$PY -m bench.stages --models "$models" --audio "$audio" --device cpu --repeat "$repeat" 2>&1 \
  | grep -v "\[INFO\]\|\[WARNING\]\|DEBUG\|INFO\|funasr version"
echo "after: $(uptime)"
