"""The five torch.ops.npu_syncbn ops against float64 formulas, and their fake kernels."""
import pytest
import torch

import npu_syncbn  # noqa: F401  (registers the ops)
from npu_syncbn.ops import reference as ref

OPS = torch.ops.npu_syncbn
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}
STATS_DTYPE = {torch.float64: torch.float64, torch.float32: torch.float32, torch.float16: torch.float32, torch.bfloat16: torch.float32}
SHAPES = [(6, 3), (4, 3, 5), (3, 4, 5, 6), (2, 3, 2, 3, 4), (5, 1, 7), (3, 13, 2, 2), (0, 3, 4), (1, 2, 1, 1)]


def _close(got, want, dtype, what, scale=None):
    """|got - want| within a few ulps of ``dtype`` at magnitude ``scale`` (default max(1, |want|))."""
    if scale is None:
        scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    err = float((got.double() - want).abs().max()) if want.numel() else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3e} > {TOL[dtype] * scale:.3e}"


def _inputs(shape, dtype, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x, dy = x.to(memory_format=fmt), dy.to(memory_format=fmt)
    return x, dy


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_ops_match_float64(shape, dtype):
    x, _ = _inputs(shape, dtype)
    c = shape[1]
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    assert mean.dtype == invstd.dtype == STATS_DTYPE[dtype] and mean.shape == (c,)
    rm, ri = ref.batch_norm_stats(x, 1e-5)
    _close(mean, rm, dtype, "mean")
    _close(invstd, ri, dtype, "invstd")

    w = torch.linspace(0.5, 1.5, c)
    b = torch.linspace(-1, 1, c)
    y = OPS.batch_norm_elemt(x, w, b, mean, invstd, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    # y = x*scale + shift (as local BatchNorm computes it): rounding is relative to |x*scale|.
    mag = max(1.0, float(x.double().abs().max() * (invstd.double() * 1.5).abs().max())) if x.numel() else 1.0
    _close(y, ref.batch_norm_elemt(x, w, b, mean, invstd), dtype, "elemt", mag)
    _close(OPS.batch_norm_elemt(x, None, None, mean, invstd, 1e-5), ref.batch_norm_elemt(x, None, None, mean, invstd), dtype, "elemt no affine", mag)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_ops_match_float64(shape, dtype):
    x, dy = _inputs(shape, dtype, seed=1)
    c = shape[1]
    sd = STATS_DTYPE[dtype]
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    w = torch.linspace(0.5, 1.5, c, dtype=sd)
    sum_dy, sum_dy_xmu, gw, gb = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True)
    r = ref.batch_norm_backward_reduce(dy, x, mean, invstd)
    for got, want, what in zip((sum_dy, sum_dy_xmu, gw, gb), r, ("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias")):
        _close(got, want, dtype, what)
    assert sum_dy.dtype == sd and gw.dtype == w.dtype

    # Global count: this batch plus one other rank's 7 elements per channel.
    count = torch.tensor([x.numel() // c, 7], dtype=torch.int32)
    dx = OPS.batch_norm_backward_elemt(dy, x, mean, invstd, w, sum_dy, sum_dy_xmu, count)
    assert dx.dtype == dtype and dx.shape == x.shape
    _close(dx, ref.batch_norm_backward_elemt(dy, x, mean, invstd, w, sum_dy, sum_dy_xmu, count), dtype, "backward_elemt")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 8, 4, 5), (2, 3, 2, 3, 4)])
def test_channels_last_ops_keep_layout_and_values(shape, dtype):
    x, dy = _inputs(shape, dtype, channels_last=True, seed=2)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    _close(mean, ref.batch_norm_stats(x, 1e-5)[0], dtype, "mean")
    y = OPS.batch_norm_elemt(x, None, None, mean, invstd, 1e-5)
    assert y.is_contiguous(memory_format=fmt)
    _close(y, ref.batch_norm_elemt(x, None, None, mean, invstd), dtype, "elemt")
    s1, s2, _, _ = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, None, True, False, False)
    count = torch.tensor([x.numel() // shape[1]])
    dx = OPS.batch_norm_backward_elemt(dy, x, mean, invstd, None, s1, s2, count)
    assert dx.is_contiguous(memory_format=fmt)
    _close(dx, ref.batch_norm_backward_elemt(dy, x, mean, invstd, None, s1, s2, count), dtype, "backward_elemt")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gather_merges_ranks_and_updates_running_stats(dtype):
    g = torch.Generator().manual_seed(3)
    parts = [torch.randn(n, 4, 3, generator=g, dtype=torch.float64).to(dtype) * (i + 1) + i for i, n in enumerate((5, 0, 2, 9))]
    stats = [OPS.batch_norm_stats(p, 1e-5) for p in parts]
    mean = torch.stack([s[0] for s in stats])
    invstd = torch.stack([s[1] for s in stats])
    counts = torch.tensor([p.shape[0] * 3 for p in parts], dtype=dtype)
    rm, rv = torch.zeros(4, dtype=dtype) + 0.5, torch.ones(4, dtype=dtype) * 2
    want = ref.batch_norm_gather_stats_with_counts(mean, invstd, counts, 1e-5, rm, rv, 0.3)
    gm, gi = OPS.batch_norm_gather_stats_with_counts(parts[0], mean, invstd, rm, rv, 0.3, 1e-5, counts)
    for got, exp, what in zip((gm, gi, rm, rv), want, ("mean", "invstd", "running_mean", "running_var")):
        _close(got, exp, dtype, what)
    # Independent truth: the statistics of the concatenated batch.
    whole = torch.cat(parts).double()
    _close(gm, whole.mean(dim=(0, 2)), dtype, "mean vs concatenated batch")
    _close(gi, (whole.var(dim=(0, 2), unbiased=False) + 1e-5).rsqrt(), dtype, "invstd vs concatenated batch")


def test_gather_is_stable_for_large_mean():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2, 8, 3, 1000, generator=g, dtype=torch.float64) + 1e4
    halves = [X[0].float(), X[1].float()]
    stats = [OPS.batch_norm_stats(h, 1e-5) for h in halves]
    rv = torch.zeros(3)
    OPS.batch_norm_gather_stats_with_counts(
        halves[0], torch.stack([s[0] for s in stats]), torch.stack([s[1] for s in stats]),
        None, rv, 1.0, 1e-5, torch.tensor([8000.0, 8000.0]),
    )
    truth = torch.cat(halves).double().transpose(0, 1).reshape(3, -1).var(dim=1)
    assert float(((rv.double() - truth).abs() / truth).max()) < 1e-3


@pytest.mark.parametrize("route", ["fast", "aten"])
def test_gather_of_all_empty_ranks_is_no_data(route, monkeypatch):
    """Every count 0: mean 0, invstd 1/sqrt(eps) (batch_norm_stats of an empty
    input), running stats untouched, whichever CPU route merges."""
    monkeypatch.setenv("NPU_SYNCBN_CPU_KERNELS", route)
    eps = 1e-3
    rm, rv = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 3.0])
    mean, invstd = OPS.batch_norm_gather_stats_with_counts(
        torch.zeros(0, 2), torch.randn(2, 2), torch.rand(2, 2) + 1, rm, rv, 0.1, eps, torch.zeros(2)
    )
    assert torch.equal(mean, torch.zeros(2))
    torch.testing.assert_close(invstd.double(), torch.full((2,), eps, dtype=torch.float64).rsqrt())
    assert torch.equal(rm, torch.tensor([0.5, -1.0])) and torch.equal(rv, torch.tensor([2.0, 3.0]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: OPS.batch_norm_stats(torch.randn(5), 1e-5), r"\(N, C, \*\)"),
        (lambda: OPS.batch_norm_stats(torch.randn(4, 3), 0.0), "eps"),
        (lambda: OPS.batch_norm_stats(torch.ones(4, 3, dtype=torch.int64), 1e-5), "float"),
        (lambda: OPS.batch_norm_elemt(torch.randn(4, 3), torch.ones(2), None, torch.zeros(3), torch.ones(3), 1e-5), r"weight must have shape \(3,\)"),
        (lambda: OPS.batch_norm_elemt(torch.randn(4, 3), None, torch.ones(4), torch.zeros(3), torch.ones(3), 1e-5), r"bias must have shape \(3,\)"),
        (lambda: OPS.batch_norm_gather_stats_with_counts(torch.randn(4, 3), torch.zeros(2, 3), torch.ones(2, 3), None, None, 1.5, 1e-5, torch.ones(2)), "momentum"),
        (lambda: OPS.batch_norm_gather_stats_with_counts(torch.randn(4, 3), torch.zeros(2, 3), torch.ones(2, 3), None, None, 0.1, 1e-5, torch.ones(3)), "counts"),
        (lambda: OPS.batch_norm_backward_reduce(torch.randn(4, 2), torch.randn(4, 3), torch.zeros(3), torch.ones(3), None, True, True, True), "grad_out"),
    ],
)
def test_ops_reject_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def _op_samples():
    x = torch.randn(3, 4, 5)
    dy = torch.randn(3, 4, 5)
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    w, b = torch.rand(4) + 0.5, torch.randn(4)
    s1, s2, _, _ = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True)
    return [
        (OPS.batch_norm_stats, (x, 1e-5)),
        (OPS.batch_norm_gather_stats_with_counts, (x, torch.stack([mean, mean]), torch.stack([invstd, invstd]), torch.zeros(4), torch.ones(4), 0.1, 1e-5, torch.tensor([15.0, 15.0]))),
        (OPS.batch_norm_elemt, (x, w, b, mean, invstd, 1e-5)),
        (OPS.batch_norm_backward_reduce, (dy, x, mean, invstd, w, True, True, True)),
        (OPS.batch_norm_backward_elemt, (dy, x, mean, invstd, w, s1, s2, torch.tensor([15], dtype=torch.int32))),
        (OPS.batch_norm_elemt_act, (x, w, b, mean, invstd, 1e-5, torch.randn(3, 4, 5), True)),
        (OPS.batch_norm_backward_reduce_relu, (dy, torch.randn(3, 4, 5).relu(), x, mean, invstd, w, True, True, True)),
    ]


@pytest.mark.parametrize("index", range(7))
def test_opcheck_schema_and_fake_kernels(index):
    """torch.library.opcheck: schema (incl. declared mutation), fake kernel vs real, no aliasing surprises."""
    op, args = _op_samples()[index]
    torch.library.opcheck(op.default, args, test_utils=("test_schema", "test_faketensor"))


def test_fake_tensor_mode_traces_every_op():
    from torch._subclasses.fake_tensor import FakeTensorMode

    samples = _op_samples()
    with FakeTensorMode() as mode:
        for op, args in samples:
            fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
            out = op(*fake_args)
            outs = out if isinstance(out, tuple) else (out,)
            assert all(o.device.type == "cpu" for o in outs)
        y = OPS.batch_norm_elemt(mode.from_tensor(torch.randn(2, 4, 3, dtype=torch.float16)), None, None, mode.from_tensor(torch.zeros(4)), mode.from_tensor(torch.ones(4)), 1e-5)
        assert y.dtype == torch.float16 and y.shape == (2, 4, 3)


def test_fake_kernels_validate_like_the_real_ones():
    """Tracing (fake tensors) and mixed devices fail with the same errors as eager calls."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.randn(2, 4, 3))
        with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
            OPS.batch_norm_elemt(x, mode.from_tensor(torch.ones(3)), None, mode.from_tensor(torch.zeros(4)), mode.from_tensor(torch.ones(4)), 1e-5)
        with pytest.raises(ValueError, match="eps"):
            OPS.batch_norm_stats(x, -1.0)
    with pytest.raises(ValueError, match="mean must be on the input's device"):
        OPS.batch_norm_elemt(torch.randn(2, 4, 3), None, None, torch.zeros(4, device="meta"), torch.ones(4, device="meta"), 1e-5)
