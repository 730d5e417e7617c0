"""Tables and the scaling plot of the bench's results (rank 0's rows)."""
from __future__ import annotations

from typing import Any, Dict, List

from .plans import modelled_bytes_per_rank

COLUMNS = ("shape", "dtype", "layout", "W", "mode", "sync_ms", "local_ms", "coll_ms", "floor_ms",
           "sync/local", "(sync-coll)/local", "sync/floor", "bytes/rank")
FUSED_COLUMNS = ("shape", "dtype", "layout", "fused_ms", "unfused_ms", "fused/unfused", "saved_ms", "fused/floor")


def _ms(stat: Dict[str, float]) -> str:
    return f"{stat['median']:.3f}±{stat['iqr'] / 2:.3f}"


def _label(r: Dict[str, Any]) -> List[str]:
    return ["x".join(map(str, r["shape"])), r["dtype"], r["layout"]]


def _table(head, lines: List[List[str]], right_from: int) -> str:
    """Aligned columns; numbers (from column ``right_from`` on) right-aligned."""
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(v.rjust(w) if i >= right_from else v.ljust(w) for i, (v, w) in enumerate(zip(l, widths)))
            for l in lines]
    return "\n".join(out)


def format_table(rows: List[Dict[str, Any]]) -> str:
    lines = [_label(r) + [
        str(r["world_size"]), r["sync_mode"],
        _ms(r["sync"]["step_ms"]), _ms(r["local"]["step_ms"]), _ms(r["collectives"]["step_ms"]), _ms(r["floor_ms"]),
        f"{r['sync_over_local']:.2f}", f"{r['sync_minus_collectives_over_local']:.2f}", f"{r['sync_over_floor']:.2f}",
        f"{r['bytes_per_rank']:.0f}",
    ] for r in rows]
    return _table(COLUMNS, lines, 5)


def format_floor(rows: List[Dict[str, Any]]) -> str:
    """The passes the floor is made of, as bandwidths."""
    head = ("shape", "dtype", "layout", "read_ms", "copy_ms", "read_GB/s", "copy_GB/s", "floor_ms")
    lines = [_label(r) + [_ms(r["read_ms"]), _ms(r["copy_ms"]), f"{r['read_GBps']:.1f}", f"{r['copy_GBps']:.1f}",
                          _ms(r["floor_ms"])] for r in rows]
    return _table(head, lines, 3)


def format_kernels(rows: List[Dict[str, Any]]) -> str:
    """Each C kernel's GB/s over the copy's (1.00 = as fast as a copy), their
    sum over the floor, and what the step spends beyond them."""
    head = ("shape", "dtype", "layout", "stats", "elemt", "reduce", "bwd_elemt", "kernels_ms", "kernels/floor",
            "step-kernels_ms", "wait_ms", "rest_ms")
    lines = [_label(r) + [f"{r['kernels'][k]['GBps']:.1f}({r['kernels'][k]['over_copy_bandwidth']:.2f})"
                          for k in ("stats", "elemt", "reduce", "backward_elemt")]
             + [f"{r['kernels_ms']:.3f}", f"{r['kernels_over_floor']:.2f}", f"{r['step_beyond_kernels_ms']:.3f}",
                f"{r['sync_wait_ms']['median']:.3f}", f"{r['step_beyond_kernels_and_wait_ms']:.3f}"]
             for r in rows if "kernels" in r]
    return _table(head, lines, 3) if lines else ""


def format_fused(rows: List[Dict[str, Any]]) -> str:
    """SyncBatchNorm(activation="relu")(x, residual) against bn, +=, ReLU(inplace=True)."""
    lines = [_label(r) + [_ms(r["fused"]["step_ms"]), _ms(r["unfused"]["step_ms"]), f"{r['fused_over_unfused']:.2f}",
                          f"{r['fused_saving_ms']:.3f}", f"{r['fused']['step_ms']['median'] / r['floor_ms']['median']:.2f}"]
             for r in rows if "fused" in r]
    return _table(FUSED_COLUMNS, lines, 3) if lines else ""


def format_memory(rows: List[Dict[str, Any]]) -> str:
    head = ("shape", "dtype", "layout", "activation_MiB", "sync_saved(act)", "local_saved(act)",
            "sync_extra(act)", "local_extra(act)", "sync/local_saved")
    lines = []
    for r in rows:
        m = r["memory"]
        a = m["activation_bytes"]
        lines.append(_label(r) + [f"{a / 2**20:.2f}",
                                  f"{m['sync_saved_activations']:.3f}", f"{m['local_saved_activations']:.3f}",
                                  f"{m['sync_extra_bytes'] / a:.4f}", f"{m['local_extra_bytes'] / a:.4f}",
                                  f"{m['sync_over_local_saved']:.3f}"])
    return _table(head, lines, 99)


def make_plot(sweep: List[Dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [r["world_size"] for r in sweep]
    fig, (ax_t, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("sync", "SyncBatchNorm"), ("local", "local BatchNorm"), ("collectives", "bare collectives")):
        med = [r[key]["step_ms"]["median"] for r in sweep]
        lo = [r[key]["step_ms"]["median"] - r[key]["step_ms"]["q1"] for r in sweep]
        hi = [r[key]["step_ms"]["q3"] - r[key]["step_ms"]["median"] for r in sweep]
        ax_t.errorbar(ws, med, yerr=[lo, hi], marker="o", capsize=3, label=label)
    first = sweep[0]
    title = f"{'x'.join(map(str, first['shape']))} {first['dtype']} {first['layout']}, per-rank shard"
    ax_t.set(xlabel="world size (gloo ranks)", ylabel="forward+backward step, ms (median, IQR)", title=title)
    ax_t.set_xscale("log", base=2)
    ax_t.set_xticks(ws, [str(w) for w in ws])
    ax_t.legend()
    ax_b.plot(ws, [r["bytes_per_rank"] for r in sweep], marker="o", label="measured run (its sync mode)")
    # Both modes from the model at the same C: allgather grows with W, allreduce does not.
    c = first["shape"][1]
    sd = "float64" if first["dtype"] == "float64" else "float32"  # the stats dtype
    for mode in ("allgather", "allreduce"):
        model = [modelled_bytes_per_rank(c, mode, sd, w) for w in ws]
        ax_b.plot(ws, model, linestyle="--", marker=".", label=f"sync_mode={mode} (model)")
    ax_b.set(xlabel="world size (gloo ranks)", ylabel="bytes sent per rank per step", title="ring model")
    ax_b.legend()
    ax_b.set_xscale("log", base=2)
    ax_b.set_xticks(ws, [str(w) for w in ws])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


