"""The fused CPU step (npu_syncbn/cpu_step.py): one C call per direction over
the shared-memory channel must give bitwise the results of the op-by-op
path, interoperate with it rank by rank, and fail as cleanly."""
import os

import pytest
import torch

import cpu_step_scenarios as sc
from npu_syncbn import cpu_step, shm
from npu_syncbn.ops import cpu_fast

pytestmark = pytest.mark.skipif(
    cpu_fast.library_any() is None or not os.path.isdir(shm.SHM_DIR),
    reason="needs the CPU kernel library (g++) and /dev/shm",
)

CASES = {
    "ncl-f32": {"shape": (4, 3, 5)},
    "nchw-channels-last-f32": {"shape": (2, 8, 3, 3), "channels_last": True},
    "2d-f32": {"shape": (6, 16)},
    "nchw-bf16": {"shape": (2, 5, 4, 3), "dtype": "bfloat16"},
    "no-affine-no-running-stats": {"shape": (4, 3, 5), "affine": False, "track": False},
}


def _assert_same_bits(a, b, what):
    for key in a:
        for step, (x, y) in enumerate(zip(a[key], b[key])):
            assert torch.equal(x, y), f"{what}: {key} of step {step} differs"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("world_size", [2])
def test_fused_step_equals_op_path_bitwise_and_global_batchnorm(ranks, case, world_size):
    cfg = CASES[case]
    out = ranks(world_size).run(sc.fused_against_op_path, cfg, list(range(world_size)))
    tol = 2e-2 if cfg.get("dtype") == "bfloat16" else 2e-5
    for rank, res in enumerate(out):
        # Step 1 is the layer's first call (strict check, op path); steps 2 and 3 run fused.
        assert res["fused"] == {"forward": 2, "backward": 3}, f"rank {rank}: fused steps {res['fused']}"
        _assert_same_bits(res["first"], res["second"], f"rank {rank}, fused vs op path")
        for step, (y, dx, (want_y, want_dx)) in enumerate(zip(res["first"]["y"], res["first"]["dx"], res["reference"])):
            for what, got, want in (("output", y, want_y), ("input gradient", dx, want_dx)):
                err = (got.double() - want).abs().max()
                assert err <= tol * (1 + want.abs().max()), f"rank {rank} step {step}: {what} off by {err}"


def test_ranks_may_mix_fused_and_op_path(ranks):
    """Rank 1 on the op path, ranks 0, 2 and 3 fused: same bits as all fused,
    and the channel stays in step over the steps."""
    out = ranks(4).run(sc.fused_against_op_path, {"shape": (2, 6, 4, 4), "channels_last": True}, [1])
    for rank, res in enumerate(out):
        _assert_same_bits(res["first"], res["second"], f"rank {rank}, all fused vs rank 1 on the op path")


def test_fingerprint_mismatch_raises_on_every_rank_and_the_channel_stays_in_step(ranks):
    for rank, res in enumerate(ranks(2).run(sc.fingerprint_mismatch_then_in_step)):
        assert res["msg"] is not None, f"rank {rank} mixed statistics of different layers"
        assert "disagree on what they are synchronizing" in res["msg"] and "rank 0: layer #" in res["msg"], res["msg"]
        assert res["fused"]["forward"] == 3, f"rank {rank}: the check did not run in the fused step: {res['fused']}"
        assert res["finite"], f"rank {rank}: the step after the error failed"


def test_peer_skipping_backward_raises_within_the_timeout(ranks):
    res = ranks(2).run(sc.peer_skips_backward, 2.0)[0]
    assert res["fused"]["backward"] == 1, f"the backward did not take the fused step: {res}"
    assert res["msg"] is not None and "backward gradient collective" in res["msg"], res
    assert "rank 1 of the group did not arrive within 2 s" in res["msg"], res["msg"]
    assert 1.5 < res["elapsed"] < 10.0, f"gave up after {res['elapsed']:.1f} s (timeout 2 s)"


class _Channel:
    """Stands in for a ShmChannel: records what _settle tells it."""

    def __init__(self):
        self.settled = []

    def settle(self, k, outcome):
        self.settled.append((k, outcome))
        if outcome == shm.MISMATCH:
            raise shm.ChannelError("sizes differ")


def test_kernel_failure_before_publishing_leaves_the_channel_in_step():
    channel = _Channel()
    with pytest.raises(MemoryError, match="fused CPU forward could not allocate"):
        cpu_step._settle(channel, 5, cpu_step.FAILED_BEFORE, "forward")
    assert channel.settled == [], "nothing was sent: collective 5 must still be the next one"


@pytest.mark.parametrize("rc, outcome, raises", [
    (cpu_step.DONE, shm.ARRIVED, None),
    (cpu_step.FINGERPRINT, shm.ARRIVED, None),  # the caller raises, naming the ranks
    (cpu_step.FAILED_AFTER, shm.ARRIVED, MemoryError),
    (cpu_step.MISMATCH, shm.MISMATCH, shm.ChannelError),
])
def test_every_exchanged_step_is_recorded_on_the_channel(rc, outcome, raises):
    channel = _Channel()
    if raises is None:
        cpu_step._settle(channel, 7, rc, "backward")
    else:
        with pytest.raises(raises):
            cpu_step._settle(channel, 7, rc, "backward")
    assert channel.settled == [(7, outcome)]
