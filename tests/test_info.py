"""``python -m npu_syncbn.info`` names everything a bug report needs and exits 0,
also when the environment holds bad values."""
import os
import subprocess
import sys

import pytest

from npu_syncbn import info
from npu_syncbn.ops import npu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITEMS = ("python", "npu_syncbn", "torch", "torch-npu", "CANN", "npu route", "npu",
         "cpu transport", "check level", "twin library", "cpu library", "cpu kernels isa", "emulated device")


def _info(**env):
    run = subprocess.run([sys.executable, "-m", "npu_syncbn.info"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, **env))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    return dict(line.split(": ", 1) for line in run.stdout.splitlines())


def test_info_names_each_item():
    got = _info(NPU_SYNCBN_CHECK="auto", NPU_SYNCBN_CPU_TRANSPORT="gloo")
    assert list(got) == list(ITEMS)
    import torch

    assert got["torch"].startswith(torch.__version__)
    assert got["npu route"].split()[0] == npu.ROUTE
    assert got["cpu transport"].startswith("gloo") and got["cpu transport"].endswith(": gloo")
    assert got["check level"].startswith("auto") and "CPU: strict" in got["check level"]
    assert got["check level"].endswith("NPU: never")
    for lib in ("twin library", "cpu library"):
        assert got[lib].startswith(("built", "not built")) and "libnpu_syncbn_" in got[lib]
    assert got["emulated device"].startswith(("built (", "not built (")), got["emulated device"]
    if npu.ROUTE == "aten-fallback" and got["torch-npu"] == "not installed":
        # no NPU here: building the Ascend kernels cannot help, the emulated device can
        assert "npu_build" not in got["npu route"] and "NPU_SYNCBN_EMULATE_NPU=1" in got["npu route"]


def test_info_names_the_emulated_device_and_its_route():
    """Under NPU_SYNCBN_EMULATE_NPU=1 a bug report says the kernels ran in the
    twin on the emulated device, not on torch-npu's aclnn ops."""
    got = _info(NPU_SYNCBN_EMULATE_NPU="1", NPU_SYNCBN_EMULATE_DEVICES="3", NPU_SYNCBN_SOC="Ascend910B4")
    assert got["npu route"].startswith("emulated"), got["npu route"]
    assert got["npu"].startswith("3 emulated") and "Ascend910B4: vector cores 40" in got["npu"], got["npu"]


def test_info_reports_bad_settings_and_exits_0():
    got = _info(NPU_SYNCBN_CHECK="bogus", NPU_SYNCBN_CPU_TRANSPORT="fast")
    assert got["check level"].startswith("error: ValueError") and "bogus" in got["check level"]
    assert got["cpu transport"].startswith("error: ValueError") and "fast" in got["cpu transport"]


@pytest.mark.parametrize("where, text, expected", [
    ("x86_64-linux/ascend_toolkit_install.info", "package_name=Ascend-cann-toolkit\nversion=8.1.RC1\n", "8.1.RC1"),
    ("compiler/version.info", "Version=7.0.0\n", "7.0.0"),
])
def test_cann_version_from_toolkit_files(tmp_path, where, text, expected):
    (tmp_path / where).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / where).write_text(text)
    assert info.cann_version(str(tmp_path)) == f"{expected} ({tmp_path / where})"


def test_cann_version_when_absent(tmp_path):
    assert info.cann_version(None).startswith("not found")
    assert info.cann_version(str(tmp_path)).startswith("unknown")
