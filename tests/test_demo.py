"""The README's main job: the 2-rank training demo through the launcher, on
CPU and, unchanged, on the emulated NPU (``--emulate_npu``: device "npu",
backend "hccl", our kernels in the twin)."""
import os
import subprocess
import sys

import pytest

from conftest import emulated_device_built
from dist_utils import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUTES = {"cpu": "route: backend gloo, device cpu, npu_syncbn op route cpu",
          "npu": "route: backend hccl, device npu:0, npu_syncbn op route emulated"}


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_demo_trains_and_matches_single_process_batchnorm(tmp_path, device):
    if device == "npu":
        emulated_device_built()
    cmd = [
        sys.executable, "-m", "npu_syncbn.launch", "--worker_num=2", "--local_worker_num=2",
        f"--master_port={free_port()}", f"--log_dir={tmp_path}", "--join=True", "--cluster_time_out=60",
        *(["--emulate_npu"] if device == "npu" else []),
        os.path.join(ROOT, "examples", "train_demo.py"), "--steps", "4",
    ]
    env = {k: v for k, v in os.environ.items() if k != "NPU_SYNCBN_EMULATE_NPU"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")  # this checkout, not an installed copy
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ROUTES[device] in proc.stdout, proc.stdout[-3000:]
    assert "RESULT: OK" in proc.stdout
    assert proc.stdout.count("loss") >= 4
    assert "RESULT: OK" in (tmp_path / "worker_0.log").read_text()
    # DDP's per-iteration timer exists for the emulated device too: no warning on every rank
    assert "Time stats are currently only collected" not in proc.stdout + proc.stderr
