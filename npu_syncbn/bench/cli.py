"""The ``npu-syncbn-bench`` command line: arguments, the run, printing and --json."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from .plans import BYTES_MODEL
from .report import format_floor, format_fused, format_kernels, format_memory, format_table, make_plot
from .world import MALLOC_TUNING, core_groups, rank_environment, run_world

DEFAULT_SHAPES: Tuple[Tuple[int, ...], ...] = ((16, 64, 56, 56), (32, 256, 14, 14), (256, 1024))
DTYPES = ("float32", "float16", "bfloat16", "float64")
SYNC_MODES = ("allgather", "allreduce", "auto")
PLOT_WORLD_SIZES = (1, 2, 4, 8)
PLOT_INSTALL_HINT = "pip install .[plot]  (or: pip install matplotlib)"


def parse_shape(text: str) -> Tuple[int, ...]:
    """'16,64,56,56' -> (16, 64, 56, 56): 2 to 5 positive ints (N, C, *)."""
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of ints like 16,64,56,56") from None
    if not 2 <= len(shape) <= 5:
        raise argparse.ArgumentTypeError(
            f"{text!r} has {len(shape)} dim(s); need N,C[,L[,H,W[,D]]] with 2 to 5 dims, e.g. 16,64,56,56 or 256,1024"
        )
    if any(s < 1 for s in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: every dim must be >= 1")
    return shape


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="npu-syncbn-bench",
        description="Time npu_syncbn.SyncBatchNorm (forward+backward, training) against local BatchNorm "
        "and the bare collectives, on W gloo ranks over loopback.",
    )
    p.add_argument("--shape", action="append", type=parse_shape, metavar="N,C[,*]",
                   help="per-rank input shape, repeatable (default: 16,64,56,56 32,256,14,14 256,1024)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="input dtype (default float32)")
    p.add_argument("--channels-last", action="store_true",
                   help="channels_last (4-D) / channels_last_3d (5-D) input and gradient; 2-D/3-D stay contiguous")
    p.add_argument("--world-size", type=_int_at_least(1), default=2, help="number of gloo ranks (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), default=1, help="torch threads per rank (default 1)")
    p.add_argument("--sync-mode", choices=SYNC_MODES, default="auto",
                   help="SyncBatchNorm(sync_mode=...) (default auto: the mode sending fewer bytes per rank)")
    p.add_argument("--reps", type=_int_at_least(1), default=30, help="timed repetitions per shape (default 30)")
    p.add_argument("--warmup", type=_int_at_least(0), default=5, help="untimed repetitions first (default 5)")
    p.add_argument("--no-fused", dest="fused", action="store_false",
                   help="skip the fused BN+add+ReLU variants (SyncBatchNorm(activation='relu')(x, residual) "
                        "against bn, +=, ReLU(inplace=True))")
    p.add_argument("--json", metavar="PATH", help="write every number to this JSON file")
    p.add_argument("--plot", metavar="PNG",
                   help=f"also run the first shape at world sizes {','.join(map(str, PLOT_WORLD_SIZES))} and plot "
                   f"step time and bytes/rank against world size (needs matplotlib: {PLOT_INSTALL_HINT})")
    p.add_argument("--plot-reps", type=_int_at_least(1), default=5,
                   help="repetitions per world size for --plot (default 5: world 8 is slow on few cores)")
    p.add_argument("--bind-cores", action="store_true",
                   help="pin rank i to its share of the cores, as npu-syncbn-run --bind_core=True does "
                        "(only when every rank can have --threads cores of its own)")
    p.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false",
                   help="run the ranks with glibc malloc's defaults (see MALLOC_TUNING; by default the bench "
                        "sets those variables for its ranks unless they are set already)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run of W ranks is abandoned (default 1800)")
    return p



def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL_HINT}")
    sync_mode = args.sync_mode
    shapes = args.shape or list(DEFAULT_SHAPES)
    cfg = {
        "shapes": [list(s) for s in shapes], "dtype": args.dtype, "channels_last": args.channels_last,
        "threads": args.threads, "sync_mode": sync_mode, "reps": args.reps, "warmup": args.warmup,
        "timeout": args.timeout, "malloc_tuning": args.malloc_tuning, "bind_cores": args.bind_cores,
        "fused": args.fused,
    }
    import torch

    print(f"npu_syncbn bench: torch {torch.__version__}, {args.world_size} gloo rank(s) on loopback, "
          f"{args.threads} thread(s)/rank, {os.cpu_count()} CPU(s), reps {args.reps} (interleaved), warmup {args.warmup}")
    from .. import shm

    print(f"CPU collectives: ${shm.ENV}={shm.mode()} "
          f"({'shared memory' if shm.wanted(args.world_size) else 'gloo'} for {args.world_size} rank(s) here)")
    from ..ops import cpu_fast

    try:
        isa = cpu_fast.isa() or "unavailable (aten composition)"
    except cpu_fast.IsaError as exc:
        print(f"npu-syncbn-bench: error: {exc}", file=sys.stderr)
        return 1
    print(f"CPU kernels: {isa} (${cpu_fast.ISA_ENV}={os.environ.get(cpu_fast.ISA_ENV, 'auto') or 'auto'}; "
          f"this CPU runs {', '.join(cpu_fast.supported_isas()) or 'none'})")
    cfg["cpu_isa"] = isa
    tuned = rank_environment(args.malloc_tuning)
    malloc = {k: os.environ.get(k, tuned.get(k)) for k in MALLOC_TUNING}
    groups = core_groups(args.bind_cores, args.world_size, args.threads)
    print("rank cores: " + (", ".join(f"rank {r}: {g}" for r, g in enumerate(groups)) if groups else
                            "not pinned" + (" (--bind-cores to pin)" if not args.bind_cores else
                                            f" (fewer than {args.world_size * args.threads} cores available)")))
    print("rank malloc settings: " + (", ".join(f"{k}={v}" for k, v in malloc.items() if v is not None)
                                       or "glibc defaults (--no-malloc-tuning)"))
    print("times: forward+backward per step in ms, median±IQR/2 over repetitions of the slowest rank; "
          "coll = the bare collectives of the same sizes")
    t0 = time.monotonic()
    try:
        rows = run_world(cfg, args.world_size)
    except RuntimeError as exc:
        print(f"npu-syncbn-bench: error: {exc}", file=sys.stderr)
        return 1
    print(format_table(rows))
    print("floor = 4 reads + 2 copies of the activation (= 6 reads + 2 writes, what any BatchNorm step moves), "
          "each pass timed on every rank at once in the same interleaved run:")
    print(format_floor(rows))
    kernels = format_kernels(rows)
    if kernels:
        print("C kernels alone (ctypes calls, outputs allocated beforehand), timed the same way: GB/s (over the "
              "copy's GB/s); step-kernels = wait (the slowest step's rank waiting for the peer at the two rendezvous, "
              "timed in C) and rest (median of step - wait, minus the kernels: Python, autograd, allocation):")
        print(kernels)
    fused = format_fused(rows)
    if fused:
        print("fused BN + add + ReLU (residual of the input's shape) against unfused bn, +=, ReLU(inplace=True):")
        print(fused)
    print(BYTES_MODEL)
    for r in rows:
        plan = ", ".join(f"{p['phase']} {p['collective']} of {p['numel']} {p['dtype']}" for p in r["collective_plan"])
        print(f"  {'x'.join(map(str, r['shape']))}: {plan} ({r['collective_plan_source']}; over {r['transport']})")
    print("memory kept for backward (unique storages saved by autograd; act = one input activation):")
    print(format_memory(rows))
    report: Dict[str, Any] = {
        "config": {k: v for k, v in cfg.items()} | {"world_size": args.world_size, "torch": torch.__version__,
                                                   "cpu_count": os.cpu_count()},
        "bytes_model": BYTES_MODEL,
        "timing_model": "per repetition the slowest rank's time; median/q1/q3/iqr over repetitions, milliseconds",
        "results": rows,
    }
    if args.plot:
        plot_cfg = dict(cfg, shapes=[list(shapes[0])], reps=args.plot_reps, warmup=min(args.warmup, 2))
        sweep = []
        for w in PLOT_WORLD_SIZES:
            try:
                sweep += run_world(plot_cfg, w)
            except RuntimeError as exc:
                print(f"npu-syncbn-bench: error: --plot at world size {w}: {exc}", file=sys.stderr)
                return 1
        print(f"scaling of {'x'.join(map(str, shapes[0]))} with world size ({args.plot_reps} reps each):")
        print(format_table(sweep))
        make_plot(sweep, args.plot)
        report["sweep"] = sweep
        print(f"plot written to {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"json written to {args.json}")
    print(f"total {time.monotonic() - t0:.1f} s")
    return 0

