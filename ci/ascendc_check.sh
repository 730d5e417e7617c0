#!/usr/bin/env bash
# Compile-checks (and, with a checker, runs) the AscendC kernels against the
# REAL AscendC API where this machine has it, instead of our twin:
#   1. a CANN toolkit ($ASCEND_HOME_PATH): g++ -fsyntax-only of every kernel in
#      AscendC's CPU-debug mode against CANN's own headers (the NPU build
#      itself is ci/npu_check.sh);
#   2. else git checkouts of the open asc-devkit and asc-tools repositories,
#      named by $ASC_DEVKIT and $ASC_TOOLS, or by $MIRRORS, a folder holding
#      them as mirror-cann+asc-devkit/repo and hicann+asc-tools/repo, and a
#      checker script ($ASCENDC_CHECKER, default
#      ../shared/tools/ascendc_real_check.sh beside this repository): it runs
#      in mode $1 (check | run | all, default check; all = every kernel
#      against float64 numpy, about 3 minutes);
#   3. else: prints why it is skipped and exits 0.
# None of these locations has a default on a user's machine: without the
# variables the check is skipped with its reason. Nothing from those sources
# is copied into this repository (their licence restricts redistribution);
# the checker and its stubs live outside it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-check}

if [ -n "${ASCEND_HOME_PATH:-}" ]; then
    # Not exercised by this repository's CI (it has no CANN toolkit): CANN's CPU-debug headers.
    TIK="$ASCEND_HOME_PATH/compiler/tikcpp/tikcfw"
    CPU="$ASCEND_HOME_PATH/tools/tikicpulib/lib/include"
    fail=0
    for k in op_kernels/kernels/batch_norm_*.cpp; do
        if g++ -std=c++17 -fsyntax-only -DASCENDC_CPU_DEBUG=1 -D__NPU_ARCH__=2201 -D__DAV_C220_VEC__ \
            -I"$TIK" -I"$TIK/impl" -I"$TIK/interface" -I"$CPU" -Iop_kernels/include -Iop_kernels/kernels "$k"; then
            echo "ascendc_check: OK $k (CANN headers)"
        else
            echo "ascendc_check: FAIL $k (CANN headers)"; fail=1
        fi
    done
    exit $fail
fi

TOOL=${ASCENDC_CHECKER:-$ROOT/../shared/tools/ascendc_real_check.sh}
DEVKIT=${ASC_DEVKIT:-${MIRRORS:+$MIRRORS/mirror-cann+asc-devkit/repo}}
TOOLS=${ASC_TOOLS:-${MIRRORS:+$MIRRORS/hicann+asc-tools/repo}}
if [ -z "$DEVKIT" ] || [ -z "$TOOLS" ]; then
    echo "ascendc_check: SKIP: no CANN toolkit (ASCEND_HOME_PATH unset) and no asc-devkit/asc-tools checkouts named (set ASC_DEVKIT and ASC_TOOLS, or MIRRORS)"
    exit 0
fi
if [ ! -d "$DEVKIT" ] || [ ! -d "$TOOLS" ]; then
    echo "ascendc_check: SKIP: asc-devkit or asc-tools not found at $DEVKIT and $TOOLS"
    exit 0
fi
if [ ! -f "$TOOL" ]; then
    echo "ascendc_check: SKIP: no checker script at $TOOL (set ASCENDC_CHECKER)"
    exit 0
fi
echo "ascendc_check: real AscendC API from $DEVKIT and $TOOLS, mode $MODE ($TOOL)"
out=$(PROJECT="$ROOT" DEVKIT_GIT="$DEVKIT" TOOLS_GIT="$TOOLS" bash "$TOOL" "$MODE" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -E "^=== |errors=|=> |FAIL|summary" | head -60
[ $rc -eq 0 ] && echo "ascendc_check: OK" || echo "ascendc_check: FAIL (rc=$rc)"
exit $rc
