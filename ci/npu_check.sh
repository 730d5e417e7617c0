#!/usr/bin/env bash
# Checks npu_syncbn on an Ascend machine (CANN toolkit + torch-npu + NPUs):
#   1. builds the AscendC kernels with CMake (ascendc_library) into npu_syncbn/_lib,
#   2. installs the package with the npu and test extras,
#   3. compares every op, every implementation (cpu, twin, npu) with the float64
#      reference (npu-syncbn-accuracy, exits 1 on any failure),
#   4. runs the test suite, multi-rank tests over HCCL.
# Usage: ci/npu_check.sh [extra pytest args]. Needs ASCEND_HOME_PATH (source
# CANN's set_env.sh first). Exits non-zero on the first failing step.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python}
BUILD=${BUILD_DIR:-$ROOT/op_kernels/build_npu}
OUT=${ROOT}/ci_out
mkdir -p "$OUT"

if [[ -z "${ASCEND_HOME_PATH:-}" && -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]]; then
    # shellcheck disable=SC1091
    source /usr/local/Ascend/ascend-toolkit/set_env.sh
fi
: "${ASCEND_HOME_PATH:?ASCEND_HOME_PATH is not set: source set_env.sh of the CANN toolkit}"

echo "== install (npu, test extras; torch stays as installed)"
"$PYTHON" -m pip install --no-build-isolation -e ".[npu,test]"

echo "== build kernels (SOC_VERSION=${SOC_VERSION:-Ascend910B2})"
cmake -S op_kernels -B "$BUILD" -DSOC_VERSION="${SOC_VERSION:-Ascend910B2}" -DPython3_EXECUTABLE="$(command -v "$PYTHON")"
cmake --build "$BUILD" -j"$(nproc)"
cmake --install "$BUILD"
test -f npu_syncbn/_lib/libnpu_syncbn_npu.so || { echo "libnpu_syncbn_npu.so was not built"; exit 1; }
export NPU_SYNCBN_KERNELS="$ROOT/npu_syncbn/_lib/libnpu_syncbn_npu.so"

echo "== device"
"$PYTHON" - <<'PY'
import torch, torch_npu  # noqa: F401
assert torch.npu.is_available(), "no NPU visible"
print("NPUs:", torch.npu.device_count(), torch.npu.get_device_name(0))
PY

echo "== accuracy (cpu, twin, npu vs float64 reference)"
"$PYTHON" -m npu_syncbn.accuracy --impl cpu,twin,npu --json "$OUT/accuracy.json"

echo "== tests (multi-rank over HCCL)"
NPU_SYNCBN_BACKEND=hccl "$PYTHON" -m pytest tests/ -q "$@"

echo "== all NPU checks passed; results in $OUT"
