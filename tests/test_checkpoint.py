"""Activation checkpointing (torch.utils.checkpoint, reentrant and not): the
recompute in backward reuses the original forward's global statistics, so a
checkpointed model sends the collectives a plain one sends and trains to its
running stats, num_batches_tracked and gradients; both equal float64
BatchNorm on the concatenated global batch."""
import contextlib
import copy

import pytest
import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

import npu_syncbn
from shm_scenarios import _group

STEPS = 3
COUNTS = (3, 2)


def _net():
    torch.manual_seed(11)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 2, 1),
    )


def _run(model, x, reentrant):
    if reentrant is None:
        return model(x)
    h = checkpoint(model[0:3], x, use_reentrant=reentrant)
    h = checkpoint(model[3:6], h, use_reentrant=reentrant)
    return model[6](h)


@contextlib.contextmanager
def _counted_collectives():
    """Counts torch.distributed's all_gather/all_reduce calls (the gloo transport's collectives)."""
    counts = {"all_gather": 0, "all_reduce": 0}
    saved = {name: getattr(dist, name) for name in counts}

    def wrap(name):
        def call(*args, **kwargs):
            counts[name] += 1
            return saved[name](*args, **kwargs)

        return call

    for name in counts:
        setattr(dist, name, wrap(name))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(dist, name, fn)


def _train(model, group, rank, reentrant):
    """STEPS steps of SGD on this rank's shard; gradients summed over the group
    before each step (a plain sum, so the reference's loss is the global sum)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grads, collectives = [], {"all_gather": 0, "all_reduce": 0}
    for step in range(STEPS):
        X, G = _global_batch(step)
        mine = slice(sum(COUNTS[:rank]), sum(COUNTS[: rank + 1]))
        x = X[mine].clone().requires_grad_(True)
        opt.zero_grad()
        with _counted_collectives() as counted:
            (_run(model, x, reentrant) * G[mine]).sum().backward()
        for name in collectives:
            collectives[name] += counted[name]
        for p in model.parameters():
            dist.all_reduce(p.grad, group=group)
        grads.append([p.grad.clone() for p in model.parameters()] + [x.grad.clone()])
        opt.step()
    return grads, collectives


def _global_batch(step):
    g = torch.Generator().manual_seed(70 + step)
    shape = (sum(COUNTS), 3, 6, 6)
    return torch.randn(shape, generator=g) * 2 + 0.5, torch.randn((sum(COUNTS), 2, 6, 6), generator=g)


def _reference(rank):
    model = _net().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    grads = []
    for step in range(STEPS):
        X, G = _global_batch(step)
        x = X.double().requires_grad_(True)
        opt.zero_grad()
        (model(x) * G.double()).sum().backward()
        mine = slice(sum(COUNTS[:rank]), sum(COUNTS[: rank + 1]))
        grads.append([p.grad.clone() for p in model.parameters()] + [x.grad[mine].clone()])
        opt.step()
    return model, grads


def _diff(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1.0))


def checkpointed_against_plain(rank, world_size, transport, reentrant):
    group, _ = _group(transport)
    plain = npu_syncbn.convert_sync_batchnorm(_net(), group)
    ckpt = npu_syncbn.convert_sync_batchnorm(_net(), group)
    plain_grads, plain_coll = _train(plain, group, rank, None)
    ckpt_grads, ckpt_coll = _train(ckpt, group, rank, reentrant)
    ref, ref_grads = _reference(rank)
    out = {"collectives": (plain_coll, ckpt_coll), "vs_plain": 0.0, "vs_ref": 0.0, "tracked": []}
    for i in (1, 4):
        for name in ("running_mean", "running_var"):
            out["vs_plain"] = max(out["vs_plain"], _diff(getattr(ckpt[i], name), getattr(plain[i], name)))
            out["vs_ref"] = max(out["vs_ref"], _diff(getattr(ckpt[i], name), getattr(ref[i], name)))
        out["tracked"].append((int(ckpt[i].num_batches_tracked), int(plain[i].num_batches_tracked)))
    for mine, theirs, want in zip(ckpt_grads, plain_grads, ref_grads):
        out["vs_plain"] = max([out["vs_plain"]] + [_diff(a, b) for a, b in zip(mine, theirs)])
        out["vs_ref"] = max([out["vs_ref"]] + [_diff(a, b) for a, b in zip(mine, want)])
    return out


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("transport", ["shm", "gloo"])
def test_checkpointed_model_trains_like_the_plain_one(ranks, transport, reentrant):
    for rank, out in enumerate(ranks(2).run(checkpointed_against_plain, transport, reentrant)):
        assert out["tracked"] == [(STEPS, STEPS)] * 2, f"rank {rank}: {out}"
        assert out["vs_plain"] < 1e-5 and out["vs_ref"] < 1e-4, f"rank {rank}: {out}"
        if transport == "gloo":  # over gloo every collective goes through torch.distributed
            plain, ckpt = out["collectives"]
            assert plain == ckpt and plain["all_gather"] > 0, f"rank {rank}: {out['collectives']}"
