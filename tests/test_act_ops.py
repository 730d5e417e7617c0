"""The fused activation's two ops on CPU (the definition every implementation
is tested against, ops/act.py): batch_norm_elemt_act against float64
relu(bn(x) + residual) and bitwise against the unfused ops in the input's
dtype; batch_norm_backward_reduce_relu's grad_sum against threshold_backward
and its sums against float64; bad arguments named."""
import pytest
import torch

from npu_syncbn import ops
from npu_syncbn.ops import reference as ref

LAYOUTS = {"ncl": ((4, 3, 7, 9), None), "channels_last": ((4, 6, 5, 7), torch.channels_last), "2d": ((37, 13), None)}
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _data(layout, dtype, seed=0):
    shape, fmt = LAYOUTS[layout]
    g = torch.Generator().manual_seed(seed)
    x, r, dy = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))
    if fmt is not None:
        x, r, dy = (t.contiguous(memory_format=fmt) for t in (x, r, dy))
    c = shape[1]
    mean, invstd = torch.randn(c, generator=g) * 0.2, torch.rand(c, generator=g) + 0.5
    return x, r, dy, torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g), mean, invstd


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("residual,relu", [(True, True), (True, False), (False, True)])
def test_elemt_act_is_relu_of_bn_plus_residual(layout, dtype, residual, relu):
    x, r, _, w, b, mean, invstd = _data(layout, dtype)
    y = ops.batch_norm_elemt_act(x, w, b, mean, invstd, 1e-5, r if residual else None, relu)
    unfused = ops.batch_norm_elemt(x, w, b, mean, invstd, 1e-5)
    if residual:
        unfused = unfused + r
    if relu:
        unfused = torch.relu(unfused)
    assert torch.equal(y, unfused)  # the same roundings as op by op
    truth = ref.batch_norm_elemt_act(x, w, b, mean, invstd, r if residual else None, relu)
    assert (y.double() - truth).abs().max() <= TOL[dtype] * truth.abs().max().clamp_min(1)
    if LAYOUTS[layout][1] is not None:
        assert y.is_contiguous(memory_format=LAYOUTS[layout][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_backward_reduce_relu_gates_by_the_output(layout, dtype):
    x, r, dy, w, b, mean, invstd = _data(layout, dtype, seed=1)
    y = ops.batch_norm_elemt_act(x, w, b, mean, invstd, 1e-5, r, True)
    sum_dy, sum_dy_xmu, gw, gb, grad_sum = ops.batch_norm_backward_reduce_relu(dy, y, x, mean, invstd, w, True, True, True)
    assert torch.equal(grad_sum, torch.ops.aten.threshold_backward(dy, y, 0))
    assert 0 < int((grad_sum == 0).sum()) < grad_sum.numel()  # the mask really cut something
    t_dy, t_xmu, t_gw, t_gb, t_sum = ref.batch_norm_backward_reduce_relu(dy, y, x, mean, invstd)
    for got, truth in ((sum_dy, t_dy), (sum_dy_xmu, t_xmu), (gw, t_gw), (gb, t_gb)):
        assert (got.double() - truth).abs().max() <= 1e-4 * truth.abs().max().clamp_min(1)


def test_nan_passes_relu_and_its_gradient():
    x = torch.tensor([1.0, float("nan"), -2.0]).reshape(1, 1, 3)
    y = ops.batch_norm_elemt_act(x, None, None, torch.zeros(1), torch.ones(1), 1e-5, None, True)
    assert torch.isnan(y[0, 0, 1]) and y[0, 0, 2] == 0
    g = ops.batch_norm_backward_reduce_relu(torch.ones_like(x), y, x.nan_to_num(), torch.zeros(1), torch.ones(1), None,
                                            True, True, True)[4]
    assert g.flatten().tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, m, s: ops.batch_norm_elemt_act(x, None, None, m, s, 1e-5, torch.randn(2, 3), True),
         r"residual must have the input's shape \(2, 3, 4\), got \(2, 3\)"),
        (lambda x, m, s: ops.batch_norm_elemt_act(x, None, None, m, s, 1e-5, x.double(), True),
         r"residual must have the input's dtype torch.float32, got torch.float64"),
        (lambda x, m, s: ops.batch_norm_backward_reduce_relu(x, x[:1], x, m, s, None, True, True, True),
         r"output must have the input's shape"),
        (lambda x, m, s: ops.batch_norm_backward_reduce_relu(x, x.half(), x, m, s, None, True, True, True),
         r"output must have the input's dtype"),
    ],
)
def test_bad_arguments_are_named(call, match):
    x = torch.randn(2, 3, 4)
    with pytest.raises((ValueError, TypeError), match=match):
        call(x, torch.zeros(3), torch.ones(3))
