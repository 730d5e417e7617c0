"""Resumed training: DDP + SyncBatchNorm + SGD (momentum, Nesterov, weight
decay) on 2 gloo ranks, saved mid-run on every rank, rebuilt from scratch,
loaded and continued, ends bitwise equal to the uninterrupted run: parameters,
running statistics, num_batches_tracked and the optimizer's momentum buffers.

Bitwise equality holds because nothing in a step depends on history outside
the saved state: the CPU kernels are deterministic at a fixed thread count
(the pool's ranks use one thread), the collectives' reduction order is fixed
by the group, the fingerprint call counter only labels calls, and the data of
step s on rank r is a function of (r, s)."""
import pytest

import reliability_scenarios as sc

STEPS, SAVE_AT = 8, 3


@pytest.mark.parametrize("bn_momentum, sync_mode", [(0.1, "allgather"), (None, "allreduce")],
                         ids=["momentum0.1-allgather", "cumulative-allreduce"])
def test_resumed_run_equals_uninterrupted_run(ranks, tmp_path, bn_momentum, sync_mode):
    out = ranks(2).run(sc.resume_matches, str(tmp_path), STEPS, SAVE_AT, bn_momentum, sync_mode)
    for rank, res in enumerate(out):
        assert not res["missing"], f"rank {rank}: state keys differ: {res['missing']}"
        assert not res["differ"], f"rank {rank}: not bitwise equal after resume: {res['differ']} (max |diff| {res['max_abs_diff']:.3e})"
        assert res["tracked"] == [STEPS, STEPS], res["tracked"]
        assert res["keys"] >= 20  # parameters, buffers and momentum buffers were all compared
