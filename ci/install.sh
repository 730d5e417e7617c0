#!/usr/bin/env bash
# Installs npu_syncbn (editable) with its test extras into the current Python.
# torch 2.13.0 (CPU build) is installed only when no torch is importable, so an
# existing torch (or torch-npu's pairing) is never replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
# Compile the AscendC kernels for the CPU twin now rather than on first use.
if [ -f npu_syncbn/twin_build.py ]; then
  "$PY" -m npu_syncbn.twin_build
fi
# Build the emulated Ascend device (NPU_SYNCBN_EMULATE_NPU=1) now, not inside a
# test's time limit. If it cannot build, say so in one line: the suite's
# emulated-npu tests then fail, showing the compiler's output.
if [ -d npu_syncbn/emulation ]; then
  if ! out=$("$PY" -c "from npu_syncbn.emulation import device; device.extension()" 2>&1); then
    echo "npu_syncbn: the emulated npu device did not build (its tests will fail): $(printf '%s\n' "$out" | grep -m1 -iE 'error|Error' || printf '%s\n' "$out" | tail -n 1)"
  fi
fi
