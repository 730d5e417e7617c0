#!/usr/bin/env bash
# Installs npu_syncbn from this checkout (editable, with its test extras) into
# $PYTHON (default python3) and builds what the next step needs.
#   bash ci/install.sh          everything the test suite uses: the kernel twin,
#                               the CPU kernels and the emulated NPU device
#   bash ci/install.sh cpu      the CPU kernels only (CPU training)
#   bash ci/install.sh npu      the CPU kernels and the emulated NPU device
# torch 2.13.0 (CPU build) is installed only when no torch is importable, so an
# existing torch (or torch-npu's pairing) is never replaced. pip runs only when
# this checkout is not yet installed in that Python or setup.py changed since.
# Every build says what it builds and how long it took; one that is already
# up to date is skipped in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHAT=${1:-all}
case "$WHAT" in all|cpu|npu) ;; *) echo "usage: bash ci/install.sh [all|cpu|npu]" >&2; exit 2 ;; esac

timed() {  # timed "what" cmd...: runs cmd, then says how long it took
  local what=$1 start=$SECONDS; shift
  echo "npu_syncbn: $what ..."
  "$@"
  echo "npu_syncbn: $what took $((SECONDS - start)) s"
}

if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
  timed "installing torch 2.13.0 (CPU build; no torch was importable)" "$PY" -m pip install --quiet "torch==2.13.0"
fi

# Installed already? The stamp records setup.py's digest for this Python; pip
# also must list npu_syncbn as an editable install of this very folder.
STAMP=".install-stamp"
WANT="$(cat setup.py npu_syncbn/version.py | sha256sum | cut -c1-16) $("$PY" -c 'import sys; print(sys.prefix)')"
installed() {
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" - "$(pwd)" <<'PYEOF'
import importlib.util, json, os, sys
sys.path = [p for p in sys.path if p not in ("", os.getcwd())]  # the installed metadata, not ./npu_syncbn.egg-info
from importlib import metadata
try:
    url = json.loads(metadata.distribution("npu_syncbn").read_text("direct_url.json") or "{}")
except metadata.PackageNotFoundError:
    sys.exit(1)
editable_here = url.get("dir_info", {}).get("editable") and url.get("url") == "file://" + sys.argv[1]
sys.exit(0 if editable_here and all(importlib.util.find_spec(m) for m in ("pytest", "hypothesis")) else 1)
PYEOF
}
if installed; then
  echo "npu_syncbn: already installed from this checkout in $("$PY" -c 'import sys; print(sys.prefix)') (pip skipped)"
else
  rm -f "$STAMP"
  timed "installing npu_syncbn from this checkout (pip install -e .[test])" "$PY" -m pip install --quiet -e ".[test]"
  echo "$WANT" > "$STAMP"
fi

# The builders print what they build and how long it took, and nothing when
# their library is up to date. Run as a file, not as a module: no torch import.
case "$WHAT" in
  all) "$PY" npu_syncbn/twin_build.py --quiet ;;
  *)   "$PY" npu_syncbn/twin_build.py --quiet --only cpu ;;
esac

# The emulated Ascend device (NPU_SYNCBN_EMULATE_NPU=1): built here rather than
# inside a test's time limit or by two ranks at once. If it cannot build, say so
# in one line after the compiler's output: the emulated-npu tests then fail.
if [ "$WHAT" != cpu ]; then
  if ! "$PY" -c "from npu_syncbn.emulation import device; device.extension()"; then
    echo "npu_syncbn: the emulated npu device did not build (the compiler's output is above); its tests will fail"
  fi
fi
