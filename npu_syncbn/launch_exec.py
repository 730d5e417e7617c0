"""Per-worker exec wrapper used by ``npu-syncbn-run`` (see ``npu_syncbn/launch.py``).

torch's elastic agent starts every local worker as::

    <python> <this file> [--cpus SPEC] -- CMD [ARGS...]

with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT
already in the environment and stdout already redirected to the worker's
``worker_<rank>.log``.  This wrapper then, in its own process:

* adds msrun's variables: RANK_ID (= RANK), RANK_SIZE (= WORLD_SIZE) and
  DEVICE_ID (= LOCAL_RANK);
* sends stderr into the same log file as stdout (``dup2(1, 2)``), so that
  ``worker_<rank>.log`` holds both streams in order;
* sets PYTHONUNBUFFERED=1 unless the caller set it, so that Python workers'
  logs are live and nothing buffered is lost when a worker is terminated;
* with ``--cpus`` (``--bind_core=True``), pins itself to this local rank's
  share of the CPU cores (``os.sched_setaffinity``);
* ``exec``s CMD, so the worker *is* the user's process: same pid, signals
  from the agent reach it directly, its exit status is the worker's status.

It is run by path, not with ``-m``, so that starting a worker never imports
the ``npu_syncbn`` package (and torch); it uses the standard library only.
"""
import os
import sys

USAGE = "usage: launch_exec.py [--cpus SPEC] [--no-merge-stderr] -- CMD [ARGS...]"


def parse_cpus(spec, local_rank):
    """Pick this local rank's cores from SPEC: ``0,1;2-3;...`` (one group per local rank)."""
    groups = spec.split(";")
    if local_rank >= len(groups):
        raise ValueError(f"no CPU group for local rank {local_rank} in {spec!r}")
    cores = set()
    for part in groups[local_rank].split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cores.update(range(int(lo), int(hi) + 1))
        else:
            cores.add(int(part))
    if not cores:
        raise ValueError(f"empty CPU group for local rank {local_rank} in {spec!r}")
    return cores


def main(argv):
    cpus = None
    merge_stderr = True
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] == "--cpus" and i + 1 < len(argv):
            cpus = argv[i + 1]
            i += 2
        elif argv[i] == "--no-merge-stderr":
            merge_stderr = False
            i += 1
        else:
            print(f"launch_exec: unexpected argument {argv[i]!r}\n{USAGE}", file=sys.stderr)
            return 2
    cmd = argv[i + 1:]
    if not cmd:
        print(f"launch_exec: no command given\n{USAGE}", file=sys.stderr)
        return 2

    if merge_stderr:
        sys.stderr.flush()
        os.dup2(1, 2)

    env = os.environ
    for msrun_name, torch_name in (("RANK_ID", "RANK"), ("RANK_SIZE", "WORLD_SIZE"), ("DEVICE_ID", "LOCAL_RANK")):
        if torch_name in env:
            env[msrun_name] = env[torch_name]
    env.setdefault("PYTHONUNBUFFERED", "1")

    if cpus is not None:
        local_rank = int(env.get("LOCAL_RANK", "0"))
        try:
            cores = parse_cpus(cpus, local_rank)
            os.sched_setaffinity(0, cores)
        except (ValueError, OSError) as exc:
            print(f"npu-syncbn-run: --bind_core: cannot bind local rank {local_rank} to cores: {exc}", file=sys.stderr)
            return 1
        # One OpenMP/intra-op thread per bound core unless the user chose otherwise.
        env.setdefault("OMP_NUM_THREADS", str(len(cores)))

    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        print(f"npu-syncbn-run: cannot execute {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
