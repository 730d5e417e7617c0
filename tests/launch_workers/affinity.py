"""Launcher test worker: write this process's CPU affinity to OUT_DIR/affinity_<RANK>.json."""
import json
import os
import sys

rank = int(os.environ["RANK"])
with open(os.path.join(sys.argv[1], f"affinity_{rank}.json"), "w") as f:
    json.dump({"cpus": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS")}, f)
print(f"rank {rank} affinity {sorted(os.sched_getaffinity(0))}", flush=True)
