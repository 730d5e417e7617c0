#!/usr/bin/env bash
# Venv with real MindSpore for tests/test_mindspore_parity.py, kept apart from
# the torch venv (MindSpore 2.10 needs numpy < 2; torch's venv does not).
# Idempotent: a warm venv with the pinned versions returns at once. When the
# package registry cannot be reached it prints one line saying so and exits 0;
# the parity test then skips with that reason.
set -uo pipefail
MS_VERSION=2.10.0
VENV="${NPU_SYNCBN_MS_VENV:-$HOME/.cache/npu_syncbn/ms-venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.npu_syncbn-mindspore-$MS_VERSION"

if [ -x "$PY" ] && [ -f "$STAMP" ]; then
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" || { echo "mindspore_env: cannot create a venv at $VENV (python3 -m venv failed); parity test will skip"; exit 0; }
fi
if "$PY" -m pip install --quiet --disable-pip-version-check --timeout 30 --retries 2 "mindspore==$MS_VERSION" "numpy<2" >"$VENV/.install.log" 2>&1; then
    touch "$STAMP"
else
    why=$( (grep -m1 '^ERROR' "$VENV/.install.log" || tail -n1 "$VENV/.install.log") | cut -c1-200)
    echo "mindspore_env: cannot install mindspore==$MS_VERSION (${why:-pip failed}); MindSpore parity test will skip"
fi
exit 0
