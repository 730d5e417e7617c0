"""The install-time AscendC build (npu_syncbn/npu_build.py, setup.py) on a machine
without CANN: it says why it does not build, picks the SoC as documented, and
setup.py's build step neither imports torch nor fails."""
import os
import subprocess
import sys

import pytest

from npu_syncbn import npu_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_npu_smi(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")


def test_soc_env_overrides_device(monkeypatch, no_npu_smi):
    monkeypatch.setenv(npu_build.ENV_SOC, "Ascend910B4")
    assert npu_build.soc("Ascend910B2") == "Ascend910B4"


def test_soc_from_device_else_default(monkeypatch, no_npu_smi):
    monkeypatch.delenv(npu_build.ENV_SOC, raising=False)
    assert npu_build.soc("Ascend910B3") == "Ascend910B3"
    assert npu_build.soc("") == npu_build.DEFAULT_SOC == "Ascend910B2"


def test_soc_from_npu_smi(monkeypatch, tmp_path):
    fake = tmp_path / "npu-smi"
    fake.write_text("#!/bin/sh\necho '| 0     910B4               | OK            | 93.2        41                0    / 0             |'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(npu_build.ENV_SOC, raising=False)
    assert npu_build.soc("") == "Ascend910B4"


@pytest.mark.parametrize("cann, reason", [(None, "ASCEND_HOME_PATH unset"), ("/opt/cann", "torch_npu is not importable")])
def test_probe_names_what_is_missing(monkeypatch, cann, reason):
    pytest.importorskip("torch")
    try:
        import torch_npu  # noqa: F401
        pytest.skip("torch_npu is installed here")
    except ImportError:
        pass
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    if cann:
        monkeypatch.setenv("ASCEND_HOME_PATH", cann)
    else:
        monkeypatch.delenv("ASCEND_HOME_PATH", raising=False)
    why_not, device = npu_build.probe()
    assert reason in why_not and device == ""


def test_setup_build_step_without_torch_prints_one_line(monkeypatch):
    # setup.py's NPU step exactly as pip runs it, in a Python where torch cannot be imported.
    env = dict(os.environ, ASCEND_HOME_PATH="/opt/cann")
    code = (
        "import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']\n"
        "ns = {'__name__': 'setup', '__file__': 'setup.py'}\n"
        "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), ns)\n"
        "ns['BuildPyWithKernels']._build_npu(['/nonexistent'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "AscendC" in line]
    assert len(lines) == 1 and "not built" in lines[0] and "aclnn" in lines[0], run.stderr
