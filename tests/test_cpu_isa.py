"""The instruction-set variants of the CPU kernels (baseline x86-64, AVX2,
AVX-512; op_kernels/cpu/syncbn_cpu.cpp): each one against float64 and
bitwise against the baseline variant, on sizes that are not multiples of the
vector width (tails of every length, NLC channel tiles with a ragged end,
blocks with an odd row), with NaN and Inf, in both layouts and the three
dtypes; and how a variant is chosen ($NPU_SYNCBN_CPU_ISA)."""
import ctypes
import os
import subprocess
import sys

import pytest
import torch

from npu_syncbn.ops import cpu_fast
from npu_syncbn.ops import reference as ref

pytestmark = pytest.mark.skipif(cpu_fast.library() is None, reason="CPU kernel library not available (no g++?)")

SUPPORTED = cpu_fast.supported_isas()
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = list(TOL)
# (shape, channels_last): NCL planes of 1, 7, 9, 67 and 196 (14x14) elements,
# one plane longer than a 4096-element partial sum (4099) and one longer than
# a statistics segment (33001), channels whose planes outgrow the statistics'
# two-pass head (40x9, 4x196); NLC rows of 3, 17, 33 (one 32-channel tile and
# one left over), 47, 100 and 300 channels, 129 and 257 rows (a block of 128
# and one more row, an odd-length last block), rows past the head block
# (67 rows of 70 channels: the four-row groups of the row loops end in a pair
# and a single row; 162 rows of 64 channels: whole rows of sums in registers
# after a 64-row head).
SHAPES = [
    ((5, 3, 1, 1), False), ((3, 17, 7), False), ((40, 3, 9), False), ((2, 5, 67), False), ((4, 6, 14, 14), False),
    ((2, 2, 4099), False), ((1, 2, 33001), False),
    ((3, 3, 43, 2), True), ((129, 17), False), ((3, 33, 5, 11), True), ((257, 47), False), ((2, 64, 3, 5), True),
    ((300, 100), False), ((2, 300, 5, 7), True), ((67, 70), False), ((2, 64, 9, 9), True),
]


def _ids(case):
    shape, cl = case
    return "x".join(map(str, shape)) + ("-cl" if cl else "")


def _variants():
    return [pytest.param(n, marks=pytest.mark.skipif(n not in SUPPORTED, reason=f"this CPU cannot run {n} "
                                                     f"(it runs {', '.join(SUPPORTED)})")) for n in cpu_fast.ISA_NAMES]


@pytest.fixture(autouse=True)
def _all_dtypes_and_restore_isa(monkeypatch):
    monkeypatch.setenv(cpu_fast.ENV, "fast")  # float16 too
    before = cpu_fast.isa()
    yield
    cpu_fast.select_isa(before)


def _data(shape, cl, dtype, seed, special=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.7).to(dtype)
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)  # a ReLU's output: its sign masks dy
    if special:  # channel 0: a NaN; channel 1 (if any): +Inf; dy: one NaN in the last channel
        rest = len(shape) - 2
        x[(-1, 0) + (-1,) * rest] = float("nan")
        if shape[1] > 1:
            x[(0, 1) + (0,) * rest] = float("inf")
        dy[(-1, shape[1] - 1) + (-1,) * rest] = float("nan")
    if cl:
        x, dy, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, dy, y))
    assert cpu_fast.layout(x) is not None
    return x, dy, y


def _reduce_relu(dy, y, x, mean, invstd):
    """nsb_backward_reduce_relu (the fused step's reduce): sums over g = (y <= 0 ? 0 : dy), g written to dz."""
    lib = cpu_fast.library()
    fn = lib.nsb_backward_reduce_relu
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 2 + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 6 + [ctypes.c_int]
    kind, n, c, l = cpu_fast.layout(x)
    C = x.shape[1]
    dz = torch.empty_like(x)
    out = [torch.empty(C) for _ in range(4)]
    rc = fn(dy.data_ptr(), y.data_ptr(), dz.data_ptr(), x.data_ptr(), cpu_fast.DTYPE_CODES[x.dtype], kind, n, c, l,
            mean.data_ptr(), invstd.data_ptr(), *(t.data_ptr() for t in out), torch.get_num_threads())
    assert rc == 0
    return (dz, *out)


def _run(x, dy, y):
    """Every kernel of the library on (x, dy, y): name -> output tensor."""
    c = x.shape[1]
    w = torch.linspace(0.5, 1.5, c)
    b = torch.linspace(-1, 1, c)
    mean, invstd = cpu_fast.stats(x, 1e-5)
    # Later kernels take finite per-channel inputs so that every lane of them is exercised.
    m, s = torch.nan_to_num(mean, 0.0, 0.0, 0.0), torch.nan_to_num(invstd, 1.0, 1.0, 1.0)
    out = {"mean": mean, "invstd": invstd, "y": cpu_fast.elemt(x, w, b, m, s)}
    out.update(zip(("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"), cpu_fast.backward_reduce(dy, x, m, s)))
    sd, sx = torch.nan_to_num(out["sum_dy"]), torch.nan_to_num(out["sum_dy_xmu"])
    out["dx"] = cpu_fast.backward_elemt(dy, x, m, s, w, sd, sx, float(x.numel() // c))
    out.update(zip(("dz", "relu_sum_dy", "relu_sum_dy_xmu", "relu_gw", "relu_gb"), _reduce_relu(dy, y, x, m, s)))
    return out


def _bits(t):
    t = t.contiguous()
    return t.view(torch.int32) if t.element_size() == 4 else t.view(torch.int16)


@pytest.mark.parametrize("isa", _variants())
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan-inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("case", SHAPES, ids=_ids)
def test_variant_is_bitwise_the_baseline(case, dtype, special, isa):
    shape, cl = case
    x, dy, y = _data(shape, cl, dtype, seed=len(shape) * 31 + shape[1], special=special)
    cpu_fast.select_isa("baseline")
    want = _run(x, dy, y)
    cpu_fast.select_isa(isa)
    assert cpu_fast.isa() == isa
    got = _run(x, dy, y)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].stride() == w.stride(), name
        same = _bits(got[name]) == _bits(w)
        assert bool(same.all()), f"{name}: {int((~same).sum())} of {w.numel()} values differ from the baseline's"
    if special:  # NaN and Inf reach their own channels only, as IEEE arithmetic says
        assert bool(torch.isnan(got["mean"][0])) and bool(torch.isnan(got["invstd"][0]))
        if shape[1] > 1:
            assert float(got["mean"][1]) == float("inf") and bool(torch.isnan(got["invstd"][1]))
        assert bool(torch.isnan(got["sum_dy"][-1]))
        if shape[1] > 2:
            assert bool(torch.isfinite(got["mean"][2:]).all()) and bool(torch.isfinite(got["sum_dy"][:-1]).all())


@pytest.mark.parametrize("isa", _variants())
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("case", SHAPES, ids=_ids)
def test_variant_matches_float64(case, dtype, isa):
    shape, cl = case
    x, dy, y = _data(shape, cl, dtype, seed=7 + shape[1])
    cpu_fast.select_isa(isa)
    got = _run(x, dy, y)
    tol = TOL[dtype]

    def close(name, want, scale=1.0):
        err = float((got[name].double() - want.double()).abs().max())
        assert err <= scale * tol * max(1.0, float(want.double().abs().max())), (name, err)

    rm, ri = ref.batch_norm_stats(x, 1e-5)
    close("mean", rm)
    close("invstd", ri)
    mean, invstd = got["mean"], got["invstd"]
    w = torch.linspace(0.5, 1.5, shape[1])
    close("y", ref.batch_norm_elemt(x, w, torch.linspace(-1, 1, shape[1]), mean, invstd))
    for name, want in zip(("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"),
                          ref.batch_norm_backward_reduce(dy, x, mean, invstd)):
        close(name, want, 4)
    count = torch.tensor([x.numel() // shape[1]])
    close("dx", ref.batch_norm_backward_elemt(dy, x, mean, invstd, w, got["sum_dy"], got["sum_dy_xmu"], count), 4)
    g = torch.where(y <= 0, torch.zeros_like(dy), dy)
    assert torch.equal(got["dz"], g)  # the gradient through the ReLU, exactly
    for name, want in zip(("relu_sum_dy", "relu_sum_dy_xmu"), ref.batch_norm_backward_reduce(g, x, mean, invstd)):
        close(name, want, 4)


def test_isa_names_and_selection():
    assert SUPPORTED[0] == "baseline" and SUPPORTED == cpu_fast.ISA_NAMES[: len(SUPPORTED)]
    assert cpu_fast.isa() in SUPPORTED
    for name in cpu_fast.ISA_NAMES:
        if name in SUPPORTED:
            cpu_fast.select_isa(name)
            assert cpu_fast.isa() == name
        else:
            with pytest.raises(cpu_fast.IsaError, match=f"cannot run it; it runs {', '.join(SUPPORTED)}"):
                cpu_fast.select_isa(name)
    with pytest.raises(cpu_fast.IsaError, match="expected one of baseline, avx2, avx512"):
        cpu_fast.select_isa("sse9")


def test_environment_forces_a_variant_or_names_the_error(monkeypatch):
    lib = cpu_fast.library()
    for value, want in (("", SUPPORTED[-1]), ("auto", SUPPORTED[-1]), (" Baseline ", "baseline")):
        cpu_fast.select_isa(SUPPORTED[-1])
        monkeypatch.setenv(cpu_fast.ISA_ENV, value)
        assert cpu_fast._isa_from_env(lib) is None
        assert cpu_fast.isa() == want
    monkeypatch.setenv(cpu_fast.ISA_ENV, "avx1024")
    err = cpu_fast._isa_from_env(lib)
    assert isinstance(err, cpu_fast.IsaError)
    assert "NPU_SYNCBN_CPU_ISA='avx1024': expected one of auto, baseline, avx2, avx512" in str(err)


def test_an_impossible_variant_fails_every_call_in_a_fresh_process():
    """What a user sees: the op raises the named error, no silent fallback."""
    code = "import torch, npu_syncbn\ntorch.ops.npu_syncbn.batch_norm_stats(torch.randn(4, 3, 5), 1e-5)"
    env = dict(os.environ, NPU_SYNCBN_CPU_ISA="avx1024")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "NPU_SYNCBN_CPU_ISA='avx1024': expected one of auto, baseline, avx2, avx512" in out.stderr, out.stderr[-2000:]


def test_info_reports_the_variant(monkeypatch):
    from npu_syncbn import info

    line = info._cpu_isa()
    assert line.split()[0] == SUPPORTED[-1] and f"this CPU runs {', '.join(SUPPORTED)}" in line, line
    monkeypatch.setenv(cpu_fast.ISA_ENV, "baseline")
    assert info._cpu_isa().startswith("baseline ($NPU_SYNCBN_CPU_ISA=baseline;")


@pytest.mark.parametrize("cl", [False, True], ids=["ncl", "nlc"])
def test_one_pass_statistics_keep_their_accuracy_when_the_head_is_off_center(cl):
    """The statistics shift every element by the mean of a head block (the first
    planes / rows). Here each sample has its own offset (50 * n) and the head
    sits at the low end: the variance still matches float64 to 2e-6."""
    n, c = 64, 130
    x = torch.randn(n, c, 6, 7, dtype=torch.float64) + 50.0 * torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1)
    x = x.float()
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, invstd = cpu_fast.stats(x, 0.0)
    xd = x.double()
    var = xd.var(dim=(0, 2, 3), unbiased=False)
    assert float(((invstd.double() ** -2 - var) / var).abs().max()) < 2e-6
    assert float(((mean.double() - xd.mean(dim=(0, 2, 3))) / xd.mean(dim=(0, 2, 3))).abs().max()) < 2e-6
