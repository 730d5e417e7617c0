"""Packaging for npu_syncbn.

Deliberately importable without torch: pip builds in an isolated environment,
and anything that imported torch here would make pip fetch the newest torch
(several GB). torch is a runtime requirement only, with the range the project
is tested on, so that an installed torch in it is never replaced (install
torch, and torch-npu, before this package).

A wheel (and so ``pip install .``) carries the kernel sources
(``op_kernels/`` as ``npu_syncbn/_op_kernels``), the emulated device's C++
sources and the examples (``npu_syncbn/examples``), so that the twin, the CPU
kernels and the emulated NPU can be built from an installed package too.

At build time the AscendC kernels are compiled for the CPU twin with g++
(no torch, no CANN needed). A failed twin build prints one line and never
fails the install: npu_syncbn.twin rebuilds lazily on first use. With CANN set
up (ASCEND_HOME_PATH) and torch_npu importable by this Python (so: pip
--no-build-isolation), the AscendC kernels and their glue are built too
(npu_syncbn/npu_build.py, in a subprocess that imports torch), or one line
says why not.
"""
import os
import runpy
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithKernels(build_py):
    """build_py that also compiles the kernel twin library and, on an Ascend
    machine, the AscendC kernels with their glue (each best effort)."""

    def run(self):
        super().run()
        out_dirs = [os.path.join(HERE, "npu_syncbn")]
        if not self.editable_mode:
            package = os.path.join(self.build_lib, "npu_syncbn")
            out_dirs.append(package)
            self._copy_kernel_sources(package)
            self._build_twin(os.path.join(package, "_lib"))
        # An editable install builds nothing here (pip would hide how long it
        # takes): the libraries are built on first use, or by ci/install.sh,
        # saying what they build.
        self._build_npu(out_dirs)

    @staticmethod
    def _copy_kernel_sources(package_dir):
        """op_kernels/ into the package (npu_syncbn/_op_kernels), where
        npu_syncbn.twin_build looks when there is no checkout beside it."""
        source = os.path.join(HERE, "op_kernels")
        if not os.path.isdir(source):  # building from a tree without them: the installed builds serve as they are
            return
        target = os.path.join(package_dir, "_op_kernels")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("build*", "*.so", "*.o", "__pycache__"))

    @staticmethod
    def _build_twin(lib_dir):
        """The twin and CPU kernel libraries into the wheel: built in the
        source tree's npu_syncbn/_lib (nothing to do when they are up to
        date there), then copied with the digests of their sources."""
        builder = os.path.join(HERE, "npu_syncbn", "twin_build.py")
        if not os.path.exists(builder):
            return
        try:
            mod = runpy.run_path(builder)
            built = [mod["build_twin"](), mod["build_cpu"]()]
        except Exception as exc:  # the libraries are optional at install time
            print(f"npu_syncbn: kernel libraries not built ({exc}); they are built on first use", file=sys.stderr)
            return
        os.makedirs(lib_dir, exist_ok=True)
        for lib in built:
            for path in (lib, lib + ".inputs"):
                shutil.copy2(path, lib_dir)

    @staticmethod
    def _build_npu(package_dirs):
        # Without the library NPU tensors take torch-npu's aclnn ops, so nothing here fails the install.
        fallback = "NPU tensors use torch-npu's aclnn ops"
        try:
            mod = runpy.run_path(os.path.join(HERE, "npu_syncbn", "npu_build.py"))
            why_not, device = mod["probe"]()
            if why_not:
                print(f"npu_syncbn: AscendC kernels not built: {why_not}; {fallback}", file=sys.stderr)
                return
            soc = mod["soc"](device)
            path = mod["build"](soc, prefixes=package_dirs, quiet=True)
            print(f"npu_syncbn: AscendC kernels built for {soc}: {path}", file=sys.stderr)
        except Exception as exc:
            print(f"npu_syncbn: AscendC kernels not built ({exc}); {fallback}", file=sys.stderr)


class BinaryDistribution(Distribution):
    """The wheel carries the g++-built libraries: tag it for this platform."""

    def has_ext_modules(self):
        return True


def _version():
    about = {}
    with open(os.path.join(HERE, "npu_syncbn", "version.py")) as f:
        exec(f.read(), about)
    return about["__version__"]


setup(
    name="npu_syncbn",
    version=_version(),
    description="Synchronized BatchNorm for PyTorch on Ascend NPUs (torch-npu, HCCL) with a full CPU/gloo path",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["npu_syncbn", "npu_syncbn.*"]),
    package_data={"npu_syncbn": ["_lib/*.so", "_lib/*.inputs", "emulation/csrc/*.cpp", "emulation/csrc/*.h",
                                 "examples/*.py"]},
    include_package_data=True,
    # Tested: torch 2.13 (with torch-npu 2.13.0) and 2.14 (CPU suite; the NPU glue
    # compiles against torch-npu 2.14.0). Install torch first: see the README.
    install_requires=["torch>=2.13,<2.15", "numpy"],
    extras_require={
        # ninja: torch's extension builder needs it for the emulated npu device
        # build: ci/wheel_check.sh builds the sdist with it
        "test": ["pytest>=7", "hypothesis>=6", "ninja", "build"],
        "npu": ["torch-npu>=2.13,<2.15"],
        "plot": ["matplotlib"],
    },
    entry_points={
        "console_scripts": [
            "npu-syncbn-run=npu_syncbn.launch:main",
            "npu-syncbn-accuracy=npu_syncbn.accuracy:main",
            "npu-syncbn-bench=npu_syncbn.bench:main",
        ]
    },
    cmdclass={"build_py": BuildPyWithKernels},
    distclass=BinaryDistribution,
)
