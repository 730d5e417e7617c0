"""Tests for the msrun-style launcher ``npu-syncbn-run`` (npu_syncbn/launch.py).

The launcher is run as a subprocess (``python -m npu_syncbn.launch``) with a
time limit; worker programs live in tests/launch_workers/ and are named so that
``pytest tests/`` does not collect them.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dist_utils import free_port
from launch_utils import REPO, launcher_env, run_launcher

WORKERS = os.path.join(REPO, "tests", "launch_workers")
TIMEOUT_S = 90
sys.path.insert(0, REPO)

from npu_syncbn import launch  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="launcher tests need Linux")


def worker(name):
    return os.path.join(WORKERS, name)


def base_flags(tmp_path, n=2, local=None, **extra):
    flags = [f"--worker_num={n}", f"--local_worker_num={local or n}", f"--master_port={free_port()}",
             f"--log_dir={tmp_path / 'logs'}", "--join=True"]
    flags += [f"--{k}={v}" for k, v in extra.items()]
    return flags


def check_env_records(out_dir, world, masters=None):
    records = {}
    for rank in range(world):
        with open(out_dir / f"rank_{rank}.json") as f:
            records[rank] = json.load(f)
    expected_sum = [sum(r + 1 for r in range(world)), 10.0 * sum(r + 1 for r in range(world))]
    for rank, rec in records.items():
        assert rec["RANK"] == rec["RANK_ID"] == str(rank)
        assert rec["WORLD_SIZE"] == rec["RANK_SIZE"] == str(world)
        assert rec["DEVICE_ID"] == rec["LOCAL_RANK"]
        assert rec["dist_rank"] == rank and rec["dist_world_size"] == world
        assert rec["allreduce"] == expected_sum
        if masters is not None:
            assert (rec["MASTER_ADDR"], rec["MASTER_PORT"]) == masters
    return records


# ------------------------------------------------------------------ script and command forms

def test_script_form_env_allreduce_and_logs(tmp_path):
    flags = base_flags(tmp_path)
    port = flags[2].split("=")[1]
    # arguments after the script, even ones that look like launcher flags, reach the script untouched
    passthrough = ["--log_dir=not_ours", "-x", "--worker_num", "7"]
    rc, out, err, _ = run_launcher([*flags, worker("env_allreduce.py"), str(tmp_path), *passthrough], TIMEOUT_S,
                                   tmp_path)
    assert rc == 0, out + err
    records = check_env_records(tmp_path, 2, masters=("127.0.0.1", port))
    assert sorted(r["LOCAL_RANK"] for r in records.values()) == ["0", "1"]
    assert all(r["argv"] == passthrough for r in records.values())
    for rank in (0, 1):
        text = (tmp_path / "logs" / f"worker_{rank}.log").read_text()
        # stdout and stderr of the worker both land in worker_<rank>.log
        assert f"stdout line from rank {rank}" in text
        assert f"stderr line from rank {rank}" in text
        assert f"rank {rank} done" in text
        assert f"from rank {1 - rank}" not in text
        # --join=True echoes the worker logs on the console, prefixed by rank
        assert f"[worker {rank}]: rank {rank} done" in out
    assert "worker_<rank>.log" in out


def test_command_form_pytest(tmp_path):
    # a command (not a *.py script): here `python -m pytest FILE`, FILE not collected by the main run
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", worker("syncbn_check_cmd.py")]
    rc, out, err, _ = run_launcher([*base_flags(tmp_path), *cmd], TIMEOUT_S, tmp_path)
    assert rc == 0, out + err
    for rank in (0, 1):
        text = (tmp_path / "logs" / f"worker_{rank}.log").read_text()
        assert f"PYTEST-WORKER-OK rank {rank}" in text
        assert "1 passed" in text


def test_command_form_on_path_gets_msrun_env(tmp_path):
    script = 'echo "cmd rank=$RANK rank_id=$RANK_ID size=$RANK_SIZE dev=$DEVICE_ID local=$LOCAL_RANK" "$@"'
    rc, out, err, _ = run_launcher([*base_flags(tmp_path), "sh", "-c", script, "sh", "a b", "--c"], TIMEOUT_S,
                                   tmp_path)
    assert rc == 0, out + err
    for rank in (0, 1):
        text = (tmp_path / "logs" / f"worker_{rank}.log").read_text()
        assert f"cmd rank={rank} rank_id={rank} size=2 dev={rank} local={rank} a b --c" in text


# ------------------------------------------------------------------ failures and time outs

def test_failed_worker_ends_job_naming_rank_and_code(tmp_path):
    flags = base_flags(tmp_path, cluster_time_out=20)
    rc, out, err, elapsed = run_launcher([*flags, worker("fail_early.py"), "1"], 60, tmp_path)
    assert rc == 3, out + err
    assert elapsed < 20, f"launcher took {elapsed:.1f}s after a worker failed"
    assert "worker 1 (local rank 1" in err and "exited with code 3" in err, err
    assert "giving up with exit code 3" in err  # tail of the failed worker's log
    assert "worker 0 was killed by SIGTERM" in err  # the sleeping worker was stopped
    assert "rank 0: sleeping" in (tmp_path / "logs" / "worker_0.log").read_text()


def test_missing_node_times_out_at_rendezvous(tmp_path):
    # 2 nodes expected, only node 0 started: fail after about --cluster_time_out seconds
    flags = base_flags(tmp_path, n=2, local=1, node_rank=0, cluster_time_out=2)
    rc, out, err, elapsed = run_launcher([*flags, worker("affinity.py"), str(tmp_path)], 60, tmp_path)
    assert rc == 1, out + err
    assert elapsed < 30
    assert "--cluster_time_out=2" in err and "2 nodes" in err, err
    assert not (tmp_path / "logs" / "worker_0.log").exists()


# ------------------------------------------------------------------ several nodes on one machine

def _run_two_nodes(tmp_path, node_flags):
    port = free_port()
    procs = []
    for extra in node_flags:
        args = [sys.executable, "-m", "npu_syncbn.launch", "--worker_num=2", "--local_worker_num=1",
                f"--master_port={port}", f"--log_dir={tmp_path / 'logs'}", "--join=True", "--cluster_time_out=30",
                *extra, worker("env_allreduce.py"), str(tmp_path)]
        procs.append(subprocess.Popen(args, cwd=tmp_path, env=launcher_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=60)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)
    return port


def test_two_nodes_with_node_rank(tmp_path):
    port = _run_two_nodes(tmp_path, [["--node_rank=1"], ["--node_rank=0"]])
    check_env_records(tmp_path, 2, masters=("127.0.0.1", str(port)))
    for rank in (0, 1):
        assert f"rank {rank} done" in (tmp_path / "logs" / f"worker_{rank}.log").read_text()


def test_two_nodes_auto_rank(tmp_path):
    # --node_rank left at -1 on several nodes: ranks are assigned at the rendezvous
    _run_two_nodes(tmp_path, [[], []])
    records = check_env_records(tmp_path, 2)
    assert all(r["LOCAL_RANK"] == "0" and r["LOCAL_WORLD_SIZE"] == "1" for r in records.values())


# ------------------------------------------------------------------ --bind_core, --join=False

def test_bind_core_gives_disjoint_core_sets(tmp_path):
    rc, out, err, _ = run_launcher([*base_flags(tmp_path, bind_core="True"), worker("affinity.py"), str(tmp_path)],
                                   TIMEOUT_S, tmp_path)
    assert rc == 0, out + err
    sets = []
    for rank in (0, 1):
        with open(tmp_path / f"affinity_{rank}.json") as f:
            rec = json.load(f)
        assert rec["cpus"], "empty affinity"
        assert rec["omp"] == str(len(rec["cpus"]))
        sets.append(set(rec["cpus"]))
    available = os.sched_getaffinity(0)
    assert sets[0] | sets[1] <= available
    if len(available) >= 2:
        assert not sets[0] & sets[1], sets
    assert "--bind_core" in out


def test_split_cores():
    assert launch.split_cores({0, 1}, 2) == [[0], [1]]
    assert launch.split_cores(range(8), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert launch.split_cores({5}, 2) == [[5], [5]]


def test_join_false_returns_at_once_and_job_runs_in_background(tmp_path):
    flags = base_flags(tmp_path)
    flags[-1] = "--join=False"
    rc, out, err, elapsed = run_launcher([*flags, worker("env_allreduce.py"), str(tmp_path)], 60, tmp_path)
    assert rc == 0, out + err
    assert "background" in out and "launcher pid" in out
    pid = int(out.split("launcher pid ")[1].split(")")[0])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
                (tmp_path / f"rank_{r}.json").exists() for r in (0, 1)):
            time.sleep(0.2)
        check_env_records(tmp_path, 2)
        deadline = time.monotonic() + 30
        log = tmp_path / "logs" / "launcher_node0.log"
        while time.monotonic() < deadline and "finished successfully" not in log.read_text():
            time.sleep(0.2)
        assert "finished successfully" in log.read_text()
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)  # only if our background launcher is still around
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------ flag validation

@pytest.mark.parametrize("argv, needle", [
    (["--worker_num=3", "--local_worker_num=2", "x.py"], "--worker_num=3 is not a multiple of --local_worker_num=2"),
    (["--worker_num=0", "x.py"], "argument --worker_num: expected an integer > 0, got 0"),
    (["--local_worker_num=two", "x.py"], "argument --local_worker_num: expected an integer > 0"),
    (["--join=maybe", "x.py"], "argument --join: expected True or False, got 'maybe'"),
    (["--bind_core=yes please", "x.py"], "argument --bind_core: expected True or False"),
    (["--master_port=80", "x.py"], "argument --master_port: expected a port number in 1024..65535"),
    (["--cluster_time_out=0", "x.py"], "argument --cluster_time_out: expected a number of seconds > 0"),
    (["--worker_num=4", "--local_worker_num=2", "--node_rank=2", "x.py"], "--node_rank=2 is out of range"),
    (["--master_addr=no-such-host.invalid", "--worker_num=1", "--local_worker_num=1", "x.py"],
     "--master_addr='no-such-host.invalid' cannot be resolved"),
    (["--worker_num=2", "--local_worker_num=2", "missing_script.py"], "task_script 'missing_script.py' does not exist"),
    (["--worker_num=2", "--local_worker_num=2", "no-such-command-xyz"], "neither a *.py script nor a command"),
    (["--worker_num=2", "--local_worker_num=2"], "missing task_script"),
    (["--worker_nums=2", "x.py"], "unrecognized arguments"),
])
def test_bad_flags_clear_error(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.py").write_text("")
    assert launch.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert not (tmp_path / "logs").exists()


def test_bad_flag_cli_exit_status(tmp_path):
    rc, out, err, _ = run_launcher(["--worker_num=3", "--local_worker_num=2", "x.py"], 60, tmp_path)
    assert rc == 2
    assert "--local_worker_num" in err


def test_help_documents_every_flag(capsys):
    assert launch.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--worker_num", "--local_worker_num", "--master_addr", "--master_port", "--node_rank",
                 "--log_dir", "--join", "--cluster_time_out", "--bind_core", "--emulate_npu", "task_script"):
        assert flag in text
    assert "_background" not in text


def test_defaults_follow_msrun():
    args = launch.build_parser().parse_args(["train.py"])
    assert (args.worker_num, args.local_worker_num) == (8, 8)
    assert (args.master_addr, args.master_port, args.node_rank) == ("127.0.0.1", 8118, -1)
    assert (args.log_dir, args.join, args.cluster_time_out, args.bind_core) == (".", False, 600, False)
    assert launch.build_parser().parse_args(["--join", "True", "train.py"]).join is True
    assert launch.build_parser().parse_args(["--join", "False", "train.py"]).join is False
    assert args.emulate_npu is False
    # a bare switch: the script after it stays the script
    args = launch.build_parser().parse_args(["--emulate_npu", "train.py", "--lr", "1"])
    assert args.emulate_npu is True and args.task_script == "train.py" and args.task_script_args == ["--lr", "1"]
