"""SyncBatchNorm over gloo ranks, and over "hccl" ranks on the emulated npu
device, equals float64 BatchNorm on the global batch."""
import pytest
import torch

import npu_syncbn
import sync_scenarios
from dist_utils import rank_device

# Allowed max |err| / max(1, |ref|) per input dtype: a few ulps of the dtype.
TOLERANCE = {"float64": 1e-10, "float32": 2e-5, "float16": 4e-3, "bfloat16": 3e-2}

SCENARIOS = {
    "2d": dict(C=5, inner=(), counts=[6, 4]),
    "3d": dict(C=3, inner=(7,), counts=[2, 3]),
    "4d": dict(C=4, inner=(3, 5), counts=[2, 2]),
    "5d": dict(C=2, inner=(2, 3, 4), counts=[2, 1]),
    "uneven": dict(C=3, inner=(4, 4), counts=[7, 1]),
    "empty_rank": dict(C=3, inner=(4, 4), counts=[5, 0]),
    "affine_false": dict(C=3, inner=(4, 4), counts=[3, 2], affine=False),
    "momentum_none": dict(C=3, inner=(4, 4), counts=[3, 2], momentum=None, steps=4),
    "momentum_one": dict(C=3, inner=(4,), counts=[3, 2], momentum=1.0),
    "channels_last": dict(C=6, inner=(3, 4), counts=[2, 3], channels_last=True),
    "channels_last_3d": dict(C=4, inner=(2, 3, 2), counts=[2, 2], channels_last=True),
    "float64": dict(C=3, inner=(5,), counts=[3, 4], dtype="float64"),
    "float16": dict(C=3, inner=(6, 6), counts=[3, 2], dtype="float16"),
    "bfloat16": dict(C=3, inner=(6, 6), counts=[3, 2], dtype="bfloat16"),
    "float16_channels_last": dict(C=8, inner=(4, 4), counts=[2, 3], dtype="float16", channels_last=True),
    "large_mean": dict(C=2, inner=(64,), counts=[8, 8], mean=1e4, std=1.0, momentum=1.0, steps=1),
    # later steps: on "npu" the float32 allreduce shifted by the previous global mean
    "large_mean_steps": dict(C=2, inner=(64,), counts=[8, 8], mean=1e4, std=1.0, steps=4),
}


def _check(errs_by_rank, dtype):
    tol = TOLERANCE[dtype]
    for rank, errs in enumerate(errs_by_rank):
        assert errs.pop("num_batches_tracked_equal") == 1.0, f"rank {rank}: num_batches_tracked differs"
        bad = {k: v for k, v in errs.items() if not v <= tol}
        assert not bad, f"rank {rank}: errors above {tol}: {bad}"


@pytest.mark.parametrize("device", ["cpu", "npu"])
@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_ranks_match_global_batchnorm(ranks, name, sync_mode, device):
    """"npu": the emulated device, our AscendC kernels in the twin, "hccl"."""
    cfg = dict(SCENARIOS[name], sync_mode=sync_mode)
    tol_dtype = cfg.get("dtype", "float32")
    if name.startswith("large_mean"):
        tol_dtype = "float16"  # |mean|/std = 1e4 costs ~4 decimal digits of float32 in y = x*scale + shift
    _check(ranks(2, device).run(sync_scenarios.compare_with_local_bn, cfg), tol_dtype)


@pytest.mark.parametrize("device", ["cpu", "npu"])
@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce", "auto"])
def test_four_ranks_uneven_with_empty(ranks, sync_mode, device):
    """"auto" with W = 4 takes the allreduce path (allgather only up to W = 2)."""
    cfg = dict(C=3, inner=(5,), counts=[4, 0, 1, 6], momentum=None, sync_mode=sync_mode)
    _check(ranks(4, device).run(sync_scenarios.compare_with_local_bn, cfg), "float32")


@pytest.mark.parametrize("transport, device", [("auto", "cpu"), ("shm", "cpu"), ("auto", "npu")])
def test_two_subgroups_of_two_in_world_of_four(ranks, transport, device):
    """Groups [0,1] and [2,3] made with create_group each normalize over their
    own batch only ("auto": gloo here, 4 processes on fewer cores; "shm":
    two shared-memory channels side by side; on "npu": two "hccl" subgroups)."""
    cfg = dict(C=3, inner=(4,), counts=[3, 2], groups=[[0, 1], [2, 3]], transport=transport)
    _check(ranks(4, device).run(sync_scenarios.compare_with_local_bn, cfg), "float32")


@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
def test_four_ranks_over_shared_memory(ranks, sync_mode):
    """Four ranks (one empty) through one shared-memory channel: rank-order reduction with W > 2."""
    cfg = dict(C=3, inner=(5,), counts=[4, 0, 1, 6], groups=[[0, 1, 2, 3]], transport="shm", sync_mode=sync_mode)
    _check(ranks(4).run(sync_scenarios.compare_with_local_bn, cfg), "float32")


def test_group_of_one_in_a_world_of_two(ranks):
    cfg = dict(C=3, inner=(4,), counts=[3], groups=[[0], [1]])
    _check(ranks(2).run(sync_scenarios.compare_with_local_bn, cfg), "float32")


def _merged_running_var(rank, world_size, sync_mode):
    """float32 input with mean 1e4, std 1, split over the ranks; momentum 1
    makes running_var the unbiased global variance. The running mean starts
    at 0, so the allreduce mode's shift is as far from the mean as it gets."""
    g = torch.Generator().manual_seed(7)
    X = torch.randn(2 * world_size, 4, 500, generator=g, dtype=torch.float64) + 1e4
    shard = X.chunk(world_size)[rank].float().to(rank_device())
    m = npu_syncbn.SyncBatchNorm(4, momentum=1.0, sync_mode=sync_mode).to(rank_device())
    m(shard)
    truth = X.float().double().transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True)
    return float(((m.running_var.cpu().double() - truth).abs() / truth).max())


@pytest.mark.parametrize("device", ["cpu", "npu"])
@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
def test_merge_is_stable_for_large_mean(ranks, sync_mode, device):
    """Merging float32 sums and sums of squares would lose every digit here.
    On "npu" the allreduce payload is float32 (HCCL has no float64 sum): a
    layer's first call there goes through the allgather mode."""
    for rank, rel in enumerate(ranks(2, device).run(_merged_running_var, sync_mode)):
        assert rel < 1e-3, f"rank {rank}: merged variance off by {rel:.2e} relative"


def _eval_mode_has_no_collective(rank, world_size):
    torch.manual_seed(rank)
    m = npu_syncbn.SyncBatchNorm(3)
    m.eval()
    x = torch.randn(4, 3, 5)
    # Only rank 0 calls eval forwards: any collective in eval would hang or misalign.
    if rank == 0:
        for _ in range(3):
            y = m(x)
        expected = torch.nn.functional.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.1, m.eps)
        assert torch.equal(y, expected)
    m.train()
    x = torch.full((2, 3, 5), float(rank))
    y = m(x)
    # Global batch: half zeros, half ones -> mean 0.5, so rank 0 gets negative outputs.
    return float(y.mean())


def test_eval_mode_does_not_communicate(ranks):
    out = ranks(2).run(_eval_mode_has_no_collective)
    assert out[0] < -0.9 and out[1] > 0.9, out
