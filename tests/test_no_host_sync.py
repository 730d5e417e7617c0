"""Forward and backward never read tensor values back to the host (no .item(),
no comparisons driving Python branches), momentum=None included."""
import pytest

import compile_scenarios


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
def test_step_has_no_host_synchronization(ranks, sync_mode, momentum):
    for rank, (syncs, ops) in enumerate(ranks(2).run(compile_scenarios.host_syncs_in_step, sync_mode, momentum)):
        assert syncs == [], f"rank {rank}: host reads {syncs}"
        # The recorder must have seen the step's own ops, or it proves nothing.
        assert "npu_syncbn.batch_norm_stats" in ops and "npu_syncbn.batch_norm_backward_elemt" in ops, ops


def test_fused_relu_residual_step_has_no_host_synchronization(ranks):
    for rank, (syncs, ops) in enumerate(ranks(2).run(compile_scenarios.host_syncs_in_step, "allgather", 0.1, True)):
        assert syncs == [], f"rank {rank}: host reads {syncs}"
        # the op path's fused-activation ops, which NPUs run as AscendC kernels
        assert "npu_syncbn.batch_norm_elemt_act" in ops and "npu_syncbn.batch_norm_backward_reduce_relu" in ops, ops
