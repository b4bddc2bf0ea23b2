#!/usr/bin/env bash
# The ONE device call: every GPU check of the CUDA target in at most 8 minutes (see README.md).
# Usage on the GPU machine, from the repository root: bench/gpu/run_all.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-${OUT:-$here/../results}}"
mkdir -p "$out"
if [ ! -d "$here/bundle" ] && [ -f "$here/bundle.tar.xz" ]; then tar -xJf "$here/bundle.tar.xz" -C "$here"; fi
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader > "$out/gpu_device.txt" || true
timeout 470 python3 "$here/run_gpu.py" --bundle "$here/bundle" --out "$out/cuda_gpu.json" --budget-s 400 \
  2>&1 | tee "$out/cuda_gpu.log"
