"""The mint.nn.SyncBatchNorm documentation example (examples/test_syncbn.py) run
exactly as documented, with the launcher in place of msrun:

    npu-syncbn-run --worker_num=2 --local_worker_num=2 --master_port=PORT --log_dir=LOG_DIR \
        --join=True --cluster_time_out=100 pytest -s -v examples/test_syncbn.py

(a free port instead of 8975 and a temporary log_dir), from the repository root;
and the same with ``--emulate_npu``: both workers on the emulated Ascend device,
where the example takes its NPU branch (device "npu", backend "hccl").
"""
import os
import re
import shutil
import sys

import pytest

from conftest import emulated_device_built
from dist_utils import free_port
from launch_utils import REPO, launcher_env, run_launcher

EXAMPLE = "examples/test_syncbn.py"
TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher needs Linux")


def _env():
    env = launcher_env()
    # The scripts of this Python (npu-syncbn-run, pytest) come first on PATH.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    # Two workers on one checkout: keep pytest from writing .pytest_cache into it.
    env["PYTEST_ADDOPTS"] = (env.get("PYTEST_ADDOPTS", "") + " -p no:cacheprovider").strip()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK_ID", "RANK_SIZE", "DEVICE_ID"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_seed_example_under_launcher(tmp_path, device):
    if device == "npu":
        emulated_device_built()
    env = _env()
    env.pop("NPU_SYNCBN_EMULATE_NPU", None)  # only the flag may turn it on
    launcher = shutil.which("npu-syncbn-run", path=env["PATH"])
    if launcher is None:
        pytest.fail("npu-syncbn-run is not installed (pip install -e .)")
    log_dir = tmp_path / "msrun_log"
    args = ["--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}", f"--log_dir={log_dir}",
            "--join=True", "--cluster_time_out=100", *(["--emulate_npu"] if device == "npu" else []),
            "pytest", "-s", "-v", EXAMPLE]
    proc = run_launcher(args, TIMEOUT_S, REPO, env, launcher=[launcher], merge_stderr=True)
    cmd, out = proc.args, proc.stdout
    assert proc.returncode == 0, f"{' '.join(cmd)} exited with {proc.returncode}:\n{out}"
    for rank in (0, 1):
        log = log_dir / f"worker_{rank}.log"
        assert log.exists(), f"no {log}; launcher output:\n{out}"
        text = log.read_text()
        for test in ("test_seed_example_inference", "test_training_step_uses_global_statistics"):
            # with -s a test's prints come between its id and PASSED
            assert re.search(rf"test_syncbn\.py::{test}\b(?:(?!::test_).)*?PASSED", text, re.S), text
        assert f"SEED-EXAMPLE-TRAINING-OK rank {rank}" in text, text
        expected = f"npu:{rank} backend hccl" if device == "npu" else "cpu backend gloo"
        assert f"SEED-EXAMPLE-DEVICE {expected}" in text, text
        assert "2 passed" in text and "failed" not in text and "skipped" not in text, text
