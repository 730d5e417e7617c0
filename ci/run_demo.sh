#!/usr/bin/env bash
# Set up (ci/install.sh: on CPU it builds only the CPU kernels, with
# --emulate-npu also the emulated device; a second run with nothing changed
# builds and installs nothing) and run the main job: 2-rank training with
# SyncBatchNorm, started msrun-style by npu-syncbn-run (logs in demo_log/).
# On CPU (gloo) by default; on an Ascend machine the same script trains on the
# NPUs (hccl). --emulate-npu: on the emulated NPU (the launcher's --emulate_npu,
# NPU_SYNCBN_EMULATE_NPU=1 for both workers). Other args go to
# examples/train_demo.py (e.g. --steps 50).
set -euo pipefail
cd "$(dirname "$0")/.."
LAUNCH_FLAGS=()
SCRIPT_ARGS=()
NEEDS=cpu
for arg in "$@"; do
  case "$arg" in
    --emulate-npu|--emulate_npu) LAUNCH_FLAGS+=(--emulate_npu); NEEDS=npu ;;  # for the launcher, not the script
    *) SCRIPT_ARGS+=("$arg") ;;
  esac
done
bash ci/install.sh "$NEEDS"
echo "npu_syncbn: starting 2 ranks (logs in demo_log/)"
PY=${PYTHON:-python3}
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
exec "$PY" -m npu_syncbn.launch --worker_num=2 --local_worker_num=2 --master_port="$PORT" \
    --log_dir=demo_log --join=True "${LAUNCH_FLAGS[@]}" examples/train_demo.py "${SCRIPT_ARGS[@]}"
