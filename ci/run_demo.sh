#!/usr/bin/env bash
# Set up (ci/install.sh) and run the main job: 2-rank CPU training with
# SyncBatchNorm, started msrun-style by npu-syncbn-run (logs in demo_log/).
# Extra args go to examples/train_demo.py (e.g. --steps 50).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh
PY=${PYTHON:-python3}
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
exec "$PY" -m npu_syncbn.launch --worker_num=2 --local_worker_num=2 --master_port="$PORT" \
    --log_dir=demo_log --join=True examples/train_demo.py "$@"
