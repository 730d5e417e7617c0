"""A rank outside the given group: ``dist.new_group([0])`` hands rank 1
``GroupMember.NON_GROUP_MEMBER``. One model built and converted identically on
both ranks must accept it (as torch.nn.SyncBatchNorm does), and on rank 1 a
training step normalizes with local statistics, warning once naming the rank
and the group; rank 0 (a group of one) equals local BatchNorm too."""
import copy
import warnings

import torch
import torch.distributed as dist

import npu_syncbn


def _net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))


def train_with_group_of_rank_zero(rank, world_size):
    pg = dist.new_group([0])  # every rank calls it; rank 1 gets the sentinel
    out = {"non_member": pg is dist.GroupMember.NON_GROUP_MEMBER}
    torch.nn.SyncBatchNorm(4, process_group=pg)  # torch accepts it: so must we
    layer = npu_syncbn.SyncBatchNorm(4, process_group=pg)
    out["repr"] = repr(layer)
    net = _net()
    ref = copy.deepcopy(net).double()  # local BatchNorm on this rank's own batch
    model = npu_syncbn.convert_sync_batchnorm(net, pg)
    errs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(2):
            x = torch.randn(2 + rank, 3, 5, 5, generator=torch.Generator().manual_seed(10 * step + rank))
            xr = x.double().requires_grad_(True)
            x.requires_grad_(True)
            y, yr = model(x), ref(xr)
            y.sum().backward(), yr.sum().backward()
            errs.append(float((y.double() - yr).abs().max()))
            errs.append(float((x.grad.double() - xr.grad).abs().max()))
            errs.append(max(float((p.grad.double() - q.grad).abs().max()) for p, q in zip(model.parameters(), ref.parameters())))
            model.zero_grad(), ref.zero_grad()
    out["warnings"] = [str(w.message) for w in caught if "NON_GROUP_MEMBER" in str(w.message)]
    out["err"] = max(errs)
    out["running"] = max(float((a.double() - b).abs().max()) for a, b in zip(
        [model[1].running_mean, model[1].running_var, model[4].running_mean], [ref[1].running_mean, ref[1].running_var, ref[4].running_mean]))
    out["tracked"] = int(model[4].num_batches_tracked)
    if not out["non_member"]:
        dist.destroy_process_group(pg)
    return out


def test_non_member_rank_accepts_the_group_and_trains_on_local_statistics(ranks):
    r0, r1 = ranks(2).run(train_with_group_of_rank_zero)
    assert not r0["non_member"] and r1["non_member"]
    for rank, out in enumerate((r0, r1)):
        assert out["err"] < 1e-5 and out["running"] < 1e-6, f"rank {rank}: {out}"
        assert out["tracked"] == 2
    assert r0["warnings"] == []
    assert len(r1["warnings"]) == 1, r1["warnings"]  # once, for two layers over two steps
    assert "rank 1" in r1["warnings"][0] and "local batch statistics" in r1["warnings"][0]
    assert "NON_GROUP_MEMBER" in r1["repr"]
