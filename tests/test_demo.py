"""The README's main job: the 2-rank training demo through the launcher."""
import os
import subprocess
import sys

from dist_utils import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_and_matches_single_process_batchnorm(tmp_path):
    cmd = [
        sys.executable, "-m", "npu_syncbn.launch", "--worker_num=2", "--local_worker_num=2",
        f"--master_port={free_port()}", f"--log_dir={tmp_path}", "--join=True", "--cluster_time_out=60",
        os.path.join(ROOT, "examples", "train_demo.py"), "--steps", "4",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RESULT: OK" in proc.stdout
    assert proc.stdout.count("loss") >= 4
    assert "RESULT: OK" in (tmp_path / "worker_0.log").read_text()
