"""Property-based tests: the five ops against the float64 reference formulas
over random shapes (2-5 dims, zero batch included), strides (permuted and
sliced views, channels_last) and dtypes, with per-dtype tolerances.

Tolerances follow tests/test_ops.py: a few units in the last place of the
input dtype at the magnitude of the result, and for batch_norm_elemt at the
magnitude of x·scale, since it computes y = x·scale + shift as local BatchNorm
does (the rounding of x·scale dominates, not that of y); likewise for
batch_norm_backward_elemt at the magnitude of invstd·w·dy."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import npu_syncbn  # noqa: F401  (registers the ops)
from npu_syncbn.ops import reference as ref

OPS = torch.ops.npu_syncbn
EPS = 1e-5
TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = list(TOL)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _close(got, want, dtype, what, scale=None):
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if want.numel() == 0:
        return
    if scale is None:
        scale = max(1.0, float(want.abs().max()))
    err = float((got.double() - want).abs().max())
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3e} > {TOL[dtype] * scale:.3e}"


@st.composite
def strided_inputs(draw, n_tensors=2):
    """(dtype, layout, tensors): ``n_tensors`` tensors of one random (N, C, *)
    shape, all with the same random memory layout."""
    ndim = draw(st.integers(2, 5))
    shape = (draw(st.integers(0, 4)), draw(st.integers(1, 4))) + tuple(draw(st.integers(1, 3)) for _ in range(ndim - 2))
    dtype = draw(st.sampled_from(DTYPES))
    layouts = ["contiguous", "permuted", "sliced"] + (["channels_last"] if ndim in (4, 5) else [])
    layout = draw(st.sampled_from(layouts))
    perm = draw(st.permutations(range(ndim)))
    sliced_dim = draw(st.integers(0, ndim - 1))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_tensors):
        base = torch.randn(shape, generator=g, dtype=torch.float64) * (1.5 if i == 0 else 1.0) + (0.3 if i == 0 else 0.0)
        t = base.to(dtype)
        if layout == "permuted":  # stored in `perm` order, viewed back as `shape`
            inverse = [perm.index(d) for d in range(ndim)]
            t = t.permute(perm).contiguous().permute(inverse)
        elif layout == "sliced":  # every other element of a twice longer dim
            wide_shape = list(shape)
            wide_shape[sliced_dim] *= 2
            wide = torch.zeros(wide_shape, dtype=dtype)
            index = [slice(None)] * ndim
            index[sliced_dim] = slice(None, None, 2)
            wide[tuple(index)] = t
            t = wide[tuple(index)]
        elif layout == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last if ndim == 4 else torch.channels_last_3d)
        assert t.shape == shape and torch.equal(t.double(), base.to(dtype).double())
        out.append(t)
    return dtype, layout, out


def _stats_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@SETTINGS
@given(strided_inputs(1), st.booleans())
def test_forward_ops(data, affine):
    dtype, layout, (x,) = data
    c = x.shape[1]
    sd = _stats_dtype(dtype)
    mean, invstd = OPS.batch_norm_stats(x, EPS)
    assert mean.dtype == invstd.dtype == sd and mean.shape == (c,)
    rm, ri = ref.batch_norm_stats(x, EPS)
    _close(mean, rm, dtype, "mean")
    _close(invstd, ri, dtype, "invstd")

    w = torch.linspace(0.5, 1.5, c, dtype=sd) if affine else None
    b = torch.linspace(-1, 1, c, dtype=sd) if affine else None
    y = OPS.batch_norm_elemt(x, w, b, mean, invstd, EPS)
    assert y.dtype == dtype and y.shape == x.shape
    if layout == "channels_last" and x.numel():
        assert y.stride() == x.stride(), "channels_last input must give channels_last output"
    mag = max(1.0, float(x.double().abs().max() * (invstd.double() * 1.5).abs().max())) if x.numel() else 1.0
    _close(y, ref.batch_norm_elemt(x, w, b, mean, invstd), dtype, "elemt", mag)


@SETTINGS
@given(strided_inputs(2), st.booleans(), st.integers(0, 9))
def test_backward_ops(data, affine, other_count):
    dtype, layout, (x, dy) = data
    c = x.shape[1]
    sd = _stats_dtype(dtype)
    if x.numel() == 0 and other_count == 0:
        other_count = 3  # the global batch has at least one element
    mean, invstd = OPS.batch_norm_stats(x, EPS)
    w = torch.linspace(0.5, 1.5, c, dtype=sd) if affine else None
    sum_dy, sum_dy_xmu, gw, gb = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, affine, affine)
    want = ref.batch_norm_backward_reduce(dy, x, mean, invstd)
    for got, exp, what in zip((sum_dy, sum_dy_xmu, gw, gb), want, ("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias")):
        _close(got, exp, dtype, what)
    assert sum_dy.dtype == sd and gw.dtype == (w.dtype if affine else sd)

    count = torch.tensor([x.numel() // c, other_count], dtype=torch.int32)
    dx = OPS.batch_norm_backward_elemt(dy, x, mean, invstd, w, sum_dy, sum_dy_xmu, count)
    assert dx.dtype == dtype and dx.shape == x.shape
    if layout == "channels_last" and x.numel():
        assert dx.stride() == x.stride()
    # dx = a·dy + b·(x − mean) + shift with a = invstd·w: rounding is relative
    # to the largest term, |a·dy|, which exceeds |dx| when the terms cancel
    # (e.g. a single element: dx = 0 exactly, a·dy = −shift ≈ 316·dy).
    want_dx = ref.batch_norm_backward_elemt(dy, x, mean, invstd, w, sum_dy, sum_dy_xmu, count)
    a = invstd.double() * (w.double() if affine else 1.0)
    mag = max(1.0, float(want_dx.abs().max()), float(a.abs().max() * dy.double().abs().max())) if x.numel() else 1.0
    _close(dx, want_dx, dtype, "backward_elemt", mag)


@SETTINGS
@given(
    st.sampled_from([torch.float64, torch.float32]),
    st.lists(st.integers(0, 5), min_size=1, max_size=4).filter(lambda ns: sum(ns) > 0),
    st.integers(1, 4),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_gather_op(dtype, batch_sizes, c, momentum, seed):
    """Rows of per-rank stats (some ranks empty) merge to the statistics of the
    concatenated batch, and running stats get one momentum update."""
    g = torch.Generator().manual_seed(seed)
    parts = [(torch.randn(n, c, 3, generator=g, dtype=torch.float64) * (i + 1) + i).to(dtype) for i, n in enumerate(batch_sizes)]
    stats = [OPS.batch_norm_stats(p, EPS) for p in parts]
    mean = torch.stack([s[0] for s in stats])
    invstd = torch.stack([s[1] for s in stats])
    counts = torch.tensor([p.shape[0] * 3 for p in parts], dtype=dtype)
    rm, rv = torch.randn(c, generator=g, dtype=torch.float64).to(dtype), (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    want = ref.batch_norm_gather_stats_with_counts(mean, invstd, counts, EPS, rm, rv, momentum)
    gm, gi = OPS.batch_norm_gather_stats_with_counts(parts[0], mean, invstd, rm, rv, momentum, EPS, counts)
    for got, exp, what in zip((gm, gi), want, ("mean", "invstd")):
        _close(got, exp, dtype, what)
    _close(rm, want[2], dtype, "running_mean")
    if sum(batch_sizes) * 3 > 1:  # unbiased variance of a single element is inf/nan
        _close(rv, want[3], dtype, "running_var")
    whole = torch.cat(parts).double()
    _close(gm, whole.mean(dim=(0, 2)), dtype, "mean vs concatenated batch")
