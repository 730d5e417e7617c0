#!/usr/bin/env bash
# Set up (ci/install.sh); check that a wheel built from the sdist works from a
# fresh environment outside the repository (ci/wheel_check.sh); compile-check
# the NPU launch glue against torch-npu's headers (ci/npu_glue_check.sh;
# skipped with a reason when offline); check the kernels against the real
# AscendC API where this machine has it (ci/ascendc_check.sh all; skipped with
# a reason elsewhere); then run the whole CPU test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh
bash ci/wheel_check.sh
bash ci/npu_glue_check.sh
bash ci/ascendc_check.sh all
bash ci/mindspore_env.sh  # MindSpore 2.10 in its own venv for tests/test_mindspore_parity.py (says why not when offline)
exec "${PYTHON:-python3}" -m pytest tests -q -rs "$@"
