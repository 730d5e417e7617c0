"""GM traffic and burst sizes of the AscendC kernels per layout, measured in the twin.

Usage::

    python -m npu_syncbn.twin_bench                    # float32, 48 cores, the default shapes
    python -m npu_syncbn.twin_bench --dtype bfloat16 --cores 40 --markdown
    python -m npu_syncbn.twin_bench --time --json rows.json   # modelled Ascend time per op

For each layout (NCHW, NHWC, NDHWC, (N, C)) and each of the four (N, C, *)
kernels it runs the op once in the twin (npu_syncbn.twin) and prints the bytes
read and written on the activation-sized buffers (x, dy, y, dx) over the
activation's size (1.00 = one pass; an op reading x and dy shows 2.00), the
other bytes moved (per-channel parameters and outputs, the C-last partial rows
between an op's two launches), and the median and smallest GM burst (one
contiguous GM run of one copy) over the activation-sized buffers and over all
buffers. Bytes and bursts are what the twin counts on every
DataCopy / DataCopyPad, the same copies the kernels issue on an NPU.
With ``--time`` it prints instead the modelled Ascend time of every op per
layout, dtype and shape against its HBM floor (npu_syncbn.twin_time_bench).
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Sequence

import torch

from . import twin, twin_time_bench

# layout name -> (shape, memory format or None)
LAYOUTS = {
    "NCHW": ((8, 256, 14, 14), torch.contiguous_format),
    "NHWC": ((8, 256, 14, 14), torch.channels_last),
    "NDHWC": ((2, 256, 4, 7, 7), torch.channels_last_3d),
    "(N, C)": ((1568, 256), torch.contiguous_format),
}
KERNELS = ("stats", "elemt", "backward_reduce", "backward_elemt")
_ACTIVATIONS = ("input", "grad_out", "output", "grad_input")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _run(kernel: str, x: torch.Tensor, dy: torch.Tensor, cores: int) -> Dict[str, object]:
    twin_time_bench.run_op(kernel, x, dy, cores)
    return twin.traffic()


def measure(layouts: Optional[Dict[str, tuple]] = None, dtype: torch.dtype = torch.float32,
            cores: int = 48) -> List[Dict[str, object]]:
    """One row per (layout, kernel): ``layout``, ``shape``, ``kernel``, ``path``
    (row / clast), ``act_bytes``, ``act_read`` / ``act_written`` (bytes on the
    activation-sized buffers), ``other`` (bytes on every other buffer but the
    tiling, workspace rows included),
    ``median`` / ``smallest`` (burst bytes of the activation-sized buffers) and
    ``smallest_any`` (over every buffer)."""
    rows = []
    for name, (shape, fmt) in (layouts or LAYOUTS).items():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=fmt)
        dy = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=fmt)
        act = x.numel() * x.element_size()
        for kernel in KERNELS:
            t = _run(kernel, x, dy, cores)
            bufs = t["buffers"]
            act_read = sum(bufs[k]["read"] for k in _ACTIVATIONS if k in bufs)
            act_written = sum(bufs[k]["written"] for k in _ACTIVATIONS if k in bufs)
            moved = sum(v["read"] + v["written"] for k, v in bufs.items() if k != "tiling")
            hist: Dict[int, int] = {}
            for k in _ACTIVATIONS:
                for size, n in t["buffer_bursts"].get(k, {}).get("hist", {}).items():
                    hist[size] = hist.get(size, 0) + n
            act_bursts = twin.burst_summary(hist)
            rows.append(dict(layout=name, shape=tuple(shape), kernel=kernel, path=twin.layout_of(x)[0],
                             act_bytes=act, act_read=act_read, act_written=act_written,
                             other=moved - act_read - act_written,
                             median=act_bursts["median"], smallest=act_bursts["smallest"],
                             smallest_any=t["bursts"]["smallest"]))
    return rows


def format_table(rows: Sequence[Dict[str, object]], markdown: bool = False) -> str:
    head = ["layout", "kernel", "path", "read/act", "written/act", "other B", "median burst B",
            "smallest burst B", "smallest any B"]
    body = [[r["layout"], r["kernel"], r["path"], f"{r['act_read'] / r['act_bytes']:.2f}",
             f"{r['act_written'] / r['act_bytes']:.2f}", str(r["other"]), str(r["median"]), str(r["smallest"]),
             str(r["smallest_any"])] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npu_syncbn.twin_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                   help="float32 (the default), or with --time the one dtype to model (default: all three)")
    p.add_argument("--cores", type=int, default=None,
                   help="emulated vector cores (block_dim), default 48 (--time: the SoC's vector cores)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--time", action="store_true", help="modelled Ascend time per op, layout, dtype and shape")
    p.add_argument("--json", metavar="PATH", help="with --time: write the rows as JSON to PATH")
    p.add_argument("--explain", action="store_true",
                   help="with --time: also play each row without PIPE_ALL and without 512-byte granules")
    p.add_argument("--quick", action="store_true", help="with --time: batch 32 only, no 3-D shape")
    a = p.parse_args(argv)
    if a.time:
        a.dtype_given = a.dtype is not None
        return twin_time_bench.main(a)
    if a.json or a.explain or a.quick:
        p.error("--json, --explain and --quick go with --time")
    a.dtype = a.dtype or "float32"
    a.cores = a.cores or 48
    rows = measure(dtype=_DTYPES[a.dtype], cores=a.cores)
    print(f"twin GM traffic per kernel, {a.dtype}, {a.cores} cores; shapes: "
          + ", ".join(f"{k} {v[0]}" for k, v in LAYOUTS.items()))
    print(format_table(rows, a.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
