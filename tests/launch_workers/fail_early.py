"""Launcher test worker: rank FAIL_RANK exits with code 3 at once, every other rank sleeps long."""
import os
import sys
import time

rank = int(os.environ["RANK"])
fail_rank = int(sys.argv[1]) if len(sys.argv) > 1 else 1
if rank == fail_rank:
    print(f"rank {rank}: giving up with exit code 3", flush=True)
    sys.exit(3)
print(f"rank {rank}: sleeping", flush=True)
time.sleep(300)
