"""The twin's Ascend timing model against hand-computed cases.

The planted kernels of op_kernels/twin/tests/timing_kernels.cpp do one thing
each (one copy, rows of a copy, a copy beside a vector op, streaming on many
cores, a SyncAll); the expected times are worked out here from the published
figures the model cites (msKPP's 910B1 per-core tables, at 1.8 GHz), not from
the model's code. Modelled time is a computation: asserting on it is
asserting on arithmetic, never on wall time.
"""
import json

import pytest
import torch

from npu_syncbn import twin, twin_bench, twin_time_bench, twin_timing

GIB = 2 ** 30 / 1e9  # bytes per ns in one GiB/s
CLOCK_GHZ = 1.8
# msKPP, GM -> UB on one 910B1 core: KiB -> GiB/s
MTE2 = {1: 7.29, 2: 13.48, 4: 23.60, 8: 42.74, 16: 67.99, 32: 77.19, 64: 77.05, 128: 78.49, 200: 78.56}
HBM_GBPS = 1600.0  # the model's stated figure for Ascend910B2
TILE = 32 * 1024


def table_ns(nbytes):
    """msKPP's time for one transfer of a table size."""
    return nbytes / (MTE2[nbytes // 1024] * GIB)


def kernel_ns(name, cores, nbytes, arg=0):
    with twin_timing.timing("on"):
        (launch,) = twin_timing.run_kernel(name, cores, nbytes, arg)
    return launch["us"] * 1e3, launch


@pytest.mark.parametrize("kib", [1, 8, 32, 128])
def test_one_transfer_costs_what_the_curve_says(kib):
    ns, launch = kernel_ns("one_copy", 1, 1 << 20, kib * 1024)
    assert ns == pytest.approx(table_ns(kib * 1024), rel=1e-9)
    assert launch["busy_cores"] == 1 and launch["hbm_bytes"] == kib * 1024


def test_a_transfer_below_one_kib_still_pays_the_latency():
    # below the table: its 1 KiB time less the missing bytes at the fit's 127 B/ns
    ns, _ = kernel_ns("one_copy", 1, 1 << 20, 512)
    assert ns == pytest.approx(table_ns(1024) - 512 / 127.0, rel=1e-9)
    assert ns > 118  # the fit's latency


def test_short_rows_cost_whole_512_byte_granules():
    # 64 rows of 128 B, 4 KiB apart: each row costs a 512-byte granule -> as 32 KiB
    short, _ = kernel_ns("rows", 1, 64 * 4096, 128)
    assert short == pytest.approx(table_ns(32 * 1024), rel=1e-9)
    assert short > 2 * table_ns(8 * 1024)  # the 8 KiB the rows hold, moved contiguously
    # rows of 2 KiB are whole granules: they cost their bytes (128 KiB)
    long_rows, _ = kernel_ns("rows", 1, 64 * 4096, 2048)
    assert long_rows == pytest.approx(table_ns(128 * 1024), rel=1e-9)


def vector_ns(cycles_per_repeat, nbytes):
    return max(3, cycles_per_repeat * (nbytes // 256) + 1) / CLOCK_GHZ


def test_independent_pipes_overlap_and_pipe_all_serialises():
    setup = 2 * vector_ns(1, TILE)  # two Duplicates, then a PIPE_ALL
    copy, div = table_ns(TILE), vector_ns(4, TILE)
    overlap, _ = kernel_ns("overlap", 1, 1 << 16)
    serial, _ = kernel_ns("pipe_all", 1, 1 << 16)
    assert overlap == pytest.approx(setup + max(copy, div), rel=1e-9)
    assert serial == pytest.approx(setup + copy + div, rel=1e-9)


def test_one_core_streams_at_its_own_rate():
    tiles = 16
    ns, _ = kernel_ns("stream", 1, tiles * TILE)
    assert ns == pytest.approx(tiles * table_ns(TILE), rel=1e-9)


def test_hbm_cap_binds_when_all_cores_stream():
    nbytes = 48 * 8 * TILE
    ns, launch = kernel_ns("stream", 48, nbytes)
    alone = 8 * table_ns(TILE)  # what each core would take with HBM to itself
    assert launch["busy_cores"] == 48 and launch["hbm_gbps"] == HBM_GBPS
    assert nbytes / ns <= HBM_GBPS * (1 + 1e-9)
    assert nbytes / ns > 0.85 * HBM_GBPS
    assert ns > 2 * alone  # 48 cores x 83 GB/s would be 2.5x the cap


def test_one_core_doing_all_the_work_is_cores_times_slower():
    # 8 cores x ~83 GB/s stay under the HBM cap: spreading the work gains 8x
    nbytes = 8 * 8 * TILE
    one, launch = kernel_ns("one_core_streams", 8, nbytes)
    spread, _ = kernel_ns("stream", 8, nbytes)
    assert launch["busy_cores"] == 1
    assert one / spread == pytest.approx(8, rel=0.02)


def test_queue_depth_decides_whether_copy_and_compute_overlap():
    copy, div = table_ns(TILE), vector_ns(4, TILE)
    single, _ = kernel_ns("queue_depth", 1, 8 * TILE, 1)
    double, _ = kernel_ns("queue_depth", 1, 8 * TILE, 2)
    assert single == pytest.approx(8 * (copy + div), rel=1e-9)  # each copy waits for the Div to free the buffer
    assert double == pytest.approx(8 * copy + div, rel=1e-9)  # the Divs hide under the next copies


def test_sync_all_waits_for_the_slowest_core():
    # core k streams k + 1 tiles, then SyncAll, then core 0 one more tile
    ns, launch = kernel_ns("sync_all", 4, 1 << 20)
    assert ns == pytest.approx(5 * table_ns(TILE), rel=1e-9)
    assert launch["barriers"] >= 1


def test_what_if_switches_take_the_cause_out():
    with twin_timing.timing("on", without=("pipe_all",)):
        (no_barrier,) = twin_timing.run_kernel("pipe_all", 1, 1 << 16)
    # both barriers gone: the Duplicates and the Div queue on V beside the copy
    expected = max(table_ns(TILE), 2 * vector_ns(1, TILE) + vector_ns(4, TILE))
    assert no_barrier["us"] * 1e3 == pytest.approx(expected, rel=1e-9)
    with twin_timing.timing("on", without=("granule",)):
        (rows,) = twin_timing.run_kernel("rows", 1, 64 * 4096, 128)
    assert rows["us"] * 1e3 < table_ns(16 * 1024)  # 8 KiB of rows no longer cost 32 KiB
    with pytest.raises(ValueError, match="without"):
        with twin_timing.timing("on", without=("nothing",)):
            pass


def _ops(x, dy):
    c = x.shape[1]
    w, m = torch.linspace(0.5, 1.5, c), torch.linspace(-1, 1, c)
    mean, invstd = twin.batch_norm_stats(x, 1e-5, block_dim=8)
    y = twin.batch_norm_elemt(x, w, m, mean, invstd, 1e-5, block_dim=8)
    sums = twin.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True, block_dim=8)
    dx = twin.batch_norm_backward_elemt(dy, x, mean, invstd, w, sums[0], sums[1],
                                        torch.tensor([x.numel() // c]), block_dim=8)
    return [mean, invstd, y, *sums, dx]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_timing_changes_no_result_and_time_only_times_the_same(fmt):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 40, 6, 9, generator=g).contiguous(memory_format=fmt)
    dy = torch.randn(4, 40, 6, 9, generator=g).contiguous(memory_format=fmt)
    plain = _ops(x, dy)
    with twin_timing.timing("on"):
        timed = _ops(x, dy)
        on = twin_timing.last_op()
    with twin_timing.timing("time_only"):
        _ops(x, dy)
        only = twin_timing.last_op()
    for a, b in zip(plain, timed):
        assert torch.equal(a, b)
    assert [l["us"] for l in on] == [l["us"] for l in only] and on[0]["us"] > 0


def test_bench_rows_never_beat_their_hbm_floor():
    logs = []
    rows = twin_time_bench.measure([((8, 64, 28, 28), "NCHW"), ((8, 64, 28, 28), "NHWC"), ((512, 96), "NC")],
                                   ["float32", "bfloat16"], 48, log=logs.append)
    ops = [r for r in rows if r["op"] != "step"]
    assert not logs
    assert {r["op"] for r in ops} == {"stats", "elemt", "backward_reduce", "backward_elemt", "gather"}
    for r in ops:
        assert r["floor_us"] > 0 and r["modelled_us"] >= r["floor_us"], r
        assert r["kernel_us"] * 1e3 * HBM_GBPS >= r["floor_us"] * 1e3 * HBM_GBPS * (1 - 1e-9) or r["op"] == "gather"
        assert 1 <= r["cores_used"] <= 48 and r["busiest_pipe"] in twin_timing.PIPES
    act = 8 * 64 * 28 * 28 * 4
    stats = next(r for r in ops if r["op"] == "stats" and r["dtype"] == "float32" and r["layout"] == "NCHW")
    assert stats["floor_us"] == pytest.approx(act / HBM_GBPS / 1e3)
    steps = [r for r in rows if r["op"] == "step"]
    assert len(steps) == 6 and all(s["ratio"] >= 1 for s in steps)


def test_odd_c_16_bit_heads_are_modelled():
    """(N, C) fp16 with an odd C near 256 once had no C-last plan; every op runs now."""
    logs = []
    rows = twin_time_bench.measure([((64, 255), "NC")], ["float16"], 48, log=logs.append)
    assert [r["op"] for r in rows if r["op"] != "step"] == ["stats", "elemt", "backward_reduce", "backward_elemt",
                                                            "gather"]
    assert logs == []


def test_an_op_the_twin_refuses_is_skipped_with_its_reason(monkeypatch):
    real = twin_time_bench.run_op

    def refuse_backward_elemt(op, x, dy, cores):
        if op == "backward_elemt":
            raise twin.TwinError("kernel 'batch_norm_backward_elemt': UB too small for one 32-byte row")
        return real(op, x, dy, cores)

    monkeypatch.setattr(twin_time_bench, "run_op", refuse_backward_elemt)
    logs = []
    rows = twin_time_bench.measure([((64, 255), "NC")], ["float16"], 48, log=logs.append)
    assert [r["op"] for r in rows if r["op"] != "step"] == ["stats", "elemt", "backward_reduce", "gather"]
    assert len(logs) == 1 and "skipped backward_elemt NC float16 (64, 255)" in logs[0] and "UB" in logs[0]


def test_time_cli_prints_the_table_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(twin_time_bench, "shapes", lambda quick=False: [((4, 32, 8, 8), "NHWC")])
    path = tmp_path / "rows.json"
    assert twin_bench.main(["--time", "--dtype", "float16", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "modelled us" in out and "floor us" in out and "training step" in out
    rows = json.loads(path.read_text())
    fields = {"op", "layout", "dtype", "shape", "modelled_us", "floor_us", "hbm_gbps", "cores_used",
              "smallest_burst_bytes", "busiest_pipe"}
    assert all(fields <= set(r) for r in rows if r["op"] != "step")
    assert {r["op"] for r in rows} == {"stats", "elemt", "backward_reduce", "backward_elemt", "gather", "step"}
