#!/usr/bin/env bash
# Packaging check, as a user installs: builds the sdist, builds the wheel
# from that sdist (so both carry what they must), installs the wheel into a
# fresh virtual environment next to torch 2.13.0 (and ninja, which torch's
# extension builder needs), and from a folder outside the repository runs
#   1. a 2-rank CPU training job (npu-syncbn-run and the installed example),
#   2. the same job on the emulated NPU (--emulate_npu),
#   3. the accuracy tool (--quick, three ops) on cpu, the twin and the emulated npu.
# The emulated device comes from $TORCH_EXTENSIONS_DIR when the checkout
# already built it for the same sources and torch (its name is a digest of
# them), so this adds the time of the installs and the jobs, about 3 minutes.
# Work folder: $WHEEL_CHECK_DIR (default: a new temporary folder, removed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
WORK=${WHEEL_CHECK_DIR:-$(mktemp -d)}
[ -n "${WHEEL_CHECK_DIR:-}" ] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
start=$SECONDS
say() { echo "wheel_check: $* ($((SECONDS - start)) s)"; }
fail() { echo "wheel_check: FAIL: $*"; exit 1; }

"$PY" -m build --sdist --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 || { tail -20 "$WORK/sdist.log"; fail "sdist did not build"; }
SDIST=$(ls "$WORK"/dist/npu_syncbn-*.tar.gz)
say "sdist $(basename "$SDIST")"
"$PY" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$SDIST" >"$WORK/wheel.log" 2>&1 || { tail -20 "$WORK/wheel.log"; fail "wheel did not build from the sdist"; }
WHEEL=$(ls "$WORK"/dist/npu_syncbn-*.whl)
say "wheel $(basename "$WHEEL") (from the sdist)"

"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet "torch==2.13.0" ninja >"$WORK/venv.log" 2>&1 || { tail -20 "$WORK/venv.log"; fail "torch did not install"; }
"$VPY" -m pip install --quiet "$WHEEL" >>"$WORK/venv.log" 2>&1 || { tail -20 "$WORK/venv.log"; fail "the wheel did not install"; }
say "fresh venv with torch 2.13.0 and the wheel"

cd "$WORK"  # outside the repository: only the installed package can be imported
PKG=$("$VPY" -c "import npu_syncbn, os; print(os.path.dirname(npu_syncbn.__file__))")
case "$PKG" in "$ROOT"*) fail "npu_syncbn imported from the checkout ($PKG), not from the wheel" ;; esac
DEMO="$PKG/examples/train_demo.py"
[ -f "$DEMO" ] || fail "the wheel carries no examples ($DEMO)"

run_job() {  # run_job NAME [launcher flags]: the 2-rank demo through npu-syncbn-run
  local name=$1; shift
  local port log="$WORK/$name.log"
  port=$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if ! "$WORK/venv/bin/npu-syncbn-run" --worker_num=2 --local_worker_num=2 --master_port="$port" \
      --log_dir="$WORK/${name}_logs" --join=True --cluster_time_out=120 "$@" "$DEMO" --steps 3 >"$log" 2>&1; then
    tail -30 "$log"; fail "$name job failed"
  fi
  grep -q "RESULT: OK" "$log" || { tail -30 "$log"; fail "$name job did not match single-process BatchNorm"; }
  if grep -q "building the kernel twin\|building the CPU kernels" "$log"; then
    fail "$name job rebuilt a library the wheel carries"
  fi
  say "$name job OK: $(grep -m1 -o 'route: .*' "$log")"
}
run_job cpu
run_job emulated-npu --emulate_npu

OPS=batch_norm_stats,batch_norm_elemt,batch_norm_backward_elemt  # a few of each kind keep this short
"$WORK/venv/bin/npu-syncbn-accuracy" --quick --impl cpu,twin --op "$OPS" >"$WORK/accuracy.log" 2>&1 \
    || { tail -30 "$WORK/accuracy.log"; fail "accuracy tool failed"; }
NPU_SYNCBN_EMULATE_NPU=1 "$WORK/venv/bin/npu-syncbn-accuracy" --quick --impl npu --op "$OPS" >>"$WORK/accuracy.log" 2>&1 \
    || { tail -30 "$WORK/accuracy.log"; fail "accuracy tool failed on the emulated npu"; }
say "accuracy tool OK ($(grep -c . "$WORK/accuracy.log") lines)"
echo "wheel_check: OK"
