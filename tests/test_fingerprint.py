"""Fingerprints in the forward collective: ranks that synchronize different
things (layer order, input dtype, channel count) raise on every rank, naming
the layer and the disagreeing ranks, and never mix statistics."""
import pytest

import reliability_scenarios as sc
from npu_syncbn.fingerprint import Fingerprint, describe, mismatch_error

MODES = ["allgather", "allreduce"]


# "strict" checks before the statistics; "buffer" relies on the fingerprints
# inside the statistics buffer alone (equal sizes only); "auto" (the default)
# is strict on a layer's first call on CPU and buffer later ("warm").
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "c_second, check, warm",
    [(4, "strict", False), (4, "buffer", False), (6, "strict", False), (6, "auto", False), (4, "auto", True)],
    ids=["same-shape", "same-shape-buffer", "other-C", "other-C-first-call-auto", "same-shape-later-call-auto"],
)
def test_layers_called_in_different_orders(ranks, mode, c_second, check, warm):
    out = ranks(2).run(sc.layers_out_of_order, mode, c_second, check, warm)
    for rank, res in enumerate(out):
        msg = res["msg"]
        assert msg is not None, f"rank {rank} mixed statistics of two layers silently"
        assert res["kind"] == "FingerprintMismatch"
        assert f"SyncBatchNorm '{res['layer']}'" in msg, msg  # names this rank's layer
        assert f"ranks [{1 - rank}] differ from this rank {rank}" in msg, msg
        assert "Statistics were not mixed" in msg
        assert f"C={c_second}" in msg and "C=4" in msg
        assert res["untouched"], f"rank {rank}: running stats changed although the ranks disagreed"
        assert res["elapsed"] < 2.0, f"rank {rank}: detection took {res['elapsed']:.1f}s (should not wait for a timeout)"
        assert res["healthy"], f"rank {rank}: the group did not work after the error (ranks out of step)"


@pytest.mark.parametrize("check", ["strict", "buffer"])
@pytest.mark.parametrize("mode", MODES)
def test_input_dtype_differs(ranks, mode, check):
    for rank, res in enumerate(ranks(2).run(sc.dtype_differs, mode, check)):
        msg = res["msg"]
        assert msg is not None, f"rank {rank}: float32 and float16 inputs were mixed silently"
        assert "'features.bn1'" in msg and f"ranks [{1 - rank}]" in msg, msg
        assert "input float32" in msg and "input float16" in msg, msg
        assert res["healthy"], f"rank {rank}: ranks out of step after the error"


@pytest.mark.parametrize("mode", MODES)
def test_channel_count_differs(ranks, mode):
    """C=4 vs C=6: the statistics buffers differ in size. gloo would abort the
    rank receiving the longer buffer and hand the other a short one; the fixed
    size fingerprint check before the statistics collective (on by default on
    CPU) turns this into the same error on every rank at once."""
    for rank, res in enumerate(ranks(2).run(sc.channels_differ, mode, "auto")):
        msg = res["msg"]
        assert not res["returned"], f"rank {rank} returned statistics from buffers of different sizes"
        assert msg is not None and "'backbone.bn'" in msg, msg
        assert "C=4" in msg and "C=6" in msg and f"ranks [{1 - rank}]" in msg, msg
        assert res["elapsed"] < 5.0, f"rank {rank} took {res['elapsed']:.1f}s"
        assert res["running_mean_untouched"]


@pytest.mark.parametrize("check, expected", [("auto", [1, 0, 0]), ("strict", [1, 1, 1]), ("buffer", [0, 0, 0])])
def test_fixed_size_check_runs_on_first_calls_by_default(ranks, check, expected):
    """auto on CPU: the extra fingerprint collective guards a layer's first
    synchronized call only (it cost up to a third of a step); strict: every call."""
    for rank, counts in enumerate(ranks(2).run(sc.check_collectives_per_call, check)):
        assert counts == expected, f"rank {rank}: checks started per call {counts}, expected {expected}"


@pytest.mark.parametrize("mode", MODES)
def test_channel_count_differs_without_the_fixed_size_check(ranks, mode):
    """The same mismatch on a later call (check level buffer): over the
    shared-memory channel (2 ranks here) every rank raises naming the layer
    and the sizes; no rank aborts and none reads a short buffer."""
    for rank, res in enumerate(ranks(2).run(sc.channels_differ, mode, "buffer")):
        msg = res["msg"]
        assert not res["returned"], f"rank {rank} returned statistics from buffers of different sizes"
        assert msg is not None and "'backbone.bn'" in msg and "different buffer sizes" in msg, msg
        assert res["elapsed"] < 5.0, f"rank {rank} took {res['elapsed']:.1f}s"
        assert res["running_mean_untouched"]


def test_mismatch_message_lists_every_rank():
    import torch

    rows = torch.tensor([Fingerprint(7, 4, 2, 3).values(), Fingerprint(7, 4, 2, 3).values(), Fingerprint(9, 6, 3, 3).values()])
    err = mismatch_error("'layer1.0.bn1'", "the default group (WORLD)", rows, 0)
    text = str(err)
    assert isinstance(err, RuntimeError)
    assert "ranks [2] differ from this rank 0" in text
    assert "rank 2: layer #9, C=6, input float16, sync call 3" in text
    assert describe(Fingerprint(0x1F, 3, 1, 0).values()) == "layer #1f, C=3, input float64, sync call 0"


def test_fingerprint_scalar_separates_fields():
    base = Fingerprint(123, 4, 2, 5)
    others = [Fingerprint(124, 4, 2, 5), Fingerprint(123, 6, 2, 5), Fingerprint(123, 4, 3, 5), Fingerprint(123, 4, 2, 6)]
    for modulus in (1 << 20, 1 << 11):
        assert 1 <= base.scalar(modulus) <= modulus
        assert all(o.scalar(1 << 20) != base.scalar(1 << 20) for o in others)


def test_layers_out_of_order_inside_a_compiled_graph(ranks):
    for rank, res in enumerate(ranks(2).run(sc.compiled_layers_out_of_order, "aot_eager")):
        msg = res["msg"]
        assert msg is not None, f"rank {rank}: compiled graph mixed two layers"
        assert "disagree on what they are synchronizing" in msg and "Statistics were not mixed" in msg, msg
        assert res["healthy"], f"rank {rank}: ranks out of step after the error"
