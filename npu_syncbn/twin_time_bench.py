"""Modelled Ascend time of each op per layout, dtype and shape, against its HBM floor.

``python -m npu_syncbn.twin_bench --time [--json PATH] [--explain] [--quick]``

Each op runs once in the twin with the timing model on, in time-only mode
(the kernels' control flow, tiling, copies and instructions as on an NPU; the
per-element arithmetic skipped), with the host tiling and launch sequence of
``op_kernels/host/bn_ops.h`` (the twin's ops share it). A row's
``modelled_us`` is the device time of the op: its kernels as the model plays
them, plus per launch the kernel start, the fill kernels of its zeroed
outputs and the tiling's host-to-device copy; ``host_us`` the host's work
(dispatch, launch calls, allocations, the blocking tiling upload).
``floor_us`` is the op's minimum activation bytes (stats 1 read, elemt 1
read + 1 write, backward_reduce 2 reads, backward_elemt 2 reads + 1 write)
over the SoC's HBM bandwidth. ``--explain`` plays every row three times
more (without PIPE_ALL barriers; without them and the scalar unit's stalls;
without the 512-byte granule rule) and reports what each costs. A model from published per-core figures, not a hardware
measurement (docs/ascend_timing.md).
"""
from __future__ import annotations

import json
from typing import Dict, Iterable, List, Sequence, Tuple

import torch

from . import twin, twin_timing

RESNET50 = ((64, 112, 112), (64, 56, 56), (256, 56, 56), (128, 28, 28), (512, 28, 28), (256, 14, 14),
            (1024, 14, 14), (512, 7, 7), (2048, 7, 7))
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OPS = ("stats", "elemt", "backward_reduce", "backward_elemt")
FLOOR_PASSES = {"stats": 1, "elemt": 2, "backward_reduce": 2, "backward_elemt": 3}
GATHER_WORLD = 8  # ranks whose statistics one gather row merges
# --explain: kernel time a cause costs = the kernel's time less its time
# played without it. "drain": PIPE_ALL and the scalar unit's stalls at
# GetValue / SetValue together (everything that empties the pipes).
EXPLAIN = {"pipe_all": ("pipe_all",), "drain": ("pipe_all", "scalar_stall"), "granule": ("granule",)}
_ACTIVATIONS = ("input", "grad_out", "output", "grad_input")

# What bn_ops.h does on the host around the kernels of each op, per path, in
# steady state: device allocations of the outputs (and of the (parts, C)
# partials when a reduction takes a merge launch), fill kernels (at::zeros /
# at::full, only for an empty batch: none here) and host-to-device copies
# (none: tilings, merge counts and the empty workspace are uploaded once per
# device and content, bn_ops.h DeviceConstant). The kernel launches themselves
# come from the twin's run. Kept in step with bn_ops.h by hand.
HOST_WORK = {
    ("stats", "row"): dict(allocs=2, fills=0, h2d=0),
    ("stats", "clast"): dict(allocs=2, fills=0, h2d=0),
    ("elemt", "row"): dict(allocs=1, fills=0, h2d=0),
    ("elemt", "clast"): dict(allocs=1, fills=0, h2d=0),
    ("backward_reduce", "row"): dict(allocs=4, fills=0, h2d=0),
    ("backward_reduce", "clast"): dict(allocs=4, fills=0, h2d=0),
    ("backward_elemt", "row"): dict(allocs=1, fills=0, h2d=0),
    ("backward_elemt", "clast"): dict(allocs=1, fills=0, h2d=0),
    ("gather", "row"): dict(allocs=2, fills=0, h2d=0),
}
MERGE_ALLOCS = 2  # the two (parts, C) partial tables of a two-launch reduction


def shapes(quick: bool = False) -> List[Tuple[Tuple[int, ...], str]]:
    """(shape, layout) of the table: ResNet-50's BatchNorm shapes at batch 32
    and 64 in NCHW and NHWC, a segmentation shape, a 3-D shape in NCDHW and
    NDHWC, two (N, C) heads. ``quick``: batch 32 only, no 3-D."""
    out = []
    for n in ((32,) if quick else (32, 64)):
        for c, h, w in RESNET50:
            out += [((n, c, h, w), "NCHW"), ((n, c, h, w), "NHWC")]
    out += [((8, 256, 128, 128), "NCHW"), ((8, 256, 128, 128), "NHWC")]
    if not quick:
        out += [((2, 64, 16, 56, 56), "NCDHW"), ((2, 64, 16, 56, 56), "NDHWC")]
    out += [((4096, 256), "NC"), ((256, 1024), "NC")]
    return out


def _tensor(shape, layout: str, dtype: torch.dtype) -> torch.Tensor:
    fmt = {"NHWC": torch.channels_last, "NDHWC": torch.channels_last_3d}.get(layout, torch.contiguous_format)
    return torch.empty(shape, dtype=dtype).contiguous(memory_format=fmt)  # time-only: never read


def run_op(op: str, x: torch.Tensor, dy: torch.Tensor, cores: int) -> None:
    """Runs twin op `op` (one of OPS, or "gather") once on x (and dy) on `cores` cores."""
    c = x.shape[1]
    w, m = torch.ones(c), torch.zeros(c)
    if op == "stats":
        twin.batch_norm_stats(x, 1e-5, block_dim=cores)
    elif op == "elemt":
        twin.batch_norm_elemt(x, w, m, m, w, 1e-5, block_dim=cores)
    elif op == "backward_reduce":
        twin.batch_norm_backward_reduce(dy, x, m, w, w, True, True, True, block_dim=cores)
    elif op == "backward_elemt":
        twin.batch_norm_backward_elemt(dy, x, m, w, w, m, m, torch.tensor([x.numel() // c]), block_dim=cores)
    else:  # gather: the statistics of GATHER_WORLD ranks
        stats = torch.ones(GATHER_WORLD, c)
        twin.batch_norm_gather_stats(x, stats, stats, torch.zeros(c), torch.ones(c), 0.1, 1e-5,
                                     torch.full((GATHER_WORLD,), 100.0), block_dim=cores)


def _smallest_activation_burst(traffic: Dict[str, object]) -> int:
    sizes = [s for k in _ACTIVATIONS for s in traffic["buffer_bursts"].get(k, {}).get("hist", {})]
    if not sizes:  # gather: no activation buffers
        sizes = [s for v in traffic["buffer_bursts"].values() for s in v["hist"]]
    return min(sizes) if sizes else 0


def _device_and_host(op: str, path: str, launches: List[Dict[str, object]], costs: Dict[str, float]):
    work = dict(HOST_WORK[(op, path)])
    kernels = len(launches)
    if kernels > 1:
        work["allocs"] += MERGE_ALLOCS
    device = (sum(l["us"] for l in launches) + kernels * costs["kernel_start_us"]
              + work["fills"] * costs["fill_kernel_us"] + work["h2d"] * costs["h2d_device_us"])
    host = (costs["op_dispatch_us"] + (kernels + work["fills"]) * costs["launch_host_us"]
            + work["allocs"] * costs["alloc_host_us"] + work["h2d"] * costs["h2d_host_us"])
    return device, host


def measure_op(op: str, shape, layout: str, dtype: str, cores: int, explain: bool = False) -> Dict[str, object]:
    """One row (see the module doc); raises ValueError / TwinError when the
    host tiling refuses the shape or a kernel breaks a rule."""
    x = _tensor(shape, layout, DTYPES[dtype])
    dy = _tensor(shape, layout, DTYPES[dtype]) if op.startswith("backward") else x
    with twin_timing.timing("time_only"):
        run_op(op, x, dy, cores)
        launches = twin_timing.last_op()
    traffic = twin.traffic()
    path = "row" if op == "gather" else twin.layout_of(x)[0]
    costs = twin_timing.host_costs()
    device, host = _device_and_host(op, path, launches, costs)
    peak = launches[0]["hbm_gbps"]
    act = x.numel() * x.element_size()
    floor_bytes = FLOOR_PASSES.get(op, 0) * act
    if op == "gather":  # (W, C) mean and invstd in, (C,) mean and invstd out
        floor_bytes = (2 * GATHER_WORLD + 2) * shape[1] * 4
    main = max(launches, key=lambda l: l["us"])
    kernel_us = sum(l["us"] for l in launches)
    gather_shape = [GATHER_WORLD, shape[1]]
    row = dict(op=op, layout="NC" if op == "gather" else layout, dtype=dtype,
               shape=gather_shape if op == "gather" else list(shape), path=path,
               modelled_us=device, kernel_us=kernel_us, host_us=host, floor_us=floor_bytes / peak / 1e3,
               hbm_gbps=floor_bytes / device / 1e3 if device else 0.0,
               moved_gbps=sum(l["hbm_bytes"] for l in launches) / kernel_us / 1e3 if kernel_us else 0.0,
               cores_used=main["busy_cores"], cores=cores, merge_us=kernel_us - launches[0]["us"],
               core_balance=main["mean_core_us"] / main["us"] if main["us"] else 1.0,
               smallest_burst_bytes=_smallest_activation_burst(traffic),
               busiest_pipe=max(main["pipe_us"], key=main["pipe_us"].get),
               busiest_pipe_us=max(main["pipe_us"].values()), barriers=main["barriers"],
               launches=[dict(kernel=l["kernel"], us=l["us"], cores=l["busy_cores"]) for l in launches],
               soc_hbm_gbps=peak)
    row["ratio"] = row["modelled_us"] / row["floor_us"] if row["floor_us"] else float("inf")
    if explain:
        for cause, switches in EXPLAIN.items():
            with twin_timing.timing("time_only", without=switches):
                run_op(op, x, dy, cores)
                without = sum(l["us"] for l in twin_timing.last_op())
            row[f"{cause}_us"] = kernel_us - without
    row["limit"] = limit_of(row)
    return row


def limit_of(row: Dict[str, object]) -> str:
    """The main reason a row is above its floor, in a word (a heuristic on the
    row's figures; --explain's what-if times are the measure)."""
    kernel = row["kernel_us"]
    if row["modelled_us"] - kernel > kernel:
        return "launch"
    if row["merge_us"] > 0.5 * kernel:
        return "merge launch"
    if row.get("pipe_all_us", 0) > 0.25 * kernel:
        return "PIPE_ALL"
    if row.get("drain_us", 0) > 0.25 * kernel:
        return "drains"
    if row.get("granule_us", 0) > 0.25 * kernel:
        return "short bursts"
    if row["cores_used"] < row["cores"] or row["core_balance"] < 0.85:
        return "cores idle"
    if row["moved_gbps"] > 0.8 * row["soc_hbm_gbps"]:
        return "HBM"
    return {"MTE2": "DMA in", "MTE3": "DMA out", "V": "vector", "S": "scalar"}[row["busiest_pipe"]]


def step_rows(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per (shape, layout, dtype) with all four ops: one SyncBatchNorm layer's
    training step (stats, gather, elemt, backward_reduce, backward_elemt; the
    two collectives not modelled). An op costs the larger of its device and
    host time; the floor is the four ops' activation floors."""
    by_key: Dict[tuple, Dict[str, Dict[str, object]]] = {}
    gathers = {(r["shape"][1], r["dtype"]): r for r in rows if r["op"] == "gather"}  # (W, C)
    for r in rows:
        if r["op"] in OPS:
            by_key.setdefault((tuple(r["shape"]), r["layout"], r["dtype"]), {})[r["op"]] = r
    out = []
    for (shape, layout, dtype), ops in by_key.items():
        if len(ops) < len(OPS):
            continue
        parts = [ops[o] for o in OPS] + ([gathers[(shape[1], dtype)]] if (shape[1], dtype) in gathers else [])
        step = sum(max(p["modelled_us"], p["host_us"]) for p in parts)
        floor = sum(ops[o]["floor_us"] for o in OPS)
        out.append(dict(op="step", layout=layout, dtype=dtype, shape=list(shape), modelled_us=step,
                        device_us=sum(p["modelled_us"] for p in parts), host_us=sum(p["host_us"] for p in parts),
                        floor_us=floor, ratio=step / floor, launches=sum(len(p["launches"]) for p in parts)))
    return out


def measure(shape_list: Iterable[Tuple[tuple, str]], dtypes: Sequence[str], cores: int, explain: bool = False,
            log=print) -> List[Dict[str, object]]:
    """Rows for every op of every (shape, layout) and dtype, one gather row
    per channel count and dtype; shapes the host tiling refuses are skipped
    with the reason printed through ``log``."""
    rows, gathered = [], set()
    for shape, layout in shape_list:
        for dtype in dtypes:
            for op in OPS + ("gather",):
                if op == "gather" and (shape[1], dtype) in gathered:
                    continue
                try:
                    rows.append(measure_op(op, shape, layout, dtype, cores, explain))
                except (ValueError, twin.TwinError) as exc:
                    log(f"skipped {op} {layout} {dtype} {tuple(shape)}: {exc}")
                    continue
                if op == "gather":
                    gathered.add((shape[1], dtype))
    return rows + step_rows(rows)


def format_table(rows: Sequence[Dict[str, object]], markdown: bool = False) -> str:
    ops = [r for r in rows if r["op"] != "step"]
    head = ["op", "layout", "dtype", "shape", "modelled us", "floor us", "ratio", "cores", "smallest burst B",
            "busiest pipe", "limit"]
    explain = any("pipe_all_us" in r for r in ops)
    if explain:
        head[-1:-1] = ["PIPE_ALL us", "drain us", "granule us"]
    body = []
    for r in ops:
        line = [r["op"], r["layout"], r["dtype"], "x".join(map(str, r["shape"])), f"{r['modelled_us']:.1f}",
                f"{r['floor_us']:.1f}", f"{r['ratio']:.2f}", f"{r['cores_used']}/{r['cores']}",
                str(r["smallest_burst_bytes"]), r["busiest_pipe"], r["limit"]]
        if explain:
            line[-1:-1] = [f"{r['pipe_all_us']:.1f}", f"{r['drain_us']:.1f}", f"{r['granule_us']:.1f}"]
        body.append(line)
    return _grid(head, body, markdown)


def format_steps(rows: Sequence[Dict[str, object]], markdown: bool = False) -> str:
    head = ["layout", "dtype", "shape", "step us", "device us", "host us", "floor us", "ratio", "launches"]
    body = [[r["layout"], r["dtype"], "x".join(map(str, r["shape"])), f"{r['modelled_us']:.1f}",
             f"{r['device_us']:.1f}", f"{r['host_us']:.1f}", f"{r['floor_us']:.1f}", f"{r['ratio']:.2f}",
             str(r["launches"])] for r in rows if r["op"] == "step"]
    return _grid(head, body, markdown)


def _grid(head: List[str], body: List[List[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*b) for b in body])


def main(args) -> int:
    """The --time run of twin_bench (its parsed arguments)."""
    dtypes = [args.dtype] if args.dtype_given else list(DTYPES)
    cores = args.cores or twin.soc()["vector_cores"]
    print(f"modelled Ascend time ({twin.soc()['name']}, {cores} cores, HBM {twin_timing.hbm_gbps():.0f} GB/s): "
          "a model from msKPP's per-core figures and stated guesses, not a measurement")
    rows = measure(shapes(args.quick), dtypes, cores, args.explain)
    print(format_table(rows, args.markdown))
    print()
    print("one SyncBatchNorm layer's training step (collectives not modelled)")
    print(format_steps(rows, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0

