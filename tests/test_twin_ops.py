"""The AscendC kernels on the CPU twin against the independent float64
reference (npu_syncbn/ops/reference.py): awkward shapes, 1/3/8/48 cores,
float32 / float16 / bfloat16, plus argument validation of the front."""
import math

import pytest
import torch

from npu_syncbn import twin
from npu_syncbn.ops import reference as ref

# Error allowed relative to each output's scale (max |ref|).
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
SHAPES = {
    "C=1": (4, 1, 6, 5),
    "C=3": (2, 3, 7, 9),
    "C=13": (3, 13, 5),
    "2D": (37, 13),
    "N=1": (1, 8, 12, 12),
    "L=1 C=1": (50, 1),
    # channels cut into parts on 48 cores (a merge launch): few long channels, C = 64
    "C=3 long": (2, 3, 20000),
    "C=64": (8, 64, 28, 28),
}
CORES = [1, 3, 8, 48]
DTYPES = list(TOL)
EPS = 1e-5


def close(out, expect, dtype, what=""):
    err = (out.double() - expect.double()).abs().max().item()
    scale = max(expect.double().abs().max().item(), 1e-30)
    assert err / scale <= TOL[dtype], f"{what}: error {err:.3g} on scale {scale:.3g}"


def data(shape, dtype, mean=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + mean).to(dtype)


def params(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(c, generator=g) + 0.5
    b = torch.randn(c, generator=g)
    m = torch.randn(c, generator=g)
    s = torch.rand(c, generator=g) + 0.5
    return w, b, m, s


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_stats(shape, dtype, cores):
    x = data(shape, dtype)
    mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=cores)
    assert mean.dtype == invstd.dtype == torch.float32 and mean.shape == (shape[1],)
    rm, rs = ref.batch_norm_stats(x, EPS)
    close(mean, rm, torch.float32, "mean")
    close(invstd, rs, torch.float32, "invstd")


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_elemt(shape, dtype, cores):
    x = data(shape, dtype)
    w, b, m, s = params(shape[1])
    y = twin.batch_norm_elemt(x, w, b, m, s, EPS, block_dim=cores)
    assert y.dtype == dtype and y.shape == x.shape
    close(y, ref.batch_norm_elemt(x, w, b, m, s), dtype)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_backward_reduce(shape, dtype, cores):
    x, dy = data(shape, dtype), data(shape, dtype, mean=0.0, seed=5)
    w, _, m, s = params(shape[1])
    outs = twin.batch_norm_backward_reduce(dy, x, m, s, w, True, True, True, block_dim=cores)
    for name, o, e in zip(("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"), outs,
                          ref.batch_norm_backward_reduce(dy, x, m, s)):
        assert o.dtype == torch.float32
        close(o, e, torch.float32 if dtype == torch.float32 else torch.float16, name)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_backward_elemt(shape, dtype, cores):
    x, dy = data(shape, dtype), data(shape, dtype, mean=0.0, seed=5)
    c = shape[1]
    w, _, m, s = params(c)
    sum_dy, sum_dy_xmu = torch.randn(c) * 3, torch.randn(c) * 3
    count = torch.tensor([x.numel() // c, 17], dtype=torch.int64)
    dx = twin.batch_norm_backward_elemt(dy, x, m, s, w, sum_dy, sum_dy_xmu, count, block_dim=cores)
    assert dx.dtype == dtype and dx.shape == x.shape
    close(dx, ref.batch_norm_backward_elemt(dy, x, m, s, w, sum_dy, sum_dy_xmu, count), dtype)


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("c", [1, 3, 13, 300])
def test_gather_stats(c, cores):
    g = torch.Generator().manual_seed(c)
    world = 4
    mean = torch.randn(world, c, generator=g) + 2
    invstd = torch.rand(world, c, generator=g) + 0.5
    counts = torch.tensor([100.0, 0.0, 7.0, 1.0])
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    expect = ref.batch_norm_gather_stats_with_counts(mean, invstd, counts, EPS, rm, rv, 0.1)
    x = torch.empty(2, c)
    gm, gi = twin.batch_norm_gather_stats(x, mean, invstd, rm, rv, 0.1, EPS, counts, block_dim=cores)
    for name, o, e in zip(("mean", "invstd", "running_mean", "running_var"), (gm, gi, rm, rv), expect):
        close(o, e, torch.float32, name)


def test_gather_stats_without_running_stats():
    mean, invstd = torch.randn(2, 5), torch.rand(2, 5) + 0.5
    counts = torch.tensor([3, 4])
    gm, gi = twin.batch_norm_gather_stats(torch.empty(1, 5), mean, invstd, None, None, 0.1, EPS, counts)
    e = ref.batch_norm_gather_stats_with_counts(mean, invstd, counts, EPS)
    close(gm, e[0], torch.float32)
    close(gi, e[1], torch.float32)


def test_gather_is_stable_for_large_means():
    """Per-rank mean 1e4, std 1, float32: Chan's merge keeps var within 1e-3."""
    world, c = 8, 16
    g = torch.Generator().manual_seed(0)
    mean = (1e4 + torch.randn(world, c, generator=g, dtype=torch.float64) * 0.5).float()
    invstd = torch.ones(world, c)
    counts = torch.full((world,), 4096.0)
    gm, gi = twin.batch_norm_gather_stats(torch.empty(1, c), mean, invstd, None, None, 0.1, 0.0, counts)
    _, e_invstd, _, _ = ref.batch_norm_gather_stats_with_counts(mean, invstd, counts, 0.0)
    var, e_var = gi.double() ** -2, e_invstd ** -2
    assert ((var - e_var).abs() / e_var).max().item() < 1e-3


def test_stats_is_stable_for_large_means():
    x = (1e4 + torch.randn(4, 3, 33, 31, dtype=torch.float64)).float()
    _, invstd = twin.batch_norm_stats(x, 0.0, block_dim=8)
    _, e = ref.batch_norm_stats(x, 0.0)
    assert ((invstd.double() ** -2 - e ** -2).abs() / e ** -2).max().item() < 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_inner_larger_than_ub(dtype):
    """A row of 70000 elements spans several tiles (and cores)."""
    x = data((2, 2, 70000), dtype)
    for cores in (1, 8):
        mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=cores)
        rm, rs = ref.batch_norm_stats(x, EPS)
        close(mean, rm, torch.float32)
        close(invstd, rs, torch.float32)
    w, b, m, s = params(2)
    close(twin.batch_norm_elemt(x, w, b, m, s, EPS, block_dim=5), ref.batch_norm_elemt(x, w, b, m, s), dtype)


def test_channels_last_and_optional_weight():
    x = data((3, 5, 4, 6), torch.float32).to(memory_format=torch.channels_last)
    _, _, m, s = params(5)
    y = twin.batch_norm_elemt(x, None, None, m, s, EPS)
    close(y, ref.batch_norm_elemt(x, None, None, m, s), torch.float32)
    dy = data((3, 5, 4, 6), torch.float32, seed=3)
    dx = twin.batch_norm_backward_elemt(dy, x, m, s, None, torch.ones(5), torch.ones(5), torch.tensor([72]))
    close(dx, ref.batch_norm_backward_elemt(dy, x, m, s, None, torch.ones(5), torch.ones(5), torch.tensor([72])),
          torch.float32)


def test_backward_reduce_outputs_not_asked_for_are_none():
    x = data((2, 3, 4), torch.float32)
    _, _, m, s = params(3)
    outs = twin.batch_norm_backward_reduce(x, x, m, s, None, False, True, False)
    assert outs[0] is None and outs[1] is None and outs[3] is None
    close(outs[2], ref.batch_norm_backward_reduce(x, x, m, s)[2], torch.float32)


def test_empty_input():
    mean, invstd = twin.batch_norm_stats(torch.empty(0, 3, 4), EPS)
    assert mean.tolist() == [0.0] * 3 and torch.allclose(invstd, torch.full((3,), EPS).rsqrt())
    assert twin.batch_norm_elemt(torch.empty(0, 3), None, None, torch.zeros(3), torch.ones(3), EPS).shape == (0, 3)


@pytest.mark.parametrize("bad", [0, 49, -1, 8.0, "8", True])
def test_block_dim_validated(bad):
    with pytest.raises(ValueError, match="block_dim"):
        twin.batch_norm_stats(torch.randn(2, 3), EPS, block_dim=bad)


def test_argument_errors_name_the_argument():
    x = torch.randn(4, 3, 5)
    with pytest.raises(TypeError, match="input must be float32, float16 or bfloat16"):
        twin.batch_norm_stats(x.double(), EPS)
    with pytest.raises(TypeError, match="input must be float32"):
        twin.batch_norm_stats(x.int(), EPS)
    with pytest.raises(ValueError, match=r"input must have shape \(N, C, \*\)"):
        twin.batch_norm_stats(torch.randn(5), EPS)
    with pytest.raises(ValueError, match=r"mean must have shape \(C,\) = \(3,\)"):
        twin.batch_norm_elemt(x, None, None, torch.zeros(4), torch.ones(3), EPS)
    with pytest.raises(TypeError, match="invstd is required"):
        twin.batch_norm_elemt(x, None, None, torch.zeros(3), None, EPS)
    with pytest.raises(ValueError, match="grad_out must match input"):
        twin.batch_norm_backward_reduce(torch.randn(4, 3, 6), x, torch.zeros(3), torch.ones(3), None, True, True, True)
    with pytest.raises(ValueError, match="counts must be"):
        twin.batch_norm_gather_stats(x, torch.zeros(2, 3), torch.ones(2, 3), None, None, 0.1, EPS, torch.ones(3))
    with pytest.raises(ValueError, match=r"mean must have shape \(W, C\)"):
        twin.batch_norm_gather_stats(x, torch.zeros(2, 4), torch.ones(2, 4), None, None, 0.1, EPS, torch.ones(2))
    with pytest.raises(ValueError, match="eps"):
        twin.batch_norm_stats(x, -1.0)


@pytest.mark.parametrize("dtype,offset", [(torch.float32, 1e4), (torch.float16, 100.0), (torch.bfloat16, 100.0)])
@pytest.mark.parametrize("shape", [(32, 5, 700), (8, 64, 49), (16, 96, 49), (2, 3, 70000)],
                         ids=["rows", "7x7", "7x7 packed", "cut"])
def test_stats_with_a_large_mean_keep_float32_precision(shape, dtype, offset):
    """|mean| >> std: the kernels' shifted sums (K = the mean of each part's
    first tile) keep the variance to float32 precision, on 48 cores (parts
    merged)."""
    if dtype == torch.float32:
        x = data(shape, dtype, mean=offset, seed=3)
    else:  # a smaller spread keeps 16-bit values distinct around the offset
        x = (data(shape, torch.float64, seed=3) / 3 + offset).to(dtype)
    mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=48)
    rm, rs = ref.batch_norm_stats(x, EPS)
    assert ((mean.double() - rm) / rm).abs().max().item() < 1e-6
    assert ((invstd.double() - rs) / rs).abs().max().item() < 2e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_stats_first_element_nan_or_tiny(dtype):
    """A NaN in a channel's first tile (which gives the shift K) makes that
    channel NaN, as aten; a subnormal there changes nothing."""
    x = data((4, 3, 50), dtype, seed=4)
    x[0, 1, 0] = float("nan")
    x[0, 2, 0] = 6e-8 if dtype == torch.float16 else 1e-40
    mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=4)
    rm, rs = ref.batch_norm_stats(x, EPS)
    assert torch.isnan(mean[1]) and torch.isnan(invstd[1])
    close(mean[[0, 2]], rm[[0, 2]], torch.float32, "mean")
    close(invstd[[0, 2]], rs[[0, 2]], torch.float32, "invstd")


PACKED = {  # (shape, cores): short rows, at least a channel a core
    "7x7 ragged group": ((32, 512, 7, 7), 48),
    "14x14": ((4, 96, 14, 14), 48),
    "L=5 C=300": ((3, 300, 5), 6),
    "L=2": ((16, 7, 2), 4),
    "one core": ((5, 9, 33), 1),
    "N=1": ((1, 600, 3), 2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,cores", PACKED.values(), ids=PACKED.keys())
def test_stats_packs_channels_of_short_rows(shape, dtype, cores):
    """Planes of under 1 KiB (7x7, 14x14) move a sample's group of channels as
    one burst and reduce per lane; the channels' results match float64, and a
    NaN stays in its own channel."""
    x = data(shape, dtype, mean=3.0, seed=5)
    x[-1, 1].view(-1)[-1] = float("nan")  # the last sample (not the shift's), channel 1
    mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=cores)
    t = twin.traffic()
    assert t["buffers"]["workspace"]["written"] > 0  # the packed kernel's per-lane rows
    # at most one burst per sample and group (not per sample and channel)
    assert t["buffer_bursts"]["input"]["count"] <= shape[0] * t["block_dim"] < shape[0] * shape[1]
    rm, rs = ref.batch_norm_stats(x, EPS)
    assert torch.isnan(mean[1]) and torch.isnan(invstd[1])
    keep = [i for i in range(shape[1]) if i != 1]
    close(mean[keep], rm[keep], torch.float32, "mean")
    close(invstd[keep], rs[keep], torch.float32, "invstd")


@pytest.mark.parametrize("asked", [(True, True, True), (False, True, False), (True, False, False)],
                         ids=["all", "grad_weight only", "sums only"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,cores", PACKED.values(), ids=PACKED.keys())
def test_backward_reduce_packs_channels_of_short_rows(shape, dtype, cores, asked):
    """backward_reduce on rows under 256 bytes: one burst of dy and of x per
    sample and group, per-lane sums against each lane's channel mean (longer
    rows keep the row plan); every output asked for matches float64 (and only
    those are written), and a NaN stays in its own channel."""
    x, dy = data(shape, dtype, mean=3.0, seed=6), data(shape, dtype, mean=0.0, seed=7)
    dy[-1, 1].view(-1)[-1] = float("nan")
    w, _, m, s = params(shape[1])
    m = m + 3.0  # near the data's mean, as in training
    outs = twin.batch_norm_backward_reduce(dy, x, m, s, w, *asked, block_dim=cores)
    t = twin.traffic()
    if math.prod(shape[2:]) * x.element_size() < 256:
        assert t["buffers"]["workspace"]["written"] > 0
        assert t["buffer_bursts"]["grad_out"]["count"] <= shape[0] * t["block_dim"] < shape[0] * shape[1]
    else:
        assert t["buffers"]["workspace"]["written"] == 0
    keep = [i for i in range(shape[1]) if i != 1]
    names = ("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias")
    wanted = (asked[0], asked[0], asked[1], asked[2])
    for name, want, o, e in zip(names, wanted, outs, ref.batch_norm_backward_reduce(dy, x, m, s)):
        if not want:
            assert o is None, name
            continue
        assert torch.isnan(o[1]), name
        close(o[keep], e[keep], torch.float32 if dtype == torch.float32 else torch.float16, name)
