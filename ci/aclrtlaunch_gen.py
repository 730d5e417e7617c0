"""Generate the ``aclrtlaunch_<kernel>.h`` launch headers from AscendC kernel entries.

CANN's ``ascendc_library`` writes one such header per kernel entry
``extern "C" __global__ __aicore__ void name(GM_ADDR a, ...)``: a C declaration
``uint32_t aclrtlaunch_name(uint32_t numBlocks, aclrtStream stream, void* a, ...)``
(global-memory pointers become ``void*``, other parameters keep their type) and
the ``ACLRT_LAUNCH_KERNEL(name)`` macro that names it. ci/npu_glue_check.sh uses
these to compile the launch glue without CANN. Written from the form of the
generated headers, not from CANN's generator.

    python ci/aclrtlaunch_gen.py OUT_DIR op_kernels/kernels/*.cpp
"""
from __future__ import annotations

import os
import re
import sys
from typing import List, Tuple

_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+__aicore__\s+void\s+(\w+)\s*\(([^)]*)\)')
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def _param(text: str) -> Tuple[str, str]:
    """(host type, name) of one kernel parameter."""
    words = text.replace("*", " * ").split()
    if len(words) < 2:
        raise ValueError(f"kernel parameter {text!r} has no name")
    name, kernel_type = words[-1], " ".join(words[:-1])
    if kernel_type == "GM_ADDR" or ("__gm__" in words and "*" in words):
        return "void*", name
    return kernel_type.replace(" *", "*"), name


def kernel_entries(source: str) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """[(kernel name, [(host type, name), ...])] of the entries in one source."""
    code = _COMMENT.sub(" ", source)
    return [(m.group(1), [_param(p) for p in m.group(2).split(",") if p.strip()]) for m in _ENTRY.finditer(code)]


def header_text(kernel: str, params: List[Tuple[str, str]]) -> str:
    names = {n for _, n in params}
    # The launch parameters come first; rename them only if a kernel parameter took the name.
    launch = [("uint32_t", "_numBlocks" if "numBlocks" in names else "numBlocks"),
              ("aclrtStream", "_stream" if "stream" in names else "stream")]
    args = ", ".join(f"{t} {n}" for t, n in launch + params)
    guard = f"HEADER_ACLRTLAUNCH_{kernel.upper()}_H"
    return (f"#ifndef {guard}\n#define {guard}\n#include \"acl/acl_base.h\"\n\n"
            "#ifndef ACLRT_LAUNCH_KERNEL\n#define ACLRT_LAUNCH_KERNEL(kernel_func) aclrtlaunch_##kernel_func\n#endif\n\n"
            f"extern \"C\" uint32_t aclrtlaunch_{kernel}({args});\n#endif\n")


def generate(out_dir: str, sources: List[str]) -> List[str]:
    """Write one header per kernel entry found in `sources`; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for src in sources:
        with open(src) as f:
            for kernel, params in kernel_entries(f.read()):
                path = os.path.join(out_dir, f"aclrtlaunch_{kernel}.h")
                with open(path, "w") as out:
                    out.write(header_text(kernel, params))
                written.append(path)
    return written


def main(argv: List[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    written = generate(argv[0], argv[1:])
    if not written:
        print("aclrtlaunch_gen: no kernel entry found in " + " ".join(argv[1:]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
