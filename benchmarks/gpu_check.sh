#!/usr/bin/env bash
# The GPU check as a session lent a GPU runs it: one device call of about 9 minutes (benchmarks/README.md).
#   1. Here, once, from the repository root: bash ../shared/tools/gpu-wheels.sh   (fills .whl/, git-ignored)
#   2. The device tool's `run` with carry [".whl"], timeout_s 560 and the command: bash benchmarks/gpu_check.sh
# It installs the carried wheels (the GPU image lacks datasets, faiss, soundfile, soxr), runs
# `python -m benchmarks.gpu_check --size full --device cuda` under a 480 s timeout (its own budget stops starting
# sections after 420 s), and writes gpu_check-cuda-full.json, gpu_check-cuda-full.md and gpu_check.log into $OUT
# (benchmarks/results where $OUT is unset). Extra arguments go to the check, e.g. `--sections search stage2`.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 python3 -m benchmarks.gpu_check --size full --device cuda --output-dir "$out" "$@" 2>&1 \
  | tee "$out/gpu_check.log"
exit "${PIPESTATUS[0]}"
