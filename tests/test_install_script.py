"""ci/install.sh run again with nothing changed (what every later
``ci/run_demo.sh`` does) installs and builds nothing, and says so; the CPU
demo's set-up builds only the CPU kernels."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _install(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", "ci/install.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def installed_here():
    if not os.path.exists(os.path.join(ROOT, ".install-stamp")):
        pytest.skip("ci/install.sh has not installed this checkout into this Python (run it first); "
                    "running it from a test would change the environment under test")


def test_second_run_installs_and_builds_nothing(installed_here):
    first = _install("cpu")  # whatever an edit left to build is built here
    assert first.returncode == 0, first.stdout + first.stderr
    again = _install("cpu")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "(pip skipped)" in out
    assert "npu_syncbn: building" not in out and "pip install" not in out, out


def test_cpu_set_up_builds_no_emulated_device(installed_here):
    """The CPU demo's set-up never touches torch's extension builder."""
    out = _install("cpu")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "emulated npu device" not in text and "kernel twin" not in text, text
