"""SyncBatchNorm(activation="relu") and forward(input, residual): relu(bn(x) + r)
on 2 gloo ranks against float64 torch BatchNorm + residual + ReLU of the
global batch; the fused CPU step bitwise equal to the op path; memory kept
for backward no more than BatchNorm, + and ReLU keep."""
import os

import pytest
import torch

import activation_scenarios as sc
from npu_syncbn import SyncBatchNorm, shm
from npu_syncbn.ops import cpu_fast

needs_channel = pytest.mark.skipif(
    cpu_fast.library_any() is None or not os.path.isdir(shm.SHM_DIR),
    reason="needs the CPU kernel library (g++) and /dev/shm",
)

CASES = {
    "relu-residual-nchw-f32": {"shape": (4, 3, 5, 4), "activation": "relu"},
    "relu-residual-channels-last-f32": {"shape": (2, 8, 3, 3), "activation": "relu", "channels_last": True},
    "relu-residual-2d-f32": {"shape": (6, 16), "activation": "relu"},
    "relu-residual-bf16": {"shape": (2, 5, 4, 3), "activation": "relu", "dtype": "bfloat16"},
    "relu-residual-channels-last-bf16": {"shape": (2, 8, 3, 3), "activation": "relu", "dtype": "bfloat16",
                                         "channels_last": True},
    "relu-only": {"shape": (4, 3, 5), "activation": "relu", "residual": False},
    "residual-only": {"shape": (4, 3, 5), "residual": True},
    # A residual in another layout than the input: the op path takes it.
    "relu-residual-other-layout": {"shape": (2, 8, 3, 3), "activation": "relu", "residual_layout": "channels_last"},
}


@needs_channel
@pytest.mark.parametrize("case", list(CASES))
def test_fused_activation_matches_reference_and_op_path(ranks, case):
    cfg = CASES[case]
    tol = 3e-2 if cfg.get("dtype") == "bfloat16" else 3e-5
    for rank, res in enumerate(ranks(2).run(sc.fused_against_op_path_and_reference, cfg)):
        if case != "relu-residual-other-layout":
            # Step 1 is the layer's first call (strict check, op path).
            assert res["fused"] == {"forward": 2, "backward": 3}, f"rank {rank}: fused steps {res['fused']}"
        else:
            assert res["fused"]["forward"] == 0, f"rank {rank}: a residual of another layout ran fused"
        for key in ("y", "dx", "dr", "dw", "db"):
            for step, (a, b) in enumerate(zip(res["first"][key], res["second"][key])):
                assert torch.equal(a, b), f"rank {rank} step {step}: {key} of the fused step differs from the op path"
        assert torch.equal(res["first"]["running"], res["second"]["running"])
        for step, want in enumerate(res["reference"]):
            for key in ("y", "dx", "dr", "dw", "db"):
                if key == "dr" and not cfg.get("residual", True):
                    continue
                got = res["first"][key][step].double()
                err = float((got - want[key]).abs().max())
                assert err <= tol * (1 + float(want[key].abs().max())), f"rank {rank} step {step}: {key} off by {err}"
        if cfg.get("activation") == "relu":
            assert bool((res["first"]["y"][0] == 0).any()), "no element was clamped: the test would not see the mask"


@needs_channel
def test_fused_relu_keeps_no_more_than_bn_add_relu(ranks):
    fused = ranks(2).run(sc.saved_bytes, (4, 6, 5, 5), True)
    unfused = ranks(2).run(sc.saved_bytes, (4, 6, 5, 5), False)
    for rank, (f, u) in enumerate(zip(fused, unfused)):
        assert f["bytes"] <= u["bytes"], f"rank {rank}: fused keeps {f['bytes']} bytes, unfused {u['bytes']}"
        # input + output (the ReLU's mask) + O(C) statistics
        assert f["bytes"] <= 2 * f["activation"] + 1024, f


def test_world_of_one_and_eval_compute_relu_of_bn_plus_residual():
    torch.manual_seed(0)
    bn = SyncBatchNorm(3, activation="relu")
    ref = torch.nn.BatchNorm2d(3)
    x, r = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    for train in (True, False):
        bn.train(train), ref.train(train)
        assert torch.equal(bn(x, r), torch.relu(ref(x) + r)), f"training={train}"
    assert torch.equal(bn.running_mean, ref.running_mean)


@pytest.mark.parametrize("bad, error", [
    ({"activation": "gelu"}, ValueError),
])
def test_bad_activation(bad, error):
    with pytest.raises(error, match="activation must be None or 'relu'"):
        SyncBatchNorm(3, **bad)


def test_broadcast_residual_is_added_as_torch_adds_it():
    torch.manual_seed(0)
    bn, ref = SyncBatchNorm(3, activation="relu"), torch.nn.BatchNorm2d(3)
    x, r = torch.randn(4, 3, 5, 5), torch.randn(3, 1, 1)
    assert torch.equal(bn(x, r), torch.relu(ref(x) + r))


@pytest.mark.parametrize("residual, match", [
    (torch.randn(4, 3, 5, 5, dtype=torch.float64), "residual must have the input's dtype"),
    ([1.0], "residual must be a torch.Tensor"),
])
def test_bad_residual(residual, match):
    bn = SyncBatchNorm(3, activation="relu")
    with pytest.raises((TypeError, ValueError), match=match):
        bn(torch.randn(4, 3, 5, 5), residual)
