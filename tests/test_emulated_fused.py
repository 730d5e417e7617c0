"""The fused activation on the emulated npu device: our AscendC
batch_norm_elemt_act and batch_norm_backward_reduce_relu kernels, run in the
twin as an NPU runs them, against the unfused ops they replace (bitwise),
float64 formulas and BatchNorm + residual + ReLU on the global batch, with
their GM traffic counted: one pass per activation read or written."""
import pytest

import emulated_fused_scenarios as scenarios

TOL = 2e-5  # float32 against float64


def test_fused_ops_match_unfused_ops_float64_and_move_each_activation_once(ranks):
    for rank, bad in enumerate(ranks(2, "npu").run(scenarios.fused_ops_match_references)):
        assert not bad, f"rank {rank}:\n" + "\n".join(bad)


def test_fused_kernels_need_no_compiler_auto_sync(ranks):
    for rank, bad in enumerate(ranks(2, "npu").run(scenarios.fused_ops_without_compiler_auto_sync)):
        assert not bad, f"rank {rank}:\n" + "\n".join(bad)


def test_relu_keeps_nans_as_torch_does(ranks):
    seen = ranks(2, "npu").run(scenarios.relu_keeps_nans)[0]
    assert seen["y"] == ["1.0", "nan", "0.0", "0.0", "3.0"]
    assert seen["grad_sum"] == [1.0, 2.0, 0.0, 0.0, 5.0]


@pytest.mark.parametrize("layout", ["row", "channels_last", "2d"])
def test_fused_training_step_equals_global_batchnorm_and_saves_passes(ranks, layout):
    """11 activation passes for the whole step on our kernels (stats 1; elemt_act
    x, residual, y; backward_reduce_relu dy, y, x, grad_sum; backward_elemt
    grad_sum, x, dx) where the unfused step moved 8 in ours and 8 more in
    torch's add, relu and threshold_backward."""
    seen = ranks(2, "npu").run(scenarios.fused_step_equals_global_batchnorm, layout)
    for rank, s in enumerate(seen):
        fused = [k for k in s["kernels"] if "_act" in k or "_relu" in k]
        assert len(fused) == 2, (rank, s["kernels"])
        assert s["activation_passes"] == 11, (rank, s["kernels"], s["activation_passes"])
        for key in ("output", "grad_input", "grad_residual", "running_mean"):
            assert s[key] <= TOL, (rank, key, s[key])
        assert s["y_layout_kept"], rank
    for key in ("grad_weight", "grad_bias"):
        total = [sum(v) for v in zip(*(s[key] for s in seen))]
        ref = seen[0]["ref_" + key]
        assert max(abs(a - b) for a, b in zip(total, ref)) <= TOL * max(1.0, max(abs(v) for v in ref)), key
