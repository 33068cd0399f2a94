#!/usr/bin/env bash
# Compile-only check of the CUDA sources (no GPU needed, nothing runs): every csrc/*.cu must compile
# with nvcc for sm_90. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}"
if [ ! -x "$NVCC" ]; then
  echo "nvcc_check: nvcc not found (set NVCC or CUDA_HOME)" >&2
  exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
shopt -s nullglob
sources=(csrc/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
  echo "nvcc_check: no .cu sources in csrc/" >&2
  exit 1
fi
for src in "${sources[@]}"; do
  echo "nvcc_check: $src (sm_90)"
  "$NVCC" -c "$src" -o "$out/$(basename "$src").o" -std=c++17 -O3 -Icsrc \
    -gencode arch=compute_90,code=sm_90 -Xcompiler -fPIC -Werror all-warnings
done
echo "nvcc_check: ok (${#sources[@]} file(s))"
