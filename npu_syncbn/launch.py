"""``npu-syncbn-run``: an msrun-style launcher built on torch's elastic agent.

Usage (the flags are MindSpore ``msrun``'s)::

    npu-syncbn-run --worker_num=8 --local_worker_num=8 --join=True train.py --lr 0.1
    npu-syncbn-run --worker_num=2 --local_worker_num=2 --join=True pytest -s -v test_syncbn.py
    python -m npu_syncbn.launch ...        # same thing

    # two nodes with four workers each (run one line on each node)
    npu-syncbn-run --worker_num=8 --local_worker_num=4 --master_addr=10.0.0.1 --node_rank=0 --join=True train.py
    npu-syncbn-run --worker_num=8 --local_worker_num=4 --master_addr=10.0.0.1 --node_rank=1 --join=True train.py

How it works
------------
There is no process manager here: the workers are started, watched and
stopped by ``torch.distributed.launcher.api.elastic_launch`` (torchrun's
agent) with ``max_restarts=0``.  The entrypoint is the current Python
running the small exec-wrapper ``npu_syncbn/launch_exec.py`` (by path, so it
does not import torch), which execs the user's command:

* a first positional argument ending in ``.py`` is a script, run as
  ``sys.executable SCRIPT ARGS...``; anything else is a command looked up on
  PATH (``pytest``, ``python``, ``bash`` ...); the arguments after it are
  passed through untouched;
* the agent sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR
  and MASTER_PORT; the wrapper adds msrun's RANK_ID (= RANK), RANK_SIZE
  (= WORLD_SIZE) and DEVICE_ID (= LOCAL_RANK);
* worker logs: a ``LogsSpecs`` (elastic's documented hook that maps each
  worker's environment to its log files) redirects the worker's stdout to
  ``<log_dir>/worker_<RANK>.log`` (global rank, msrun's naming) and the
  wrapper folds stderr into the same file;
* ``--bind_core=True``: the launcher splits its own CPU affinity set into
  ``local_worker_num`` disjoint, contiguous groups and the wrapper pins
  local rank i to group i (``os.sched_setaffinity``) before exec.

Rendezvous: one node, or several with ``--node_rank`` given: torch's
*static* rendezvous on ``master_addr:master_port`` (node 0 hosts the
TCPStore, which the workers then share for ``init_process_group``).  Several
nodes with ``--node_rank`` left at -1 (msrun's default): torch's c10d
rendezvous on the same endpoint, which assigns node ranks on arrival, as
msrun assigns rank ids when ``node_rank`` is unset.  Either way the nodes must
all arrive within ``--cluster_time_out`` seconds or the launch fails.  With
c10d the workers' MASTER_ADDR/MASTER_PORT are the store the rendezvous set up
on the first node (its host name and a free port), not --master_addr/port.

``--join``
----------
``--join=True``: wait for all workers, echo their logs to the console with a
``[worker R]:`` prefix (msrun echoes all local worker logs by default), and
exit 0 only if every worker exited 0.  As soon as one worker exits non-zero
(noticed within ``MONITOR_INTERVAL`` = 0.2 s) the agent stops the others on
this node (SIGTERM, then SIGKILL after torch's 30 s grace; when the launcher
itself is interrupted or fails the grace is ``min(cluster_time_out, 30)`` s)
and the launcher exits with that worker's exit code (128+N for a signal N),
naming its rank and exit code and printing the tail of its log.

``--join=False`` (msrun's default): like msrun, return as soon as the workers
are launched and leave them running: the launcher re-runs itself, detached
(new session, stdin from /dev/null) with ``--join=True``, logging to
``<log_dir>/launcher_node<node_rank>.log``, prints that pid and the log
locations, and exits 0.  Check the logs (or that pid) for the outcome.

``--emulate_npu`` (not msrun's): every worker gets NPU_SYNCBN_EMULATE_NPU=1,
so ``import npu_syncbn`` there makes the emulated Ascend device "npu" and
backend "hccl" (see ``npu_syncbn.emulation``): an Ascend training script runs
unchanged on a machine without NPUs.

Not supported from msrun: ``--sim_level``, ``--sim_rank_id``,
``--rank_table_file``, ``--worker_log_name``, ``--tail_worker_log`` and the
MindSpore-only MS_* variables.  In a multi-node job the agents are only
coupled through the rendezvous: a worker failing on one node stops that node's
workers; the other nodes' workers see the failure through their collectives
(e.g. a gloo/HCCL error or time out), not from the launcher.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

PROG = "npu-syncbn-run"
MONITOR_INTERVAL = 0.2  # seconds between the agent's checks of its workers
MAX_STOP_GRACE = 30  # seconds a stopped worker gets between SIGTERM and SIGKILL
LOG_TAIL_LINES = 20
_HANDLED_SIGNALS = [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, n)]
EMULATE_ENV = "NPU_SYNCBN_EMULATE_NPU"  # read by `import npu_syncbn` (npu_syncbn.emulation)
_EXEC_WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launch_exec.py")


# ----------------------------------------------------------------------------- flags

def _bool_flag():
    """argparse type for msrun's True/False flags (argparse prefixes errors with the flag)."""

    def parse(text):
        value = str(text).strip().lower()
        if value in ("true", "1", "yes", "on"):
            return True
        if value in ("false", "0", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")

    parse.__name__ = "True/False"
    return parse


def _int_flag(lo=None, hi=None, what=None):
    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what or 'an integer'}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "msrun-style launcher for npu_syncbn jobs, built on torch.distributed's elastic agent.\n"
            "Starts --local_worker_num workers on this node (of --worker_num over all nodes), each with\n"
            "RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and msrun's\n"
            "RANK_ID (=RANK), RANK_SIZE (=WORLD_SIZE), DEVICE_ID (=LOCAL_RANK) set, and its stdout and\n"
            "stderr in <log_dir>/worker_<RANK>.log."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} --worker_num=2 --local_worker_num=2 --join=True train.py --epochs 3\n"
            f"  {PROG} --worker_num=2 --local_worker_num=2 --join=True pytest -s -v test_syncbn.py\n"
            f"  {PROG} --worker_num=8 --local_worker_num=4 --master_addr=10.0.0.1 --node_rank=1 --join=True train.py\n"
        ),
    )
    p.add_argument("--worker_num", type=_int_flag(lo=1, what="an integer > 0"), default=8,
                   help="total number of workers over all nodes (integer > 0; default: 8)")
    p.add_argument("--local_worker_num", type=_int_flag(lo=1, what="an integer > 0"), default=8,
                   help="number of workers on this node (integer > 0; default: 8); must divide --worker_num "
                        "(nodes = worker_num / local_worker_num)")
    p.add_argument("--master_addr", default="127.0.0.1",
                   help="IP address or host name of node 0, which hosts the rendezvous store "
                        "(default: 127.0.0.1; bracket IPv6 addresses: [::1])")
    p.add_argument("--master_port", type=_int_flag(lo=1024, hi=65535,
                                                   what="a port number in 1024..65535"), default=8118,
                   help="port of the rendezvous store on master_addr (1024..65535; default: 8118)")
    p.add_argument("--node_rank", type=_int_flag(lo=-1, what="an integer >= -1"), default=-1,
                   help="index of this node, 0..nodes-1; global rank = node_rank * local_worker_num + "
                        "local rank (default: -1: ignored on one node; on several nodes, node ranks are "
                        "assigned in order of arrival at the rendezvous)")
    p.add_argument("--log_dir", default=".",
                   help="directory for worker_<rank>.log files, created if missing (default: the current directory)")
    p.add_argument("--join", type=_bool_flag(), default=False, metavar="True|False",
                   help="True: wait for the workers, echo their logs, exit non-zero naming the failed worker if "
                        "any fails; False: return right after launching and leave the job running in the "
                        "background (default: False, as msrun)")
    p.add_argument("--cluster_time_out", type=_int_flag(lo=1, what="a number of seconds > 0"),
                   default=600,
                   help="seconds to wait for all nodes to reach the rendezvous before failing "
                        "(default: 600)")
    p.add_argument("--bind_core", type=_bool_flag(), default=False,
                   metavar="True|False",
                   help="True: pin each local worker to its own disjoint share of this process's CPU cores "
                        "(default: False)")
    # A bare switch (no =True): an optional value would swallow the task script after it.
    p.add_argument("--emulate_npu", action="store_true",
                   help="run every worker on the emulated Ascend device: sets NPU_SYNCBN_EMULATE_NPU=1 for all "
                        "workers, so `import npu_syncbn` makes device \"npu\" (host memory, our AscendC kernels "
                        "in the CPU twin) and backend \"hccl\" (over gloo) where torch_npu is not importable "
                        "(default: off)")
    p.add_argument("--_background", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("task_script", nargs="?",
                   help="a Python script (*.py, run with this Python) or any command on PATH (e.g. pytest)")
    p.add_argument("task_script_args", nargs=argparse.REMAINDER,
                   help="arguments for the script or command, passed through untouched")
    return p


class _Plan:
    """Validated launch settings."""

    def __init__(self, args, nnodes, node_rank, command, log_dir, cpu_groups):
        self.args = args
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.command = command
        self.log_dir = log_dir
        self.cpu_groups = cpu_groups


def split_cores(cores, nworkers):
    """Split sorted ``cores`` into ``nworkers`` contiguous, disjoint, near-equal groups.

    With fewer cores than workers every worker still gets one core (shared).
    """
    cores = sorted(cores)
    if len(cores) < nworkers:
        return [[cores[i % len(cores)]] for i in range(nworkers)]
    base, extra = divmod(len(cores), nworkers)
    groups, start = [], 0
    for i in range(nworkers):
        size = base + (1 if i < extra else 0)
        groups.append(cores[start:start + size])
        start += size
    return groups


def _host_for_lookup(addr):
    return addr[1:-1] if addr.startswith("[") and addr.endswith("]") else addr


def _validate(parser, args):
    if args.worker_num % args.local_worker_num != 0:
        parser.error(f"--worker_num={args.worker_num} is not a multiple of --local_worker_num="
                     f"{args.local_worker_num}: every node runs --local_worker_num workers, so --worker_num "
                     f"must be nodes * --local_worker_num")
    nnodes = args.worker_num // args.local_worker_num
    if nnodes == 1:
        node_rank = 0  # msrun ignores node_rank on a single node
    else:
        if args.node_rank >= nnodes:
            parser.error(f"--node_rank={args.node_rank} is out of range: --worker_num={args.worker_num} / "
                         f"--local_worker_num={args.local_worker_num} gives {nnodes} nodes, so --node_rank "
                         f"must be in 0..{nnodes - 1} (or -1 to assign ranks automatically)")
        node_rank = args.node_rank

    addr = args.master_addr.strip()
    if not addr:
        parser.error("--master_addr expects an IP address or host name, got ''")
    try:
        socket.getaddrinfo(_host_for_lookup(addr), None)
    except (socket.gaierror, UnicodeError) as exc:
        parser.error(f"--master_addr={addr!r} cannot be resolved to an address ({exc})")
    args.master_addr = addr

    if not args.log_dir:
        parser.error("--log_dir expects a directory path, got ''")
    log_dir = os.path.abspath(args.log_dir)
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        parser.error(f"--log_dir={args.log_dir!r} exists and is not a directory")

    script = args.task_script
    if not script:
        parser.error("missing task_script: give a *.py script or a command (e.g. pytest) after the flags")
    if script.endswith(".py"):
        if not os.path.isfile(script):
            parser.error(f"task_script {script!r} does not exist (a *.py script is run with {sys.executable})")
        command = [sys.executable, script]
    else:
        if shutil.which(script) is None:
            parser.error(f"task_script {script!r} is neither a *.py script nor a command found on PATH")
        command = [script]
    command += list(args.task_script_args)

    cpu_groups = None
    if args.bind_core:
        try:
            cores = os.sched_getaffinity(0)
        except (AttributeError, OSError) as exc:
            parser.error(f"--bind_core=True needs os.sched_getaffinity, which is unavailable here ({exc})")
        cpu_groups = split_cores(cores, args.local_worker_num)
    return _Plan(args, nnodes, node_rank, command, log_dir, cpu_groups)


# ----------------------------------------------------------------------------- logs

def _worker_log(log_dir, rank):
    return os.path.join(log_dir, f"worker_{rank}.log")


def _make_logs_specs(log_dir, echo):
    """A torch ``LogsSpecs`` naming each worker's log ``worker_<global rank>.log`` (msrun's naming)."""
    from torch.distributed.elastic.multiprocessing import LogsDest, LogsSpecs

    class MsrunLogsSpecs(LogsSpecs):
        def __init__(self):
            super().__init__(log_dir=log_dir)

        @property
        def root_log_dir(self):
            return log_dir

        def reify(self, envs):
            os.makedirs(log_dir, exist_ok=True)
            stdouts = {lr: _worker_log(log_dir, env["RANK"]) for lr, env in envs.items()}
            return LogsDest(
                stdouts=stdouts,
                stderrs=dict.fromkeys(envs),  # inherited; launch_exec folds it into stdout's file
                tee_stdouts=dict(stdouts) if echo else {},
                tee_stderrs={},
                error_files=dict.fromkeys(envs, os.devnull),
            )

    return MsrunLogsSpecs()


def _tail(path, nlines=LOG_TAIL_LINES):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError as exc:
        return [f"(cannot read {path}: {exc})\n"]
    return lines[-nlines:]


def _describe_exit(code):
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def _root_failure(failures):
    """Pick the worker that failed first: own exit beats being stopped by the agent (SIGTERM/SIGKILL)."""

    def key(item):
        rank, f = item
        return (f.exitcode == -signal.SIGTERM, f.exitcode == -signal.SIGKILL, f.timestamp, rank)

    return min(failures.items(), key=key)


# ----------------------------------------------------------------------------- run

def _say(msg, stream=None):
    print(f"{PROG}: {msg}", file=stream or sys.stdout, flush=True)


def _endpoint(addr, port):
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"  # bare IPv6
    return f"{addr}:{port}"


def _run_joined(plan):
    args = plan.args
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.makedirs(plan.log_dir, exist_ok=True)
    endpoint = _endpoint(args.master_addr, args.master_port)
    if plan.nnodes == 1 or plan.node_rank >= 0:
        backend, rdzv_configs = "static", {"rank": plan.node_rank, "timeout": args.cluster_time_out}
    else:  # msrun's automatic rank assignment: c10d rendezvous ranks nodes as they arrive
        backend = "c10d"
        rdzv_configs = {"timeout": args.cluster_time_out, "join_timeout": args.cluster_time_out,
                        "read_timeout": max(60, args.cluster_time_out)}
    run_id = f"npu_syncbn_{args.master_port}"  # the same on every node without any coordination
    echo = not args._background
    config = LaunchConfig(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=args.local_worker_num,
        logs_specs=_make_logs_specs(plan.log_dir, echo),
        run_id=run_id,
        role="worker",
        rdzv_endpoint=endpoint,
        rdzv_backend=backend,
        rdzv_configs=rdzv_configs,
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL,
        log_line_prefix_template="[worker ${rank}]: ",
        shutdown_timeout=min(args.cluster_time_out, MAX_STOP_GRACE),
    )
    wrapper_args = [_EXEC_WRAPPER]
    if plan.cpu_groups is not None:
        wrapper_args += ["--cpus", ";".join(",".join(str(c) for c in g) for g in plan.cpu_groups)]
    wrapper_args += ["--", *plan.command]

    node = "" if plan.nnodes == 1 else (
        f" as node {plan.node_rank} of {plan.nnodes}" if plan.node_rank >= 0 else f" on one of {plan.nnodes} nodes")
    _say(f"starting {args.local_worker_num} of {args.worker_num} workers{node} "
         f"(rendezvous {backend} at {endpoint}, cluster_time_out {args.cluster_time_out}s): "
         f"{subprocess.list2cmdline(plan.command)}")
    _say(f"worker logs: {os.path.join(plan.log_dir, 'worker_<rank>.log')}")
    if plan.cpu_groups is not None:
        groups = ", ".join(f"local rank {i}: {g}" for i, g in enumerate(plan.cpu_groups))
        _say(f"--bind_core: {groups}")

    saved_emulate = os.environ.get(EMULATE_ENV)
    if args.emulate_npu:  # the workers inherit the launcher's environment (restored below: main() may run in-process)
        os.environ[EMULATE_ENV] = "1"
        _say(f"--emulate_npu: {EMULATE_ENV}=1 for all workers")

    started = time.monotonic()
    # the agent installs its own SIGTERM/SIGINT/... handlers; put ours back afterwards (main() may run in-process)
    saved_handlers = {sig: signal.getsignal(sig) for sig in _HANDLED_SIGNALS}
    try:
        elastic_launch(config, sys.executable)(*wrapper_args)
    except ChildFailedError as err:
        rank, failure = _root_failure(err.failures)
        code = failure.exitcode
        _say(f"worker {rank} (local rank {failure.local_rank}, pid {failure.pid}) {_describe_exit(code)}; "
             f"the job failed after {time.monotonic() - started:.1f}s", sys.stderr)
        others = [f"worker {r} {_describe_exit(f.exitcode)}" for r, f in sorted(err.failures.items()) if r != rank]
        if others:
            _say("then: " + "; ".join(others), sys.stderr)
        log = _worker_log(plan.log_dir, rank)
        lines = _tail(log)
        _say(f"last {len(lines)} lines of {log}:", sys.stderr)
        for line in lines:
            sys.stderr.write(f"    {line.rstrip()}\n")
        sys.stderr.flush()
        return code if 0 < code < 256 else (128 + (-code) if code < 0 else 1)
    except SignalException as err:
        _say(f"interrupted by {err.sigval.name}; workers stopped", sys.stderr)
        return 128 + int(err.sigval)
    except Exception as err:  # rendezvous / store / agent errors
        text = f"{type(err).__name__}: {err}".strip()
        first = text.splitlines()[0] if text else type(err).__name__
        _say(f"launch failed: {first}", sys.stderr)
        cause = err.__cause__
        if cause is not None:
            _say(f"  caused by {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
                 sys.stderr)
        if plan.nnodes > 1:
            _say(f"check that all {plan.nnodes} nodes (--worker_num={args.worker_num} / --local_worker_num="
                 f"{args.local_worker_num}) are started with the same --master_addr={args.master_addr} and "
                 f"--master_port={args.master_port} and reach it within --cluster_time_out="
                 f"{args.cluster_time_out}s", sys.stderr)
        else:
            _say(f"check that --master_port={args.master_port} is free on {args.master_addr}", sys.stderr)
        return 1
    finally:
        if saved_emulate is None:
            os.environ.pop(EMULATE_ENV, None)
        else:
            os.environ[EMULATE_ENV] = saved_emulate
        for sig, handler in saved_handlers.items():
            if handler is not None:
                try:
                    signal.signal(sig, handler)
                except (ValueError, OSError):  # not the main thread
                    pass
    _say(f"all {args.local_worker_num} workers on this node finished successfully "
         f"in {time.monotonic() - started:.1f}s")
    return 0


def _run_background(plan):
    """--join=False: re-run this launcher detached with --join=True and return at once."""
    args = plan.args
    os.makedirs(plan.log_dir, exist_ok=True)
    node_tag = plan.node_rank if plan.node_rank >= 0 else "auto"
    launcher_log = os.path.join(plan.log_dir, f"launcher_node{node_tag}.log")
    argv = [
        sys.executable, "-m", "npu_syncbn.launch",
        f"--worker_num={args.worker_num}", f"--local_worker_num={args.local_worker_num}",
        f"--master_addr={args.master_addr}", f"--master_port={args.master_port}",
        f"--node_rank={args.node_rank}", f"--log_dir={plan.log_dir}", "--join=True",
        f"--cluster_time_out={args.cluster_time_out}", f"--bind_core={args.bind_core}",
        *(["--emulate_npu"] if args.emulate_npu else []), "--_background", args.task_script, *args.task_script_args,
    ]
    env = os.environ.copy()
    # make sure the child finds this very package, however we were imported
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(launcher_log, "w") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, close_fds=True)
    _say(f"--join=False: launched {args.local_worker_num} of {args.worker_num} workers in the background "
         f"(launcher pid {proc.pid}); not waiting for them")
    _say(f"worker logs: {os.path.join(plan.log_dir, 'worker_<rank>.log')}; launcher log: {launcher_log}")
    return 0


def main(argv=None):
    """Entry point of ``npu-syncbn-run``; returns the exit status (2 for bad flags)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        plan = _validate(parser, args)
    except SystemExit as exc:  # --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not args.join:
        return _run_background(plan)
    return _run_joined(plan)


if __name__ == "__main__":
    sys.exit(main())
