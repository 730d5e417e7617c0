"""Host tiling (op_kernels/host/tiling.cpp) through the twin library's C ABI:
every element covered exactly once by the kernels' own item->tile map, 32-byte
aligned UB rows, UB plan within 192 KiB, cores used only when they get work,
and the reducing kernels' channels cut into parts, one core a part (no barrier:
the host merges the parts), so that every core works when C < cores."""
import ctypes
import itertools

import pytest
import torch

from npu_syncbn import twin

UB = 192 * 1024
OPS = {"stats": 0, "elemt": 1, "backward_reduce": 2, "backward_elemt": 3}
DTYPES = {0: 4, 1: 2, 2: 2}  # BnDtype -> bytes
FIELDS = ("n c l tileRows tileLen tileStride tileElems lChunks tilesPerChannel totalItems unitItems itemsBase itemsRem "
          "dtype blockDim paramChunk reduceWorkElems splits packGroup ubBytes workspaceBytes").split()

SHAPES = [(1, 1, 1), (2, 13, 1), (64, 13, 1), (4, 3, 49), (1, 1, 70000), (2, 2, 70000), (3, 5, 7), (8, 32, 256),
          (1, 1, 100003), (5000, 3, 1), (7, 1, 9), (2, 300, 3), (1, 2, 49153)]
CORES = [1, 3, 8, 48]


def row_tiling(op, n, c, l, dtype, cores, ub=UB):
    out = (ctypes.c_uint64 * 21)()
    rc = twin.library().twin_row_tiling(op, n, c, l, dtype, cores, ub, out)
    if rc != 0:
        raise ValueError(twin.library().twin_last_error().decode())
    return dict(zip(FIELDS, list(out)))


def cover(op, n, c, l, dtype, cores):
    hits = torch.zeros(n * c * l, dtype=torch.int32)
    rc = twin.library().twin_tiling_cover(op, n, c, l, dtype, cores, UB, hits.data_ptr())
    assert rc == 0, twin.library().twin_last_error().decode()
    return hits


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_element_covered_once(op, dtype):
    for (n, c, l), cores in itertools.product(SHAPES, CORES):
        hits = cover(op, n, c, l, dtype, cores)
        assert hits.min().item() == 1 and hits.max().item() == 1, (n, c, l, cores)


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiling_properties(op, dtype):
    sz = DTYPES[dtype]
    shapes = SHAPES + [(256, 2048, 49), (32, 64, 3136), (1, 7, 10**7), (4096, 1, 1), (10**6, 48, 1)]
    for (n, c, l), cores in itertools.product(shapes, CORES + [2, 47]):
        t = row_tiling(op, n, c, l, dtype, cores)
        ctx = (n, c, l, cores, t)
        assert t["ubBytes"] <= UB, ctx
        assert t["tileStride"] * sz % 32 == 0 and t["tileStride"] >= t["tileLen"], ctx
        assert t["tileElems"] == t["tileRows"] * t["tileStride"], ctx
        assert 1 <= t["tileRows"] <= 4095, ctx
        g = t["packGroup"]
        row = g * l if g else l  # packed: a sample's rows of a group of g channels are one tile row
        assert t["tileRows"] == 1 or t["tileLen"] == row, ctx  # multi-row tiles hold whole rows
        assert t["lChunks"] * t["tileLen"] >= row > (t["lChunks"] - 1) * t["tileLen"], ctx
        reduces = op in (OPS["stats"], OPS["backward_reduce"])
        # the reducing kernels' unit is one part of one channel (or group); the elementwise ones' one tile
        groups = -(-c // g) if g else c
        units = t["splits"] * groups if reduces else t["totalItems"]
        assert (t["unitItems"], t["splits"] >= 1) == ((0, True) if reduces else (1, False)), ctx
        assert 1 <= t["blockDim"] <= min(cores, units), ctx
        assert t["itemsBase"] * t["blockDim"] + t["itemsRem"] == units, ctx
        if g:  # packed: short rows, at least a channel a core, whole channels, float rows a core in GM
            assert reduces and l * sz < (1024 if op == OPS["stats"] else 256) and c >= cores and t["splits"] == 1, ctx
            row_sets = 3 if op == OPS["stats"] else 2  # stats: K, d, M2 lanes; backward_reduce: two sums
            assert t["workspaceBytes"] == t["blockDim"] * -(-row_sets * g * l * 4 // 512) * 512, ctx
        else:
            assert t["workspaceBytes"] == 0, ctx
        if not reduces and n * c * l * sz >= 4 * cores * 8192:  # every core works when each can get 8 KiB tiles
            assert t["blockDim"] == cores, ctx
        if reduces:
            # the busiest core is within a quarter of the mean, or a few tiles of it (a merge launch, or
            # the read-back of a part, costs about that much)
            busiest = (t["itemsBase"] + (1 if t["itemsRem"] else 0)) * -(-t["tilesPerChannel"] // t["splits"])
            mean = groups * t["tilesPerChannel"] / cores
            assert busiest <= max(1.25 * mean, mean + 12), ctx
            assert t["splits"] <= t["tilesPerChannel"], ctx
            if c % cores == 0:
                assert t["splits"] == 1, ctx  # channels spread evenly: no merge launch


def busiest_share(t, cores):
    """Tiles of the busiest core over the mean tiles per core (1.0 = perfect balance)."""
    c, tiles = t["c"], t["tilesPerChannel"]
    per_unit = -(-tiles // t["splits"])
    return (t["itemsBase"] + (1 if t["itemsRem"] else 0)) * per_unit / (c * tiles / cores)


@pytest.mark.parametrize("n,c,l", [(32, 64, 112 * 112), (32, 64, 56 * 56), (2, 3, 70000), (64, 16, 3136), (2, 64, 16 * 56 * 56)])
def test_reducing_kernels_spread_few_channels_over_every_core(n, c, l):
    """C < cores or C not a multiple of the cores (C = 64 on 48 cores): channels
    are cut into parts so the busiest core does at most ~1.15x the mean work
    (whole channels per core would leave it at 2 channels against 1.33)."""
    for op in (OPS["stats"], OPS["backward_reduce"]):
        t = row_tiling(op, n, c, l, 0, 48)
        assert t["blockDim"] == 48 and t["splits"] > 1, t
        assert busiest_share(t, 48) <= 1.15, t


def test_tiles_fill_the_ub_for_large_inner():
    t = row_tiling(OPS["elemt"], 1, 1, 10**7, 0, 1)
    assert t["lChunks"] > 1 and t["tileRows"] == 1
    assert t["ubBytes"] > UB * 0.9  # a long row uses (almost) all of the UB


def test_row_stride_beyond_uint32_copies_one_row_at_a_time():
    """A channel's rows lie C*L elements apart; DataCopyPad takes that stride
    as a uint32 of bytes, so past 4 GiB a tile holds one row."""
    for op in OPS.values():
        t = row_tiling(op, 4, 300000, 2000, 0, 48)  # rows 2.4 GiB apart in float32
        assert t["tileRows"] > 1, t  # under the limit: several rows a copy
        t = row_tiling(op, 4, 600000, 2000, 0, 48)  # rows 4.8 GiB apart
        assert t["tileRows"] == 1, t


def test_small_ub_is_respected():
    for ub in (16 * 1024, 64 * 1024):
        t = row_tiling(OPS["backward_elemt"], 4, 3, 5000, 0, 8, ub)
        assert t["ubBytes"] <= ub


def test_tiling_refuses_bad_arguments():
    with pytest.raises(ValueError, match="core count"):
        row_tiling(0, 2, 3, 4, 0, 0)
    with pytest.raises(ValueError, match="core count"):
        row_tiling(0, 2, 3, 4, 0, 49)
    with pytest.raises(ValueError, match="dtype"):
        row_tiling(0, 2, 3, 4, 7, 8)
    with pytest.raises(ValueError, match="empty"):
        row_tiling(0, 0, 3, 4, 0, 8)


@pytest.mark.parametrize("c,world,cores", [(1, 1, 48), (13, 4, 8), (2048, 64, 48), (100000, 3, 7), (5, 10000, 2)])
def test_gather_tiling(c, world, cores):
    out = (ctypes.c_uint64 * 8)()
    assert twin.library().twin_gather_tiling(c, world, cores, UB, out) == 0
    tc, tw, base, rem, block_dim, chunk, count_chunk, ub = list(out)
    assert (tc, tw) == (c, world)
    assert 1 <= block_dim <= min(cores, c)
    assert base * block_dim + rem == c and rem < block_dim
    assert ub <= UB and chunk % 8 == 0 and chunk >= 8 and count_chunk >= 8
