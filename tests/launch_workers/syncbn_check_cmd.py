"""A tiny pytest file that the launcher tests run *as a command* under npu-syncbn-run
(``pytest -q tests/launch_workers/syncbn_check_cmd.py``). It is named so that the
project's own ``pytest tests/`` run does not collect it (not test_*.py / *_test.py).
"""
import os

import torch
import torch.distributed as dist


def test_all_reduce_under_launcher():
    assert os.environ["RANK_ID"] == os.environ["RANK"]
    assert os.environ["RANK_SIZE"] == os.environ["WORLD_SIZE"] == "2"
    assert os.environ["DEVICE_ID"] == os.environ["LOCAL_RANK"]
    dist.init_process_group("gloo")
    try:
        t = torch.ones(3) * (dist.get_rank() + 1)
        dist.all_reduce(t)
        assert t.tolist() == [3.0, 3.0, 3.0]
    finally:
        dist.destroy_process_group()
    print(f"PYTEST-WORKER-OK rank {os.environ['RANK']}")
