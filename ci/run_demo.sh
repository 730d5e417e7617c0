#!/usr/bin/env bash
# Set up (ci/install.sh) and run the main job: 2-rank CPU training with SyncBatchNorm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh
exec "${PYTHON:-python3}" examples/train_demo.py "$@"
