"""A rank that stops taking part makes the others raise within the process
group's timeout, naming the group and the layer; through the launcher, a worker
that dies mid-training ends the whole job, naming that worker."""
import sys
import textwrap

import pytest

import reliability_scenarios as sc
from dist_utils import free_port
from launch_utils import launcher_env, run_launcher

TIMEOUT_S = 3.0


@pytest.mark.parametrize("mode", ["allgather", "allreduce"])
def test_rank_skipping_forward_raises_within_timeout(ranks, mode):
    res = ranks(2).run(sc.rank_skips_forward, mode, TIMEOUT_S)[0]
    msg = res["msg"]
    assert msg is not None, "rank 0 returned although rank 1 never took part"
    assert TIMEOUT_S - 0.5 <= res["elapsed"] <= TIMEOUT_S + 5, f"waited {res['elapsed']:.1f}s with a {TIMEOUT_S}s timeout"
    assert "SyncBatchNorm 'encoder.bn3'" in msg and "group with global ranks [0, 1]" in msg, msg
    assert "on rank 0" in msg and "timeout" in msg.lower(), msg


def test_rank_skipping_backward_raises_within_timeout(ranks):
    res = ranks(2).run(sc.rank_skips_backward, TIMEOUT_S)[0]
    msg = res["msg"]
    assert msg is not None
    assert res["elapsed"] <= TIMEOUT_S + 5
    assert "SyncBatchNorm 'encoder.bn4'" in msg and "backward gradient" in msg and "[0, 1]" in msg, msg


def test_timeout_comes_from_init_and_environment(monkeypatch):
    """init(timeout=...) and $NPU_SYNCBN_TIMEOUT reach init_process_group."""
    import datetime

    import torch.distributed as dist

    from npu_syncbn import comm

    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: seen.append(k["timeout"]))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv(comm.ENV_TIMEOUT, "7")
    comm.init(backend="gloo")
    comm.init(backend="gloo", timeout=2.5)
    comm.init(backend="gloo", timeout=datetime.timedelta(seconds=4))
    assert seen == [datetime.timedelta(seconds=7), datetime.timedelta(seconds=2.5), datetime.timedelta(seconds=4)]


# ----------------------------------------------------------------- through the launcher

TRAIN_SCRIPT = textwrap.dedent('''
    import os, sys, time
    import torch
    import npu_syncbn

    torch.set_num_threads(1)
    scenario = sys.argv[1]
    npu_syncbn.init()
    rank = npu_syncbn.get_rank()
    model = npu_syncbn.convert_sync_batchnorm(torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1000):
        if rank == 1 and step == 3:
            if scenario == "die":
                print(f"rank 1: dying at step {step}", flush=True)
                time.sleep(0.5)  # rank 0 is waiting inside the SyncBatchNorm forward by now
                os._exit(7)
            print(f"rank 1: stalling at step {step}", flush=True)
            time.sleep(120)
        if rank == 0 and step == 3:
            print("rank 0: entering step 3", flush=True)
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"rank {rank}: done", flush=True)
''')


def _launch(tmp_path, scenario, env_extra, timeout=60):
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    args = ["--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}", f"--log_dir={tmp_path / 'logs'}",
            "--join=True", "--cluster_time_out=30", str(script), scenario]
    return run_launcher(args, timeout, tmp_path, launcher_env(**env_extra))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="launcher tests need Linux")
def test_worker_dying_mid_training_ends_the_job(tmp_path):
    rc, out, err, elapsed = _launch(tmp_path, "die", {"NPU_SYNCBN_TIMEOUT": "30"})
    assert rc == 7, out + err
    assert "worker 1 (local rank 1" in err and "exited with code 7" in err, err
    assert elapsed < 30, f"the job took {elapsed:.1f}s to end after worker 1 died"
    log0 = (tmp_path / "logs" / "worker_0.log").read_text()
    assert "rank 0: entering step 3" in log0
    # Rank 0 either saw the dead peer first (gloo: connection closed), with an
    # error naming its layer, or was stopped by the launcher: never a hang.
    named = "SyncBatchNorm '1'" in log0 and "failed on rank 0" in log0
    assert named or "worker 0 was killed by SIGTERM" in err, log0[-2000:] + err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="launcher tests need Linux")
def test_stalled_worker_times_out_the_others_via_environment(tmp_path):
    """Rank 1 stalls (alive, silent): rank 0's SyncBatchNorm gives up after
    $NPU_SYNCBN_TIMEOUT seconds naming the layer; the job ends naming worker 0."""
    rc, out, err, elapsed = _launch(tmp_path, "stall", {"NPU_SYNCBN_TIMEOUT": "3"})
    assert rc != 0
    assert "worker 0 (local rank 0" in err, err
    log0 = (tmp_path / "logs" / "worker_0.log").read_text()
    assert "SyncBatchNorm '1'" in log0 or "SyncBatchNorm '4'" in log0, log0[-3000:]
    assert "the default group (WORLD)" in log0 and "failed on rank 0" in log0, log0[-3000:]
    assert elapsed < 40, f"the job took {elapsed:.1f}s with a 3 s collective timeout"
