"""Every rank's batch empty: a training step on (0, C, H, W) everywhere goes
through as local BatchNorm's does (empty output, zero weight/bias gradients,
running stats unchanged, num_batches_tracked counted), and training goes on
to match float64 BatchNorm on the concatenated global batches: both sync
modes, over the shared-memory channel (fused step for the non-empty steps)
and over gloo (op path); a DDP-wrapped converted model trains through it."""
import copy

import pytest
import torch
import torch.distributed as dist

import npu_syncbn
from cpu_step_scenarios import fused_calls
from shm_scenarios import _group

C = 3
# Rows each rank brings per step: steps 0 and 2 are empty on every rank.
COUNTS = [(0, 0), (3, 2), (0, 0), (2, 4)]


def _global_batch(step: int):
    g = torch.Generator().manual_seed(40 + step)
    n = sum(COUNTS[step])
    return torch.randn(n, C, 4, 4, generator=g) * 1.5 + 0.3, torch.randn(n, C, 4, 4, generator=g)


def _mine(rank: int, step: int) -> slice:
    start = sum(COUNTS[step][:rank])
    return slice(start, start + COUNTS[step][rank])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def layer_through_empty_steps(rank, world_size, transport, sync_mode, momentum):
    group, _ = _group(transport)
    bn = npu_syncbn.SyncBatchNorm(C, momentum=momentum, process_group=group, sync_mode=sync_mode)
    ref = torch.nn.BatchNorm2d(C, momentum=momentum).double()  # local BatchNorm on the global batch
    out = {"empty_steps": [], "err": 0.0}
    with fused_calls() as fused:
        for step in range(len(COUNTS)):
            X, G = _global_batch(step)
            mine = _mine(rank, step)
            x = X[mine].clone().requires_grad_(True)
            before = (bn.running_mean.clone(), bn.running_var.clone())
            y = bn(x)
            (y * G[mine]).sum().backward()
            Xr = X.double().requires_grad_(True)
            yr = ref(Xr)
            (yr * G.double()).sum().backward()
            if X.numel() == 0:
                out["empty_steps"].append({
                    "shape": tuple(y.shape),
                    "grads": bn.weight.grad.tolist() + bn.bias.grad.tolist(),
                    "ref_grads": ref.weight.grad.tolist() + ref.bias.grad.tolist(),
                    "running_unchanged": bool(torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])),
                })
            out["err"] = max(out["err"], _max_diff(y.detach(), yr.detach()[mine]), _max_diff(x.grad, Xr.grad[mine]))
            bn.weight.grad = bn.bias.grad = ref.weight.grad = ref.bias.grad = None
    out["running_err"] = max(_max_diff(bn.running_mean, ref.running_mean), _max_diff(bn.running_var, ref.running_var))
    out["tracked"] = (int(bn.num_batches_tracked), int(ref.num_batches_tracked))
    out["fused_forwards"] = fused["forward"]
    return out


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
@pytest.mark.parametrize("transport", ["shm", "gloo"])
def test_all_empty_steps_train_like_local_batchnorm(ranks, transport, sync_mode, momentum):
    for rank, out in enumerate(ranks(2).run(layer_through_empty_steps, transport, sync_mode, momentum)):
        assert len(out["empty_steps"]) == 2
        for empty in out["empty_steps"]:
            assert empty["shape"] == (0, C, 4, 4)
            assert empty["grads"] == [0.0] * (2 * C) == empty["ref_grads"], f"rank {rank}: {empty}"
            assert empty["running_unchanged"], f"rank {rank}: an empty step moved the running stats"
        assert out["err"] < 2e-5 and out["running_err"] < 2e-5, f"rank {rank}: {out}"
        assert out["tracked"][0] == out["tracked"][1] == len(COUNTS)
        # The fused step takes both non-empty allgather steps (the strict-checked
        # first call is an empty one); empty ones take the op path over the same channel.
        expected = 2 if (transport, sync_mode, momentum) == ("shm", "allgather", 0.1) else 0
        assert out["fused_forwards"] == expected, f"rank {rank}: {out['fused_forwards']} fused forwards"


def ddp_model_through_empty_steps(rank, world_size):
    group, _ = _group("shm")
    torch.manual_seed(5)
    net = torch.nn.Sequential(torch.nn.Conv2d(C, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    ref = copy.deepcopy(net).double()  # local BatchNorm on the global batch
    model = torch.nn.parallel.DistributedDataParallel(npu_syncbn.convert_sync_batchnorm(net, process_group=group), process_group=group)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    losses = []
    for step in range(len(COUNTS)):
        X, _ = _global_batch(step)
        opt.zero_grad(), ref_opt.zero_grad()
        # DDP averages the ranks' gradients: the reference's loss is the global sum over W.
        loss = model(X[_mine(rank, step)]).square().sum()
        loss.backward()
        opt.step()
        (ref(X.double()).square().sum() / world_size).backward()
        ref_opt.step()
        summed = loss.detach().clone()
        dist.all_reduce(summed, group=group)
        losses.append(float(summed))
    bn, ref_bn = model.module[1], ref[1]
    params = max(_max_diff(p, q) for p, q in zip(model.module.parameters(), ref.parameters()))
    return {"losses": losses, "params": params, "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
            "running": max(_max_diff(bn.running_mean, ref_bn.running_mean), _max_diff(bn.running_var, ref_bn.running_var)),
            "tracked": int(bn.num_batches_tracked)}


def test_ddp_converted_model_trains_through_all_empty_steps(ranks):
    for rank, out in enumerate(ranks(2).run(ddp_model_through_empty_steps)):
        assert out["finite"], f"rank {rank}: {out}"
        assert out["losses"][0] == out["losses"][2] == 0.0
        assert out["params"] < 1e-5 and out["running"] < 1e-5, f"rank {rank}: {out}"
        assert out["tracked"] == len(COUNTS)
