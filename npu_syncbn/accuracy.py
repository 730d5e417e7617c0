"""Op-level accuracy comparison: every op, every available implementation,
against the float64 formulas of :mod:`npu_syncbn.ops.reference`.

Implementations: ``cpu`` (``torch.ops.npu_syncbn.<op>`` on CPU tensors),
``twin`` (the AscendC kernels on the CPU twin, :mod:`npu_syncbn.twin`) and
``npu`` (``torch.ops.npu_syncbn.<op>`` on an Ascend device; only where
torch_npu and an NPU are present). Inputs are rounded to the tested dtype
first and the reference runs on those rounded values, so the error measured
is the op's own.

Errors per output: ``max_abs`` = max |out - ref|; ``max_rel`` = max_abs /
max |ref| (relative to the output's scale, robust where ref crosses 0). A
case passes when max_rel <= the dtype's threshold on every output.

    python -m npu_syncbn.accuracy [--impl cpu,twin,npu] [--quick] [--json PATH]
    python -m npu_syncbn.accuracy --formulas     (formula accuracy at large |mean|/std)

Exit status 1 if any case fails (skipped implementations do not fail).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .ops import reference as ref

OPS = (
    "batch_norm_stats",
    "batch_norm_gather_stats_with_counts",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
    "batch_norm_elemt_act",
    "batch_norm_backward_reduce_relu",
)
# The ops npu_syncbn.twin binds; the fused activation's kernels run in the twin
# on the emulated npu device instead (``--impl npu`` under NPU_SYNCBN_EMULATE_NPU=1).
TWIN_OPS = OPS[:5]
IMPLS = ("cpu", "twin", "npu")

# Relative-to-scale error allowed per input dtype: a few output roundings of
# that dtype (outputs of half / bfloat16 inputs are stored in that dtype).
THRESHOLDS = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}

# name -> (shape, mean of the data); the awkward cases first.
SHAPES: Dict[str, Tuple[Tuple[int, ...], float]] = {
    "C=1": ((4, 1, 16, 16), 0.0),
    "C=3": ((2, 3, 7, 9), 0.5),
    "C=13": ((4, 13, 5, 5), -1.0),
    "2D (N,C)": ((64, 13), 0.0),
    "N=1": ((1, 8, 12, 12), 2.0),
    "inner>UB": ((2, 2, 70000), 1.0),
    "mean=1e4": ((4, 5, 9, 9), 1e4),
    "typical": ((8, 32, 16, 16), 0.0),
}
QUICK_SHAPES = ("C=1", "C=13", "2D (N,C)", "inner>UB", "mean=1e4")
EPS = 1e-5
MOMENTUM = 0.1
WORLD = 3


@dataclass
class Result:
    op: str
    impl: str
    shape: str
    dtype: str
    max_abs: Optional[float]
    max_rel: Optional[float]
    threshold: Optional[float]
    status: str  # PASS, FAIL, SKIP, ERROR
    note: str = ""


# ---------------------------------------------------------------- implementations
def _ns():
    import npu_syncbn  # noqa: F401  (registers torch.ops.npu_syncbn)

    return torch.ops.npu_syncbn


def _torch_op(op: str) -> Callable:
    return getattr(_ns(), op)


def impl_available(impl: str) -> Tuple[bool, str]:
    """(available, reason if not)."""
    if impl == "twin":
        try:
            from . import twin

            twin.library()
            return True, ""
        except Exception as exc:  # noqa: BLE001  (report any build/load failure as a skip reason)
            return False, f"twin library unavailable: {exc}"
    if impl == "cpu":
        try:
            ns = _ns()
        except Exception as exc:  # noqa: BLE001
            return False, f"import npu_syncbn failed: {exc}"
        missing = []
        for op in OPS:
            try:
                getattr(ns, op)
            except (AttributeError, RuntimeError):
                missing.append(op)
        if missing:
            return False, "torch.ops.npu_syncbn lacks " + ", ".join(missing)
        return True, ""
    if impl == "npu":
        _ns()  # imports npu_syncbn, which starts the emulated device when NPU_SYNCBN_EMULATE_NPU=1
        from . import emulation

        if not emulation.active():
            try:
                import torch_npu  # noqa: F401
            except Exception as exc:  # noqa: BLE001
                return False, f"torch_npu not importable ({type(exc).__name__})"
        if not (hasattr(torch, "npu") and torch.npu.is_available()):
            return False, "no NPU device"
        return True, ""
    return False, f"unknown implementation {impl!r}"


def _dtypes(impl: str) -> List[torch.dtype]:
    base = [torch.float32, torch.float16, torch.bfloat16]
    return base + [torch.float64] if impl == "cpu" else base


def _run(impl: str, op: str, args: list) -> tuple:
    """Calls `op` of `impl` with aten-order args; returns outputs as a tuple on CPU."""
    if impl == "twin":
        from . import twin

        fn = getattr(twin, "batch_norm_gather_stats" if op == "batch_norm_gather_stats_with_counts" else op)
        out = fn(*args)
    elif impl == "cpu":
        out = _torch_op(op)(*args)
    else:  # npu
        dev = "npu"
        moved = [a.to(dev) if isinstance(a, Tensor) else a for a in args]
        out = _torch_op(op)(*moved)
        # in-place running stats come back too
        for a, m in zip(args, moved):
            if isinstance(a, Tensor) and a is not m:
                a.copy_(m.cpu())
        out = tuple(o.cpu() if isinstance(o, Tensor) else o for o in (out if isinstance(out, tuple) else (out,)))
    return out if isinstance(out, tuple) else (out,)


# ---------------------------------------------------------------- cases
def _data(shape, mean: float, dtype: torch.dtype, gen: torch.Generator) -> Tensor:
    return (torch.randn(shape, generator=gen, dtype=torch.float64) + mean).to(dtype)


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_case(op: str, shape, mean: float, dtype: torch.dtype, seed: int = 0):
    """(args in aten order, reference outputs as float64 tuple, mutated arg indices)."""
    gen = torch.Generator().manual_seed(seed)
    sd = _stats_dtype(dtype)
    x = _data(shape, mean, dtype, gen)
    c = shape[1]
    if op == "batch_norm_stats":
        return [x, EPS], ref.batch_norm_stats(x, EPS), ()
    m, s = (t.to(sd) for t in ref.batch_norm_stats(x, EPS))
    w = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(sd)
    if op == "batch_norm_gather_stats_with_counts":
        means = (mean + torch.randn(WORLD, c, generator=gen, dtype=torch.float64)).to(sd)
        invstds = (torch.rand(WORLD, c, generator=gen, dtype=torch.float64) + 0.5).to(sd)
        counts = torch.tensor([float(x.numel() // c), 0.0, 37.0], dtype=sd)
        rm = torch.randn(c, generator=gen, dtype=torch.float64).to(sd)
        rv = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(sd)
        expect = ref.batch_norm_gather_stats_with_counts(means, invstds, counts, EPS, rm, rv, MOMENTUM)
        return [x, means, invstds, rm.clone(), rv.clone(), MOMENTUM, EPS, counts], expect, (3, 4)
    if op in ("batch_norm_elemt", "batch_norm_elemt_act"):
        b = torch.randn(c, generator=gen, dtype=torch.float64).to(sd)
        if op == "batch_norm_elemt":
            return [x, w, b, m, s, EPS], (ref.batch_norm_elemt(x, w, b, m, s),), ()
        r = _data(shape, 0.0, dtype, gen)
        return [x, w, b, m, s, EPS, r, True], (ref.batch_norm_elemt_act(x, w, b, m, s, r, True),), ()
    dy = _data(shape, 0.0, dtype, gen)
    if op == "batch_norm_backward_reduce":
        return [dy, x, m, s, w, True, True, True], ref.batch_norm_backward_reduce(dy, x, m, s), ()
    if op == "batch_norm_backward_reduce_relu":
        y = _data(shape, 0.0, dtype, gen).clamp_min(0)  # a ReLU output: about half the mask is 0
        return [dy, y, x, m, s, w, True, True, True], ref.batch_norm_backward_reduce_relu(dy, y, x, m, s), ()
    sum_dy, sum_dy_xmu, _, _ = (t.to(sd) for t in ref.batch_norm_backward_reduce(dy, x, m, s))
    count = torch.tensor([float(x.numel() // c), 11.0], dtype=sd)
    expect = ref.batch_norm_backward_elemt(dy, x, m, s, w, sum_dy, sum_dy_xmu, count)
    return [dy, x, m, s, w, sum_dy, sum_dy_xmu, count], (expect,), ()


def compare(outs: Sequence[Tensor], expect: Sequence[Tensor]) -> Tuple[float, float]:
    """(max abs error, max error relative to each output's scale) over all outputs."""
    max_abs = max_rel = 0.0
    for o, r in zip(outs, expect):
        if r is None:
            continue
        err = (o.double() - r.double()).abs().max().item() if r.numel() else 0.0
        scale = r.double().abs().max().item() if r.numel() else 0.0
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / scale if scale > 0 else err)
    return max_abs, max_rel


def run_case(impl: str, op: str, shape_name: str, dtype: torch.dtype) -> Result:
    shape, mean = SHAPES[shape_name]
    thr = THRESHOLDS[dtype]
    name = str(dtype).replace("torch.", "")
    if impl == "twin" and op not in TWIN_OPS:
        return Result(op, impl, shape_name, name, None, None, thr, "SKIP",
                      "no twin binding: run --impl npu under NPU_SYNCBN_EMULATE_NPU=1")
    try:
        args, expect, mutated = make_case(op, shape, mean, dtype)
        outs = _run(impl, op, args)
        outs = tuple(outs) + tuple(args[i] for i in mutated)  # running stats after the in-place update
        max_abs, max_rel = compare(outs, expect)
    except Exception as exc:  # noqa: BLE001  (one broken case must not hide the others)
        return Result(op, impl, shape_name, name, None, None, thr, "ERROR", f"{type(exc).__name__}: {exc}"[:200])
    ok = max_rel <= thr  # NaN fails
    return Result(op, impl, shape_name, name, max_abs, max_rel, thr, "PASS" if ok else "FAIL")


def run(impls: Sequence[str] = IMPLS, quick: bool = False, ops: Sequence[str] = OPS,
        log: Callable[[str], None] = print) -> List[Result]:
    results: List[Result] = []
    shape_names = QUICK_SHAPES if quick else tuple(SHAPES)
    for impl in impls:
        ok, reason = impl_available(impl)
        if not ok:
            log(f"[skip] {impl}: {reason}")
            results.append(Result("*", impl, "*", "*", None, None, None, "SKIP", reason))
            continue
        for op in ops:
            dtypes = _dtypes(impl)
            if op == "batch_norm_gather_stats_with_counts":  # works on (W, C) float stats only
                dtypes = [d for d in dtypes if d in (torch.float32, torch.float64)]
            for shape_name in shape_names:
                for dtype in dtypes:
                    results.append(run_case(impl, op, shape_name, dtype))
    return results


def format_table(results: Sequence[Result]) -> str:
    head = ("op", "impl", "shape", "dtype", "max_abs", "max_rel", "threshold", "status")
    rows = [head]
    for r in results:
        f = lambda v: "-" if v is None else f"{v:.2e}"  # noqa: E731
        rows.append((r.op, r.impl, r.shape, r.dtype, f(r.max_abs), f(r.max_rel), f(r.threshold),
                     r.status + (f" ({r.note})" if r.note and r.status != "SKIP" else "")))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def summary(results: Sequence[Result]) -> Dict[str, int]:
    out = {"PASS": 0, "FAIL": 0, "ERROR": 0, "SKIP": 0}
    for r in results:
        out[r.status] += 1
    return out


def skip_reasons(results: Sequence[Result]) -> List[str]:
    """One line per distinct reason for a skip: how many cases, which
    implementation and ops, why."""
    groups: Dict[Tuple[str, str], List[Result]] = {}
    for r in results:
        if r.status == "SKIP":
            groups.setdefault((r.impl, r.note or "no reason given"), []).append(r)
    lines = []
    for (impl, reason), rs in groups.items():
        ops = sorted({r.op for r in rs})
        what = "the whole implementation" if ops == ["*"] else f"{len(rs)} cases of {', '.join(ops)}"
        lines.append(f"  skipped {impl}: {what}: {reason}")
    return lines


HELP = """Accuracy of each op of npu_syncbn against float64 formulas (npu_syncbn.ops.reference),
for each implementation, shape and dtype: max |out - ref| and that over max |ref|.
A case passes when the relative error is within the dtype's threshold."""
EPILOG = ("ops:\n  " + "\n  ".join(OPS) + "\n\n"
          "Implementations that cannot run here are skipped, each with its reason. "
          "Exit status 1 if any case fails or errors.\n"
          "The emulated npu: NPU_SYNCBN_EMULATE_NPU=1 npu-syncbn-accuracy --impl npu")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="npu-syncbn-accuracy", description=HELP, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default=",".join(IMPLS),
                   help="comma list of: cpu (the ops on CPU tensors), twin (our AscendC kernels in the CPU twin), "
                        "npu (the ops on an Ascend device or the emulated one) (default: all)")
    p.add_argument("--op", default=",".join(OPS), help="comma list of ops (default: all seven, listed below)")
    p.add_argument("--quick", action="store_true", help="fewer shapes")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--formulas", action="store_true",
                   help="instead: errors of our kernels' formulas and of the sum/sum-of-squares formulas "
                        "against float64 for |mean|/std in 1, 1e2, 1e3, 1e4 (npu_syncbn.formulas)")
    a = p.parse_args(argv)
    if a.formulas:
        from . import formulas

        rows = formulas.compare()
        print(formulas.format_table(rows))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"formulas": rows}, f, indent=1)
        return 0
    impls = [s.strip() for s in a.impl.split(",") if s.strip()]
    ops = [s.strip() for s in a.op.split(",") if s.strip()]
    for bad in [i for i in impls if i not in IMPLS] + [o for o in ops if o not in OPS]:
        p.error(f"unknown implementation or op: {bad}")
    results = run(impls, a.quick, ops)
    print(format_table([r for r in results if r.status != "SKIP"]))
    s = summary(results)
    print(f"\n{s['PASS']} passed, {s['FAIL']} failed, {s['ERROR']} errors, {s['SKIP']} skipped")
    for line in skip_reasons(results):
        print(line)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": [asdict(r) for r in results], "summary": s}, f, indent=1)
    return 1 if s["FAIL"] or s["ERROR"] else 0


if __name__ == "__main__":
    sys.exit(main())
