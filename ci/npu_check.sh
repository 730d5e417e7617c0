#!/usr/bin/env bash
# Checks npu_syncbn on an Ascend machine (CANN toolkit + torch-npu + NPUs):
#   1. installs the package (editable) with the npu and test extras, which builds
#      the AscendC kernels and their glue into npu_syncbn/_lib when it can,
#   2. builds them again (incremental) with npu_syncbn.npu_build, which fails
#      loudly where the install only printed why not: CMake (ascendc_library),
#      installed with --prefix npu_syncbn, never the default prefix,
#   3. compares every op, every implementation (cpu, twin, npu) with the float64
#      reference (npu-syncbn-accuracy, exits 1 on any failure),
#   4. runs the test suite, multi-rank tests over HCCL.
# Usage: ci/npu_check.sh [extra pytest args]. Needs ASCEND_HOME_PATH (source
# CANN's set_env.sh first) and torch-npu 2.13.0 installed. NPU_SYNCBN_SOC picks
# the SoC (default: detected, else Ascend910B2). Exits non-zero on the first failing step.
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

echo "== build kernels (npu_syncbn.npu_build: SoC ${NPU_SYNCBN_SOC:-detected})"
LIB=$("$PYTHON" -m npu_syncbn.npu_build --build-dir "$BUILD")
test -f "$LIB" || { echo "libnpu_syncbn_npu.so was not built"; exit 1; }
export NPU_SYNCBN_KERNELS="$LIB"

echo "== versions, route, device (python -m npu_syncbn.info), our kernels in use"
"$PYTHON" -m npu_syncbn.info
"$PYTHON" - <<'PY'
import torch, torch_npu  # noqa: F401
assert torch.npu.is_available(), "no NPU visible"
from npu_syncbn.ops import npu
assert npu.ROUTE == "ascendc", f"the NPU ops take the {npu.ROUTE} route, not our kernels"
PY

echo "== accuracy (cpu, twin, npu vs float64 reference)"
"$PYTHON" -m npu_syncbn.accuracy --impl cpu,twin,npu --json "$OUT/accuracy.json"

echo "== tests (multi-rank over HCCL)"
NPU_SYNCBN_BACKEND=hccl "$PYTHON" -m pytest tests/ -q "$@"

echo "== all NPU checks passed; results in $OUT"
