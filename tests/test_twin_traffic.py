"""GM bytes per launch equal the minimum passes: each big tensor read once,
each output written once (counted by the twin on every DataCopy/DataCopyPad)."""
import pytest
import torch

from npu_syncbn import twin

SHAPES = [(4, 3, 7, 9), (37, 13), (2, 1, 70000), (1, 8, 12, 12)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def nbytes(t):
    return t.numel() * t.element_size()


@pytest.mark.parametrize("cores", [1, 3, 48])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_minimum_passes(shape, dtype, cores):
    c = shape[1]
    x, dy = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    m, s, w = torch.zeros(c), torch.ones(c), torch.ones(c)

    twin.batch_norm_stats(x, 1e-5, block_dim=cores)
    t = twin.traffic()
    assert t["buffers"]["input"] == {"read": nbytes(x), "written": 0}
    assert t["read"] == nbytes(x) and t["written"] == 2 * c * 4

    twin.batch_norm_elemt(x, w, None, m, s, 1e-5, block_dim=cores)
    b = twin.traffic()["buffers"]
    assert b["input"] == {"read": nbytes(x), "written": 0}
    assert b["output"] == {"read": 0, "written": nbytes(x)}
    cores_used = twin.traffic()["block_dim"]
    # per-channel params: each core reads its channel range; on the C-last path (2-D input) every
    # core's rows hold all channels, so each core reads all of them (tests/test_twin_clast.py)
    most = c * 4 * cores_used if twin.layout_of(x)[0] == twin.CLAST else c * 4 + cores_used * 4
    for p in ("weight", "mean", "invstd"):
        assert c * 4 <= b[p]["read"] <= most and b[p]["written"] == 0

    twin.batch_norm_backward_reduce(dy, x, m, s, w, True, True, True, block_dim=cores)
    b = twin.traffic()["buffers"]
    assert b["grad_out"]["read"] == nbytes(x) and b["input"]["read"] == nbytes(x)
    for o in ("sum_dy", "sum_dy_xmu", "grad_weight", "grad_bias"):
        assert b[o] == {"read": 0, "written": c * 4}

    twin.batch_norm_backward_elemt(dy, x, m, s, w, m, m, torch.tensor([5]), block_dim=cores)
    b = twin.traffic()["buffers"]
    assert b["grad_out"]["read"] == nbytes(x) and b["input"]["read"] == nbytes(x)
    assert b["grad_input"] == {"read": 0, "written": nbytes(x)}


@pytest.mark.parametrize("op", ["stats", "backward_reduce"])
def test_reducing_kernels_keep_each_channel_on_one_core(op):
    """C=3 on 8 cores with 25 KB a channel, too little to cut into parts: three
    cores reduce one whole channel each, nothing meets in a workspace (no
    cross-core barrier that could deadlock), x read once. (Cut channels meet in
    a merge launch instead: tests/test_tiling.py, test_twin_ops.py.)"""
    x = torch.randn(64, 3, 100)
    m, s = torch.zeros(3), torch.ones(3)
    if op == "stats":
        twin.batch_norm_stats(x, 1e-5, block_dim=8)
    else:
        twin.batch_norm_backward_reduce(torch.randn_like(x), x, m, s, None, True, True, True, block_dim=8)
    t = twin.traffic()
    assert t["block_dim"] == 3
    assert t["buffers"]["workspace"] == {"read": 0, "written": 0}
    assert t["buffers"]["input"]["read"] == nbytes(x)


def test_elementwise_kernels_still_split_a_channel_over_cores():
    # 256 KB of one channel: eight cores get tiles of at least 8 KiB each (the
    # tiling cuts no tile smaller for the sake of more cores)
    x = torch.randn(64, 1, 1000)
    twin.batch_norm_elemt(x, None, None, torch.zeros(1), torch.ones(1), 1e-5, block_dim=8)
    assert twin.traffic()["block_dim"] == 8
    x = torch.randn(64, 1, 100)  # 25 KB: three 8 KiB tiles, so not every core
    twin.batch_norm_elemt(x, None, None, torch.zeros(1), torch.ones(1), 1e-5, block_dim=8)
    assert 1 < twin.traffic()["block_dim"] < 8
