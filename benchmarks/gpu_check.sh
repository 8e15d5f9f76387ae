#!/usr/bin/env bash
# One-shot GPU check of the fused branch, for a machine with a CUDA GPU, nvcc and CMake:
# builds liblayover_kernels.so, runs the GPU-relevant tests (the conformance suite: Triton and CUDA
# C++ against the reference on every case, the paper's shapes included; the custom op under CUDA
# graphs; the Triton grid and the ctypes mirror), then benchmarks/kernel.py, then the LP/RM/FT
# latency benchmark (benchmarks/latency.py: the paper's BiT-R50x3 @448 and Swin-B @384, random
# weights, no download, batch 1 and 16, PyTorch eager and CUDA graphs in fp16, RM through the fused
# Triton op). Everything lands in $OUT. Written for the lent GPU machines; not yet run on one.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # PYTHON=... to pick the interpreter
#   QUICK=1 ...                                        # batch 1 and 8 only, no torch.compile
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to a folder for the results}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"  # python3: on the lent GPU machines, the interpreter that has torch
BUILD="${BUILD:-/tmp/layover-kernels-build}"
mkdir -p "$OUT"
# kernels/ and export/ import as layover_edge.kernels/.export only once installed (pyproject's
# package-dir): an editable install without dependencies or network, unless one is there already.
if ! "$PYTHON" -c "import layover_edge.kernels.reference" > /dev/null 2>&1; then
  PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e . \
    > "$OUT/install.txt" 2>&1 \
    || { echo "could not install layover-edge (see $OUT/install.txt)"; exit 2; }
fi

{ nvidia-smi; nvcc --version; cmake --version | head -1
  "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/environment.txt" 2>&1

cmake -S . -B "$BUILD" -DCMAKE_CUDA_ARCHITECTURES=native > "$OUT/cmake.txt" 2>&1 \
  && cmake --build "$BUILD" -j > "$OUT/build.txt" 2>&1
build_rc=$?
export LAYOVER_KERNELS_LIB="$BUILD/liblayover_kernels.so"

"$PYTHON" -m pytest -q -rs tests/test_fused_mix_conformance.py tests/test_kernel_op.py tests/test_kernel_triton.py \
  tests/test_kernel_cuda.py tests/test_runtime_torch.py \
  --junitxml="$OUT/pytest.xml" > "$OUT/pytest.txt" 2>&1
test_rc=$?

bench_args=(--out "$OUT/kernel-bench")
[ "$build_rc" -eq 0 ] && bench_args+=(--cuda-lib "$LAYOVER_KERNELS_LIB")
[ -n "${QUICK:-}" ] && bench_args+=(--batches 1 8 --no-compile --iters 50)
"$PYTHON" benchmarks/kernel.py "${bench_args[@]}" > "$OUT/benchmark.txt" 2>&1
bench_rc=$?

latency_rc=0
latency_modes=(eager graph); [ -n "${COMPILE:-}" ] && latency_modes+=(compile)  # COMPILE=1: + torch.compile (minutes)
for spec in resnetv2_50x3_bit.goog_in21k:448 swin_base_patch4_window12_384.ms_in22k:384; do
  name="${spec%%:*}"
  "$PYTHON" benchmarks/latency.py --backbone "$name" --image-size "${spec##*:}" --weights none --device cuda \
    --batches 1 16 --formats torch --precisions fp16 --modes "${latency_modes[@]}" --quiet \
    --out "$OUT/latency/${name%%.*}" > "$OUT/latency-${name%%.*}.txt" 2>&1 || latency_rc=1
done

echo "build rc=$build_rc  tests rc=$test_rc  benchmark rc=$bench_rc  latency rc=$latency_rc" | tee "$OUT/summary.txt"
tail -n 3 "$OUT/pytest.txt" | tee -a "$OUT/summary.txt"
[ -f "$OUT/kernel-bench/kernel.md" ] && cat "$OUT/kernel-bench/kernel.md"
cat "$OUT"/latency/*/bench.md 2>/dev/null
exit $(( build_rc || test_rc || bench_rc || latency_rc ))
