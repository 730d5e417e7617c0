"""The NPU build description: what CANN's ascendc_library needs to compile the
kernels, checked from the CMake file itself (no CANN here to run it)."""
import os
import re

from npu_syncbn import twin_build

CMAKE = os.path.join(twin_build.kernels_root(), "CMakeLists.txt")


def _calls(text, name):
    return re.findall(rf"^\s*{name}\(\s*(\w+)([^)]*)\)", text, flags=re.M)


def test_kernel_library_gets_its_includes_through_ascendc_include_directories():
    """target_include_directories on an ascendc_library target never reaches the
    device compile (asc-devkit's legacy function.cmake); bn_common.h then cannot
    find batch_norm_tiling.h and every kernel fails to build."""
    text = open(CMAKE).read()
    libraries = [name for name, _ in _calls(text, "ascendc_library")]
    assert libraries, "no ascendc_library target in op_kernels/CMakeLists.txt"
    for lib in libraries:
        assert not [a for n, a in _calls(text, "target_include_directories") if n == lib], lib
        dirs = " ".join(a for n, a in _calls(text, "ascendc_include_directories") if n == lib)
        for needed in ("/include", "/kernels"):
            assert needed in dirs, (lib, needed, dirs)


def test_no_kernel_uses_a_cross_core_barrier():
    """A SyncAll kernel can deadlock against another on a concurrent stream when
    launched through ascendc_library (no batch schedule mode there): the
    reducing kernels keep each channel on one core instead (host/tiling.cpp)."""
    kernels = os.path.join(twin_build.kernels_root(), "kernels")
    for name in sorted(os.listdir(kernels)):
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", open(os.path.join(kernels, name)).read(), flags=re.S)
        assert "SyncAll" not in code, name
