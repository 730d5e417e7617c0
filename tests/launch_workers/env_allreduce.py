"""Launcher test worker: record the launch environment and do a real gloo all_reduce.

Usage: env_allreduce.py OUT_DIR [EXTRA ARGS...]; writes OUT_DIR/rank_<RANK>.json.
"""
import json
import os
import sys

import torch
import torch.distributed as dist

NAMES = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
         "RANK_ID", "RANK_SIZE", "DEVICE_ID"]


def main():
    out_dir = sys.argv[1]
    rank = int(os.environ["RANK"])
    print(f"stdout line from rank {rank}", flush=True)
    print(f"stderr line from rank {rank}", file=sys.stderr, flush=True)
    dist.init_process_group("gloo")
    t = torch.tensor([float(rank + 1), 10.0 * (rank + 1)])
    dist.all_reduce(t)
    record = {name: os.environ.get(name) for name in NAMES}
    record.update(allreduce=t.tolist(), argv=sys.argv[2:], dist_rank=dist.get_rank(),
                  dist_world_size=dist.get_world_size())
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank_{rank}.json"), "w") as f:
        json.dump(record, f)
    print(f"rank {rank} done: allreduce={t.tolist()}", flush=True)


if __name__ == "__main__":
    main()
