"""An installed package (a wheel or ``pip install .``) has no checkout beside
it: the builders find the kernel sources in the package's own copy
(``npu_syncbn/_op_kernels``), and the libraries built at install time count as
up to date by the digest of their sources, not by file times (unpacking a
wheel gives every file a new time). Laid out here as site-packages would
hold it, in a temporary folder."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from npu_syncbn import twin_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """site-packages/npu_syncbn with the builders, a copy of the kernel
    sources and the CPU library built from them, all files newer than it."""
    lib = twin_build.build_cpu()  # the checkout's, up to date (built if an edit made it stale)
    pkg = tmp_path_factory.mktemp("site-packages") / "npu_syncbn"
    (pkg / "_lib").mkdir(parents=True)
    for name in ("twin_build.py", "build_lock.py"):
        shutil.copy(os.path.join(ROOT, "npu_syncbn", name), pkg / name)
    shutil.copytree(os.path.join(ROOT, "op_kernels"), pkg / "_op_kernels",
                    ignore=shutil.ignore_patterns("build*", "*.so", "*.o"))
    for path in (lib, lib + ".inputs"):
        shutil.copy(path, pkg / "_lib")
    for folder, _, files in os.walk(pkg / "_op_kernels"):  # as unpacking a wheel does
        for f in files:
            os.utime(os.path.join(folder, f))
    return pkg


def _load_builder(pkg):
    spec = importlib.util.spec_from_file_location("installed_twin_build", pkg / "twin_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sources_found_in_the_package_copy(installed):
    builder = _load_builder(installed)
    assert builder.kernels_root() == str(installed / "_op_kernels")


def test_library_built_at_install_is_up_to_date_despite_newer_file_times(installed):
    run = subprocess.run([sys.executable, str(installed / "twin_build.py"), "--only", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "building" not in run.stderr, run.stderr
    assert f"up to date in {installed / '_lib'}" in run.stdout


def test_an_edited_source_makes_it_stale(installed, tmp_path):
    builder = _load_builder(installed)
    lib = str(installed / "_lib" / twin_build.CPU_LIB_NAME)
    assert builder.cpu_up_to_date(lib)
    source = installed / "_op_kernels" / "cpu" / "syncbn_cpu.cpp"
    original = source.read_text()
    try:
        source.write_text(original + "\n// edited\n")
        assert not builder.cpu_up_to_date(lib)
    finally:
        source.write_text(original)


def test_missing_sources_name_both_places(tmp_path):
    pkg = tmp_path / "npu_syncbn"
    pkg.mkdir()
    for name in ("twin_build.py", "build_lock.py"):
        shutil.copy(os.path.join(ROOT, "npu_syncbn", name), pkg / name)
    builder = _load_builder(pkg)
    with pytest.raises(builder.TwinBuildError, match="_op_kernels"):
        builder.kernels_root()
