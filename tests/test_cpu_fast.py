"""Fused CPU kernels (op_kernels/cpu, npu_syncbn/ops/cpu_fast.py) against the
float64 reference and against the aten fallback (NPU_SYNCBN_CPU_KERNELS=aten)."""
import pytest
import torch

import npu_syncbn  # noqa: F401  (registers the ops)
from npu_syncbn.ops import cpu_fast
from npu_syncbn.ops import reference as ref

OPS = torch.ops.npu_syncbn
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}

pytestmark = pytest.mark.skipif(cpu_fast.library() is None, reason="CPU kernel library not available (no g++?)")

SHAPES = [
    ((7, 1, 5, 3), None), ((4, 3, 5, 6), None), ((3, 64, 4, 5), None),            # NCHW
    ((4, 3, 5, 6), "cl"), ((3, 64, 4, 5), "cl"), ((2, 3, 2, 3, 4), "cl"),         # channels_last(_3d)
    ((9, 1), None), ((10, 3), None), ((33, 64), None),                            # 2-D
    ((5, 3, 7), None), ((2, 64, 300), None), ((2, 3, 2, 3, 4), None),             # 3-D, 5-D
    ((1, 2, 40000), None), ((3, 2, 200, 200), "cl"),                              # long planes / many rows
]


def _make(shape, fmt, dtype, seed=0, mean=0.3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + mean).to(dtype)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if fmt == "cl":
        mf = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x, dy = x.to(memory_format=mf), dy.to(memory_format=mf)
    return x, dy


def _err(got, want):
    return float((got.double() - want.double()).abs().max()) if want.numel() else 0.0


def _run_all(x, dy, w, b):
    c = x.shape[1]
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    y = OPS.batch_norm_elemt(x, w, b, mean, invstd, 1e-5)
    s1, s2, gw, gb = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True)
    count = torch.tensor([x.numel() // c, 5], dtype=torch.int32)
    dx = OPS.batch_norm_backward_elemt(dy, x, mean, invstd, w, s1, s2, count)
    return mean, invstd, y, s1, s2, gw, gb, dx, count


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv(cpu_fast.ENV, "fast")  # also float16


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("shape, fmt", SHAPES)
def test_fast_kernels_match_float64_and_aten(shape, fmt, dtype, monkeypatch, fast):
    x, dy = _make(shape, fmt, dtype)
    assert cpu_fast.layout(x) is not None  # the fast path is really taken
    c = shape[1]
    w = torch.linspace(0.5, 1.5, c)
    b = torch.linspace(-1, 1, c)
    mean, invstd, y, s1, s2, gw, gb, dx, count = _run_all(x, dy, w, b)
    tol = TOL[dtype]
    rm, ri = ref.batch_norm_stats(x, 1e-5)
    assert mean.dtype == invstd.dtype == torch.float32
    assert _err(mean, rm) <= tol * max(1.0, float(rm.abs().max()))
    assert _err(invstd, ri) <= tol * float(ri.abs().max())
    assert y.dtype == dtype and y.stride() == x.stride()
    assert _err(y, ref.batch_norm_elemt(x, w, b, mean, invstd)) <= tol * max(1.0, float(y.double().abs().max()))
    r1, r2, rgw, rgb = ref.batch_norm_backward_reduce(dy, x, mean, invstd)
    for got, want in ((s1, r1), (s2, r2), (gw, rgw), (gb, rgb)):
        assert got.dtype == torch.float32
        assert _err(got, want) <= tol * max(1.0, float(want.abs().max())) * 4
    assert dx.dtype == dtype and dx.stride() == x.stride()
    rdx = ref.batch_norm_backward_elemt(dy, x, mean, invstd, w, s1, s2, count)
    assert _err(dx, rdx) <= tol * max(1.0, float(rdx.abs().max())) * 4

    # The aten path accumulates long reductions less accurately (float32 partial
    # sums): the float64 checks above are the strict ones, this is consistency.
    monkeypatch.setenv(cpu_fast.ENV, "aten")
    assert cpu_fast.library() is None
    names = ("mean", "invstd", "y", "sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias", "dx")
    for name, got, want in zip(names, (mean, invstd, y, s1, s2, gw, gb, dx), _run_all(x, dy, w, b)):
        assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride(), name
        scale = max(1.0, float(want.double().abs().max()))
        rel = max(4 * tol, 1e-4) if name.startswith(("sum", "grad")) else 4 * tol
        assert _err(got, want) <= rel * scale, name


@pytest.mark.parametrize("fmt", [None, "cl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_mean_keeps_variance_and_gradient(fmt, dtype):
    """mean 1e4, std 1: the variance keeps ~1e-6 relative accuracy (float32
    data; bfloat16 data at mean 100, where its spacing is still below the
    std), and backward_elemt, in the (x - mean) form, does not cancel."""
    x, dy = _make((8, 6, 20, 20), fmt, dtype, seed=3, mean=1e4 if dtype == torch.float32 else 100.0)
    xd = x.double()
    var = xd.var(dim=(0, 2, 3), unbiased=False)
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    got_var = invstd.double() ** -2 - 1e-5
    assert float(((got_var - var) / var).abs().max()) < 2e-6
    assert float((mean.double() - xd.mean(dim=(0, 2, 3))).abs().max()) < 2e-3
    w = torch.ones(6)
    s1, s2, _, _ = OPS.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True)
    count = torch.tensor([x.numel() // 6])
    dx = OPS.batch_norm_backward_elemt(dy, x, mean, invstd, w, s1, s2, count)
    rdx = ref.batch_norm_backward_elemt(dy, x, mean, invstd, w, s1, s2, count)
    assert _err(dx, rdx) <= TOL[dtype] * max(1.0, float(rdx.abs().max())) * 4


def test_float32_stats_variance_is_accurate():
    g = torch.Generator().manual_seed(5)
    for shape, fmt in (((4, 3, 100000), None), ((16, 8, 56, 56), "cl"), ((256, 64), None), ((32, 16, 14, 14), None)):
        x = torch.randn(shape, generator=g, dtype=torch.float64).add_(1e4).float()
        if fmt:
            x = x.to(memory_format=torch.channels_last)
        dims = (0,) + tuple(range(2, x.dim()))
        var = x.double().var(dim=dims, unbiased=False)
        _, invstd = OPS.batch_norm_stats(x, 1e-5)
        assert float(((invstd.double() ** -2 - 1e-5) / var - 1).abs().max()) < 2e-6, shape


@pytest.mark.parametrize("make", [
    lambda x: x.permute(0, 1, 3, 2),            # strided view
    lambda x: x[:, :, 1:, :],                   # sliced
    lambda x: x.transpose(0, 1).contiguous().transpose(0, 1),  # C outermost
])
def test_non_contiguous_views_fall_back_and_stay_correct(make):
    base, dy0 = _make((4, 3, 6, 5), None, torch.float32, seed=6)
    x, dy = make(base), make(dy0)
    assert cpu_fast.layout(x) is None
    mean, invstd, y, s1, s2, gw, gb, dx, count = _run_all(x, dy, None, None)
    rm, ri = ref.batch_norm_stats(x, 1e-5)
    assert _err(mean, rm) < 1e-5 and _err(invstd, ri) < 1e-5
    assert _err(y, ref.batch_norm_elemt(x, None, None, mean, invstd)) < 1e-5
    rdx = ref.batch_norm_backward_elemt(dy, x, mean, invstd, None, s1, s2, count)
    assert _err(dx, rdx) < 1e-5


def test_grad_out_with_other_layout_falls_back():
    x, dy = _make((3, 8, 4, 5), "cl", torch.float32, seed=7)
    dy = dy.contiguous()
    assert cpu_fast.layout(x) is not None and cpu_fast.layout(dy) != cpu_fast.layout(x)
    mean, invstd, y, s1, s2, gw, gb, dx, count = _run_all(x, dy, None, None)
    r1, r2, _, _ = ref.batch_norm_backward_reduce(dy, x, mean, invstd)
    assert _err(s1, r1) < 1e-4 and _err(s2, r2) < 1e-4
    assert _err(dx, ref.batch_norm_backward_elemt(dy, x, mean, invstd, None, s1, s2, count)) < 1e-5


@pytest.mark.parametrize("fmt", [None, "cl"])
@pytest.mark.parametrize("dtype", list(TOL))
def test_nan_and_inf_propagate_per_channel(fmt, dtype, fast):
    x, dy = _make((3, 4, 5, 6), fmt, dtype, seed=8)
    x[0, 1, 2, 3] = float("nan")
    x[2, 2, 0, 0] = float("inf")
    x[1, 3, 1, 1], x[2, 3, 4, 5] = float("inf"), float("-inf")
    mean, invstd, y, s1, s2, gw, gb, dx, count = _run_all(x, dy, None, None)
    assert torch.isnan(mean[1]) and mean[2] == float("inf") and torch.isnan(mean[3])
    assert torch.isnan(invstd[1:]).all() and torch.isfinite(mean[0]) and torch.isfinite(invstd[0])
    for t in (y, dx):
        nan_channels = torch.isnan(t).transpose(0, 1).reshape(4, -1)
        assert not nan_channels[0].any() and nan_channels[1:].all()


def test_empty_and_float64_use_aten():
    x = torch.randn(0, 3, 4)
    mean, invstd = OPS.batch_norm_stats(x, 1e-5)
    assert mean.shape == (3,) and torch.equal(mean, torch.zeros(3))
    assert cpu_fast.layout(torch.randn(2, 3, 4, dtype=torch.float64)) is None


def test_threads_split_gives_the_same_results():
    x, dy = _make((8, 3, 64, 64), None, torch.float32, seed=9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run_all(x, dy, None, None)
        torch.set_num_threads(2)
        two = _run_all(x, dy, None, None)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert _err(a, b) <= 1e-5 * max(1.0, float(a.double().abs().max()))


@pytest.mark.parametrize("isa, cap", [("baseline", 0), ("avx2", 1)])
def test_lower_isa_builds_match_aten(isa, cap):
    """The baseline x86-64 and AVX2 variants (chosen on CPUs without AVX2 /
    AVX-512; the other tests run the best one this CPU has) in a fresh process."""
    import os
    import subprocess
    import sys

    code = (
        "import os, torch, npu_syncbn\n"
        "x = torch.randn(4, 5, 33, 7).bfloat16().to(memory_format=torch.channels_last)\n"
        "outs = []\n"
        "for k in ('fast', 'aten'):\n"
        "    os.environ['NPU_SYNCBN_CPU_KERNELS'] = k\n"
        "    for t in (x, x.float().contiguous(), x.half().contiguous()):\n"
        "        m, i = torch.ops.npu_syncbn.batch_norm_stats(t, 1e-5)\n"
        "        outs.append((m, i, torch.ops.npu_syncbn.batch_norm_elemt(t, None, None, m, i, 1e-5).float()))\n"
        "for a, b in zip(outs[:3], outs[3:]):\n"
        "    for u, v in zip(a, b):\n"
        "        assert float((u - v).abs().max()) < 3e-2, float((u - v).abs().max())\n"
        "os.environ['NPU_SYNCBN_CPU_KERNELS'] = 'fast'\n"
        f"assert npu_syncbn.ops.cpu_fast.library().nsb_isa() <= {cap}\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NPU_SYNCBN_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _float64_merge(mean, invstd, counts, eps):
    """Global mean/var by definition: a weighted mean of per-rank means, and
    the weighted mean of per-rank E[x²] minus the global mean² (float64)."""
    m, s, n = mean.double(), invstd.double(), counts.double()
    var = (s.pow(-2) - eps).clamp_min(0)
    keep = n > 0
    m, var, n = m[keep], var[keep], n[keep]
    g_mean = (n[:, None] * m).sum(0) / n.sum()
    g_var = (n[:, None] * (var + m * m)).sum(0) / n.sum() - g_mean**2
    return g_mean, g_var, n.sum()


@pytest.mark.parametrize("w, c", [(1, 3), (2, 64), (4, 1024)])
def test_gather_merge_matches_float64_and_updates_running_stats(w, c):
    g = torch.Generator().manual_seed(w * 100 + c)
    eps = 1e-5
    # Gathered rows as the Function slices them: [fingerprint | mean | invstd | count].
    rows = torch.empty(w, 4 + 2 * c + 1)
    rows[:, 4 : 4 + c] = torch.randn(w, c, generator=g) * 3 + 2
    rows[:, 4 + c : 4 + 2 * c] = torch.rand(w, c, generator=g) + 0.5
    rows[:, -1] = torch.randint(1, 50, (w,), generator=g).float()
    if w > 2:
        rows[1, 4:-1] = float("nan")  # an empty rank's row may hold anything
        rows[1, -1] = 0
    mean_rows, invstd_rows, counts = rows[:, 4 : 4 + c], rows[:, 4 + c : 4 + 2 * c], rows[:, -1]
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.1
    rm0, rv0 = rm.clone(), rv.clone()

    out = cpu_fast.gather_merge(mean_rows, invstd_rows, counts, rm, rv, 0.25, eps)
    assert isinstance(out, tuple)  # the C path took these strided rows

    g_mean, g_var, n = _float64_merge(mean_rows, invstd_rows, counts, eps)
    torch.testing.assert_close(out[0].double(), g_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1].double(), (g_var + eps).rsqrt(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rm.double(), 0.75 * rm0.double() + 0.25 * g_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rv.double(), 0.75 * rv0.double() + 0.25 * g_var * n / (n - 1), rtol=1e-5, atol=1e-6)


def test_gather_merge_reports_when_no_rank_has_samples():
    mean, invstd, counts = torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2)
    assert cpu_fast.gather_merge(mean, invstd, counts, None, None, 0.1, 1e-5) == cpu_fast.NO_POSITIVE_COUNT
    # The op answers it with the statistics of no data instead (test_ops.py).
    g_mean, _ = OPS.batch_norm_gather_stats_with_counts(torch.zeros(0, 3), mean, invstd, None, None, 0.1, 1e-5, counts)
    assert torch.equal(g_mean, torch.zeros(3))
