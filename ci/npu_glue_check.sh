#!/usr/bin/env bash
# Compiles the NPU launch glue (every op_kernels/host/*.cpp that includes torch-npu
# or ACL headers) without CANN: g++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror against
# the headers of the torch-npu 2.13.0 wheel (downloaded once, cached, never
# installed) and of the installed torch, with the aclrtlaunch_<kernel>.h headers
# generated from the kernels' entries (ci/aclrtlaunch_gen.py).
# No network: prints why and "SKIP", exits 0. A compile error exits non-zero.
# Env: PYTHON, NPU_SYNCBN_CACHE (default ~/.cache/npu_syncbn), CXX.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CXX=${CXX:-g++}
VERSION=2.13.0
CACHE=${NPU_SYNCBN_CACHE:-$HOME/.cache/npu_syncbn}
WHEELS=$CACHE/wheels
HEADERS=$CACHE/torch_npu-$VERSION-headers

wheel() { compgen -G "$WHEELS/torch_npu-$VERSION-*.whl" | head -n 1; }
if [[ -z "$(wheel)" ]]; then
    mkdir -p "$WHEELS"
    # One fixed wheel whatever this interpreter is: the headers are the same in all of them.
    if ! log=$("$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
               --platform manylinux_2_28_x86_64 "torch-npu==$VERSION" -d "$WHEELS" 2>&1); then
        echo "npu_glue_check: cannot download torch-npu $VERSION ($(tail -n 1 <<<"$log"))"
        echo "SKIP npu_glue_check"
        exit 0
    fi
fi
WHEEL=$(wheel)

# Headers only (the wheel is 43 MB, its include/ 6 MB); the stamp marks a complete unpack.
if [[ ! -f "$HEADERS/.complete" ]]; then
    rm -rf "$HEADERS"
    "$PY" - "$WHEEL" "$HEADERS" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("torch_npu/include/")])
PY
    touch "$HEADERS/.complete"
fi
NPU_INC=$HEADERS/torch_npu/include

read -r ABI TORCH_INCS < <("$PY" -c "
import torch, torch.utils.cpp_extension as ce
print(int(torch._C._GLIBCXX_USE_CXX11_ABI), ' '.join(ce.include_paths()))") \
    || { echo "npu_glue_check: torch is not importable by $PY"; exit 2; }

GEN=$(mktemp -d)
trap 'rm -rf "$GEN"' EXIT
"$PY" ci/aclrtlaunch_gen.py "$GEN" op_kernels/kernels/*.cpp

# C++20 as torch 2.13 builds extensions (TorchConfig.cmake, cpp_extension); its
# headers warn under -Wextra, so they are -isystem. The wheel's are clean: -I.
FLAGS=(-std=c++20 -fsyntax-only -Wall -Wextra -Werror -D_GLIBCXX_USE_CXX11_ABI="$ABI"
       -Iop_kernels/include -Iop_kernels/host -I"$GEN"
       -I"$NPU_INC" -I"$NPU_INC/third_party/acl/inc" -I"$NPU_INC/third_party/hccl/inc")
for inc in $TORCH_INCS; do FLAGS+=(-isystem "$inc"); done

mapfile -t GLUE < <(grep -lE '#include\s*[<"](torch_npu/|acl/|hccl/)' op_kernels/host/*.cpp)
[[ ${#GLUE[@]} -gt 0 ]] || { echo "npu_glue_check: no op_kernels/host/*.cpp includes torch-npu headers"; exit 1; }
for src in "${GLUE[@]}"; do
    echo "npu_glue_check: $CXX -fsyntax-only -Werror $src (torch-npu $VERSION headers, ${#GLUE[@]} file(s))"
    "$CXX" "${FLAGS[@]}" "$src"
done
echo "npu_glue_check: OK (${GLUE[*]})"
