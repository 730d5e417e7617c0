"""npu_syncbn.twin_bench: traffic and burst sizes per layout and kernel."""
import torch

from npu_syncbn import twin_bench

SMALL = {
    "NCHW": ((2, 130, 3, 4), torch.contiguous_format),
    "NHWC": ((2, 130, 3, 4), torch.channels_last),
    "NDHWC": ((2, 130, 2, 2, 3), torch.channels_last_3d),
    "(N, C)": ((24, 130), torch.contiguous_format),
}


def test_one_pass_per_activation_and_bursts_per_layout():
    rows = twin_bench.measure(SMALL, cores=5)
    assert [(r["layout"], r["kernel"]) for r in rows] == [(l, k) for l in SMALL for k in twin_bench.KERNELS]
    passes = {"stats": (1, 0), "elemt": (1, 1), "backward_reduce": (2, 0), "backward_elemt": (2, 1)}
    for r in rows:
        assert (r["act_read"], r["act_written"]) == tuple(p * r["act_bytes"] for p in passes[r["kernel"]]), r
        assert r["path"] == ("row" if r["layout"] == "NCHW" else "clast")
        if r["path"] == "clast":
            assert r["smallest"] >= 512, r  # C = 130 float32
    text = twin_bench.format_table(rows, markdown=True)
    assert text.count("\n") == len(rows) + 1 and "| NHWC | stats | clast | 1.00 | 0.00 |" in text


def test_cli_prints_a_table(capsys):
    twin_bench.LAYOUTS, saved = SMALL, twin_bench.LAYOUTS
    try:
        assert twin_bench.main(["--cores", "3"]) == 0
    finally:
        twin_bench.LAYOUTS = saved
    out = capsys.readouterr().out
    assert "smallest burst B" in out and "(N, C)" in out
