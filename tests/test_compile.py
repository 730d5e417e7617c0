"""torch.compile: SyncBatchNorm trains on CPU/gloo with results equal to eager,
in one graph (fullgraph=True): the fingerprint checks are custom ops and the
collectives are traced by dynamo."""
import pytest

import compile_scenarios


@pytest.mark.parametrize("sync_mode, fuse", [("allgather", False), ("allreduce", False), ("allgather", True)],
                         ids=["allgather", "allreduce", "allgather-fused-relu-residual"])
def test_fullgraph_compile_trains_like_eager(ranks, sync_mode, fuse):
    for rank, worst in enumerate(ranks(2).run(compile_scenarios.compiled_matches_eager, sync_mode, True, "inductor", fuse,
                                              timeout=400)):
        assert worst.pop("graph_breaks") == 0, f"rank {rank}: graph breaks"
        bad = {k: v for k, v in worst.items() if not v < 1e-5}
        assert not bad, f"rank {rank}: compiled differs from eager: {bad}"
