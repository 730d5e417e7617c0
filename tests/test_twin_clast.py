"""The C-last ("channel-inner") kernels on the twin: channels_last (NHWC),
channels_last_3d (NDHWC) and 2-D (N, C) input run without a layout copy,
against the float64 references (npu_syncbn/ops/reference.py); the layout
choice from the strides; the GM traffic (each activation-sized input read once
per pass, each output written once, the per-core partial rows between the two
launches of a reducing op and nothing else) and the GM burst sizes (>= 512 B
for C >= 128 float32); the C-last host tiling."""
import ctypes
import itertools
import math

import pytest
import torch

from npu_syncbn import twin
from npu_syncbn.ops import reference as ref
from test_twin_ops import EPS, TOL, close, data, params

CL, CL3 = torch.channels_last, torch.channels_last_3d
# (shape, memory format): ragged C, C < cores, C > one UB chunk, rows not divisible by cores
CASES = {
    "NHWC C=13": ((3, 13, 5, 7), CL),
    "NHWC C=3": ((2, 3, 9, 11), CL),
    "NHWC C=130": ((2, 130, 3, 5), CL),
    "NDHWC C=9": ((3, 9, 2, 3, 5), CL3),
    "NDHWC C=40": ((2, 40, 3, 2, 3), CL3),
    "NC C=13": ((37, 13), None),
    "NC C=1": ((50, 1), None),
    "NC C=6000": ((11, 6000), None),
}
CORES = [1, 3, 8, 48]
DTYPES = list(TOL)


def make(shape, fmt, dtype, mean=0.5, seed=0):
    x = data(shape, dtype, mean=mean, seed=seed)
    return x.contiguous(memory_format=fmt) if fmt is not None else x


def nbytes(t):
    return t.numel() * t.element_size()


def stats_tol(dtype):
    return torch.float32 if dtype == torch.float32 else torch.float16


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_layout_choice(case):
    shape, fmt = case
    x = make(shape, fmt, torch.float32)
    layout, seen = twin.layout_of(x)
    assert layout == twin.CLAST and seen is x  # no copy


def test_layout_choice_row_and_copies():
    x = data((2, 5, 4, 6), torch.float32)
    assert twin.layout_of(x)[0] == twin.ROW
    assert twin.layout_of(data((4, 1, 3, 3), torch.float32).contiguous(memory_format=CL))[0] == twin.ROW  # C=1: rows
    assert twin.layout_of(data((4, 8, 1, 1), torch.float32))[0] == twin.CLAST  # spatial 1: channels are the run
    sliced = data((2, 5, 4, 12), torch.float32)[..., ::2]  # not dense: one copy, then the row path
    layout, seen = twin.layout_of(sliced)
    assert layout == twin.ROW and seen.is_contiguous()
    t = data((13, 37), torch.float32).t()  # (37, 13) transposed: one copy, then C-last
    layout, seen = twin.layout_of(t)
    assert layout == twin.CLAST and seen.is_contiguous()


@pytest.mark.parametrize("cores", CORES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_all_four_ops(case, dtype, cores):
    shape, fmt = case
    c = shape[1]
    x, dy = make(shape, fmt, dtype), make(shape, fmt, dtype, mean=0.0, seed=5)
    w, b, m, s = params(c)

    mean, invstd = twin.batch_norm_stats(x, EPS, block_dim=cores)
    rm, rs = ref.batch_norm_stats(x, EPS)
    close(mean, rm, torch.float32, "mean")
    close(invstd, rs, torch.float32, "invstd")

    y = twin.batch_norm_elemt(x, w, b, m, s, EPS, block_dim=cores)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()  # x's memory format
    close(y, ref.batch_norm_elemt(x, w, b, m, s), dtype, "y")

    outs = twin.batch_norm_backward_reduce(dy, x, m, s, w, True, True, True, block_dim=cores)
    for name, o, e in zip(("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"), outs,
                          ref.batch_norm_backward_reduce(dy, x, m, s)):
        close(o, e, stats_tol(dtype), name)

    sum_dy, sum_dy_xmu = torch.randn(c) * 3, torch.randn(c) * 3
    count = torch.tensor([x.numel() // c, 17])
    dx = twin.batch_norm_backward_elemt(dy, x, m, s, w, sum_dy, sum_dy_xmu, count, block_dim=cores)
    assert dx.dtype == dtype and dx.stride() == x.stride()
    close(dx, ref.batch_norm_backward_elemt(dy, x, m, s, w, sum_dy, sum_dy_xmu, count), dtype, "dx")


def test_large_mean_shifted_sums():
    """|mean| = 1e4 >> std: shifted sums keep the variance (no E[x^2] - E[x]^2)."""
    x = (1e4 + torch.randn(64, 48, 5, 5, dtype=torch.float64)).float().contiguous(memory_format=CL)
    for cores in (1, 7, 48):
        _, invstd = twin.batch_norm_stats(x, 0.0, block_dim=cores)
        _, e = ref.batch_norm_stats(x, 0.0)
        assert ((invstd.double() ** -2 - e ** -2).abs() / e ** -2).max().item() < 1e-3
    dy = torch.randn(x.shape).contiguous(memory_format=CL)
    m, s = ref.batch_norm_stats(x, 0.0)
    outs = twin.batch_norm_backward_reduce(dy, x, m.float(), s.float(), None, True, False, False, block_dim=5)
    close(outs[1], ref.batch_norm_backward_reduce(dy, x, m.float(), s.float())[1], torch.float32, "sum_dy_xmu")


def test_grad_in_another_layout_and_optional_params():
    """dy contiguous while x is channels_last: dy is brought to x's layout."""
    x = make((3, 20, 4, 6), CL, torch.float32)
    dy = data((3, 20, 4, 6), torch.float32, seed=3)
    _, _, m, s = params(20)
    y = twin.batch_norm_elemt(x, None, None, m, s, EPS, block_dim=4)
    close(y, ref.batch_norm_elemt(x, None, None, m, s), torch.float32)
    outs = twin.batch_norm_backward_reduce(dy, x, m, s, None, True, False, True, block_dim=4)
    e = ref.batch_norm_backward_reduce(dy, x, m, s)
    assert outs[2] is None
    close(outs[0], e[0], torch.float32)
    close(outs[3], e[3], torch.float32)
    ones = torch.ones(20)
    dx = twin.batch_norm_backward_elemt(dy, x, m, s, None, ones, ones, torch.tensor([72]), block_dim=4)
    close(dx, ref.batch_norm_backward_elemt(dy, x, m, s, None, ones, ones, torch.tensor([72])), torch.float32)


# ---------------------------------------------------------------- traffic and bursts
TRAFFIC = [((4, 13, 7, 9), CL), ((2, 160, 3, 5), CL), ((2, 5, 3, 4, 5), CL3), ((37, 13), None), ((9, 1000), None)]


def workspace_ok(t, c):
    """The partial rows: written once by the first launch, read once by the merge."""
    for name, b in t["buffers"].items():
        if name.startswith("workspace."):
            assert b["written"] in (0, t["block_dim"] * c * 4) and b["read"] <= t["block_dim"] * c * 4, (name, b)


@pytest.mark.parametrize("cores", [1, 3, 48])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRAFFIC)
def test_minimum_passes(case, dtype, cores):
    shape, fmt = case
    c = shape[1]
    x, dy = make(shape, fmt, dtype), make(shape, fmt, dtype, seed=4)
    m, s, w = torch.zeros(c), torch.ones(c), torch.ones(c)

    twin.batch_norm_stats(x, 1e-5, block_dim=cores)
    t = twin.traffic()
    assert t["buffers"]["input"] == {"read": nbytes(x), "written": 0}
    assert t["read"] == nbytes(x) and t["written"] == 2 * c * 4
    workspace_ok(t, c)

    twin.batch_norm_elemt(x, w, None, m, s, 1e-5, block_dim=cores)
    t = twin.traffic()
    b = t["buffers"]
    assert b["input"] == {"read": nbytes(x), "written": 0}
    assert b["output"] == {"read": 0, "written": nbytes(x)}
    for p in ("weight", "mean", "invstd"):  # per-channel params: once per core
        assert b[p]["read"] == t["block_dim"] * c * 4 and b[p]["written"] == 0

    twin.batch_norm_backward_reduce(dy, x, m, s, w, True, True, True, block_dim=cores)
    t = twin.traffic()
    b = t["buffers"]
    assert b["grad_out"]["read"] == nbytes(x) and b["input"]["read"] == nbytes(x)
    assert t["read"] == 2 * nbytes(x) + t["block_dim"] * c * 4 + c * 4  # + mean per core, invstd once
    for o in ("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"):
        assert b[o] == {"read": 0, "written": c * 4}
    workspace_ok(t, c)

    twin.batch_norm_backward_elemt(dy, x, m, s, w, m, m, torch.tensor([5]), block_dim=cores)
    b = twin.traffic()["buffers"]
    assert b["grad_out"]["read"] == nbytes(x) and b["input"]["read"] == nbytes(x)
    assert b["grad_input"] == {"read": 0, "written": nbytes(x)}


def smallest_bursts_ok(t, what):
    """Every buffer's smallest burst is >= 512 B, or the whole buffer when smaller (a (W,) count)."""
    for name, b in t["buffer_bursts"].items():
        size = t["buffers"][name]["read"] + t["buffers"][name]["written"]
        assert b["smallest"] >= 512 or b["smallest"] * b["count"] == size < 512 * b["count"], (what, name, b)


@pytest.mark.parametrize("cores", [1, 5, 48])
@pytest.mark.parametrize("shape,fmt", [((4, 128, 5, 5), CL), ((3, 130, 2, 3, 3), CL3), ((40, 1000), None),
                                       ((6, 5000), None), ((97, 256), None)])
def test_bursts_at_least_512_bytes_for_c_from_128(shape, fmt, cores):
    c = shape[1]
    x, dy = make(shape, fmt, torch.float32), make(shape, fmt, torch.float32, seed=2)
    w, b, m, s = params(c)
    twin.batch_norm_stats(x, EPS, block_dim=cores)
    smallest_bursts_ok(twin.traffic(), "stats")
    twin.batch_norm_elemt(x, w, b, m, s, EPS, block_dim=cores)
    smallest_bursts_ok(twin.traffic(), "elemt")
    twin.batch_norm_backward_reduce(dy, x, m, s, w, True, True, True, block_dim=cores)
    smallest_bursts_ok(twin.traffic(), "backward_reduce")
    twin.batch_norm_backward_elemt(dy, x, m, s, w, m, s, torch.tensor([3, 4]), block_dim=cores)
    t = twin.traffic()
    smallest_bursts_ok(t, "backward_elemt")
    for big in ("grad_out", "input", "grad_input"):
        assert t["buffer_bursts"][big]["smallest"] >= 512
    assert t["bursts"]["median"] >= 512


def test_row_path_bursts_are_recorded():
    x = data((2, 3, 70), torch.float32)
    twin.batch_norm_elemt(x, None, None, torch.zeros(3), torch.ones(3), EPS, block_dim=1)
    t = twin.traffic()
    assert t["buffer_bursts"]["input"] == {"count": 6, "smallest": 280, "median": 280, "hist": {280: 6}}
    assert twin.burst_summary({4: 3, 512: 1}) == {"count": 4, "smallest": 4, "median": 4}


# ---------------------------------------------------------------- C-last host tiling
FIELDS = ("rows c chanChunk chunkStride chunks tileRows tileElems rowsBase rowsRem dtype blockDim countChunk rowGroup "
          "ubBytes").split()
UB = 192 * 1024


def clast_tiling(op, rows, c, dtype, cores, ub=UB):
    out = (ctypes.c_uint64 * 14)()
    rc = twin.library().twin_clast_tiling(op, rows, c, dtype, cores, ub, out)
    if rc != 0:
        raise ValueError(twin.library().twin_last_error().decode())
    return dict(zip(FIELDS, list(out)))


@pytest.mark.parametrize("op", range(4))
@pytest.mark.parametrize("dtype", [0, 1, 2])
def test_clast_tiling_properties(op, dtype):
    sz = 4 if dtype == 0 else 2
    for (rows, c), cores in itertools.product([(1, 1), (7, 13), (50176, 64), (100, 3000), (3, 100003), (10**6, 2048),
                                               (4096, 1), (10**5, 3), (999, 127), (999, 130)], [1, 3, 48]):
        t = clast_tiling(op, rows, c, dtype, cores)
        ctx = (rows, c, cores, t)
        assert t["ubBytes"] <= UB, ctx
        assert t["blockDim"] == min(cores, rows) and t["rowsBase"] * t["blockDim"] + t["rowsRem"] == rows, ctx
        assert t["chunkStride"] * sz % 32 == 0 and t["chunkStride"] >= t["chanChunk"], ctx
        assert t["chunks"] * t["chanChunk"] >= c > (t["chunks"] - 1) * t["chanChunk"], ctx
        g = t["rowGroup"]
        assert t["tileElems"] == -(-t["tileRows"] // g) * t["chunkStride"], ctx
        if c % (32 // sz) and c * sz < 512:  # a short ragged row: tiles pack, one burst each
            assert g == (32 // sz) // math.gcd(c, 32 // sz) and t["chunkStride"] == g * c and t["chunks"] == 1, ctx
            assert t["tileRows"] >= 1, ctx
        else:
            assert g == 1 and 1 <= t["tileRows"] <= 4095, ctx
        last = c - (t["chunks"] - 1) * t["chanChunk"]
        assert last * 2 >= t["chanChunk"] or t["chunks"] == 1, ctx  # no short remainder chunk
        if c * sz <= 2048:
            assert t["chunks"] == 1, ctx  # a whole row per burst when it fits


def test_clast_tiling_refuses_bad_arguments():
    with pytest.raises(ValueError, match="core count"):
        clast_tiling(0, 2, 3, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        clast_tiling(0, 0, 3, 0, 8)
    with pytest.raises(ValueError, match="dtype"):
        clast_tiling(0, 2, 3, 9, 8)


def test_burst_is_a_row_for_ragged_c_and_a_tile_for_aligned_c():
    """Ragged C of 512 B or more: each row lands 32-byte aligned in UB, one burst
    of C elements a row; C a multiple of 32 bytes: a tile's rows are contiguous
    on both sides, one burst; a shorter ragged C packs: one burst a tile."""
    for c, expect in ((130, 130 * 4), (16, 4 * 16 * 35 * 4), (13, 4 * 13 * 35 * 4)):
        x = make((4, c, 5, 7), CL, torch.float32)
        twin.batch_norm_elemt(x, None, None, torch.zeros(c), torch.ones(c), EPS, block_dim=1)
        t = twin.traffic()
        assert t["buffer_bursts"]["input"]["smallest"] == expect, t["buffer_bursts"]["input"]
        assert t["buffer_bursts"]["output"]["smallest"] == expect
