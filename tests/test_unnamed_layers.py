"""Unnamed layers called out of step: two SyncBatchNorm(3) built directly (no
layer_name, no convert_sync_batchnorm), called a, b on rank 0 and b, a on
rank 1, must raise on every rank at the default check level instead of mixing
the statistics of two layers: at the first call (strict check, op path) and
at a later one (buffer check: the fused CPU step over shared memory, the op
path over gloo). Called in step they equal float64 BatchNorm on the global batch."""
import pytest
import torch

import npu_syncbn
from cpu_step_scenarios import fused_calls
from shm_scenarios import _group


def _batch(step: int):
    g = torch.Generator().manual_seed(90 + step)
    return torch.randn(5, 3, 4, generator=g) * 2 + 1


def _in_step(layer, ref, rank, step) -> float:
    """One in-step call of ``layer`` against local BatchNorm ``ref`` on the global batch."""
    X = _batch(step)
    mine = slice(0, 3) if rank == 0 else slice(3, 5)
    return float((layer(X[mine]).double() - ref(X.double())[mine]).abs().max())


def out_of_step(rank, world_size, transport, warm_up):
    group, _ = _group(transport)
    a = npu_syncbn.SyncBatchNorm(3, process_group=group)
    b = npu_syncbn.SyncBatchNorm(3, process_group=group)
    ref_a, ref_b = torch.nn.BatchNorm1d(3).double(), torch.nn.BatchNorm1d(3).double()
    err = 0.0
    for step in range(warm_up):  # in step: a then b on both ranks
        err = max(err, _in_step(a, ref_a, rank, step), _in_step(b, ref_b, rank, step))
    x = _batch(9)[:3]
    with fused_calls() as fused:
        try:
            for layer in ((a, b) if rank == 0 else (b, a)):
                layer(x)
            message = None
        except RuntimeError as exc:
            message = str(exc)
    return {"err": err, "message": message, "fused": fused["forward"]}


@pytest.mark.parametrize("warm_up", [0, 2])
@pytest.mark.parametrize("transport", ["shm", "gloo"])
def test_unnamed_layers_out_of_step_raise_on_every_rank(ranks, transport, warm_up):
    for rank, out in enumerate(ranks(2).run(out_of_step, transport, warm_up)):
        assert out["err"] < 2e-5, f"rank {rank}: in-step calls differ from BatchNorm on the global batch: {out}"
        assert out["message"] is not None, f"rank {rank}: out-of-step unnamed layers were not detected"
        assert "disagree" in out["message"] and "unnamed" in out["message"], out["message"]
        # After the warm-up the buffer-level check runs, inside the fused step over shared memory.
        assert out["fused"] == (1 if (transport, warm_up) == ("shm", 2) else 0), f"rank {rank}: {out}"
