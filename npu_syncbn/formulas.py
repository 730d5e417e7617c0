"""How much accuracy the statistics formulas keep when |mean| >> std.

Our kernels (run in the CPU twin: the AscendC sources themselves) compute the
variance from shifted sums, Σ(x−K) and Σ(x−K)², merge partial results with
Chan's formula, and the backward sum as Σdy·(x−mean). The sum / sum-of-squares
formulas (E[x²]−E[x]² for the variance, Σdy·x − mean·Σdy for the backward,
as the vendor's SyncBatchNorm kernels do) are replayed here in float32 with
the same lane-parallel accumulation (64 float32 lanes summed in order, then
the lanes added). Both are compared with float64 on the same float32 data:

* ``invstd``: max over channels of |invstd − invstd64| / invstd64;
* ``sum_dy_xmu``: max over channels of |s − s64| / Σ|dy·(x−mean)|.

``npu-syncbn-accuracy --formulas`` prints the table for |mean|/std in
{1, 1e2, 1e3, 1e4}.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from . import twin

RATIOS = (1.0, 1e2, 1e3, 1e4)
LANES = 64  # float32 lanes of one 256-byte vector repeat
EPS = 1e-5


def _lane_sum(v: np.ndarray) -> np.float32:
    """float32 sum of v as a vector core accumulates it: 64 lanes, rows in order."""
    v = np.asarray(v, dtype=np.float32).ravel()
    v = np.concatenate([v, np.zeros((-v.size) % LANES, np.float32)]).reshape(-1, LANES)
    lanes = np.cumsum(v, axis=0, dtype=np.float32)[-1]
    return np.float32(lanes.sum(dtype=np.float32))


def sum_of_squares_stats(x: np.ndarray):
    """Per-channel (mean, invstd) of (N, C, L) float32 data from Σx and Σx²."""
    n = x.shape[0] * x.shape[2]
    means, invstds = [], []
    for c in range(x.shape[1]):
        xc = x[:, c, :]
        mean = _lane_sum(xc) / np.float32(n)
        var = np.maximum(_lane_sum(xc * xc) / np.float32(n) - mean * mean, np.float32(0))
        means.append(mean)
        invstds.append(np.float32(1) / np.sqrt(var + np.float32(EPS)))
    return np.array(means, np.float32), np.array(invstds, np.float32)


def sum_dy_x_minus_mean_sum_dy(dy: np.ndarray, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-channel Σdy·(x−mean) as Σdy·x − mean·Σdy in float32."""
    out = []
    for c in range(x.shape[1]):
        out.append(_lane_sum(dy[:, c, :] * x[:, c, :]) - mean[c] * _lane_sum(dy[:, c, :]))
    return np.array(out, np.float32)


def compare(ratios: Sequence[float] = RATIOS, shape=(16, 4, 512), seed: int = 0) -> List[Dict[str, float]]:
    """One row per ratio: errors of our kernels (twin) and of the sum formulas."""
    rows = []
    g = torch.Generator().manual_seed(seed)
    for ratio in ratios:
        x = (torch.randn(shape, generator=g) + ratio).float()
        dy = torch.randn(shape, generator=g).float()
        x64, dy64 = x.double(), dy.double()
        mean64 = x64.mean(dim=(0, 2))
        var64 = x64.var(dim=(0, 2), unbiased=False)
        invstd64 = 1.0 / torch.sqrt(var64 + EPS)
        xmu64 = x64 - mean64.view(1, -1, 1)
        s64 = (dy64 * xmu64).sum(dim=(0, 2))
        scale = (dy64 * xmu64).abs().sum(dim=(0, 2))

        _, ours_invstd = twin.batch_norm_stats(x, EPS, block_dim=4)
        mean32 = mean64.float()
        c = shape[1]
        ours_s = twin.batch_norm_backward_reduce(dy, x, mean32, invstd64.float(), None, True, False, False,
                                                 block_dim=4)[1]
        _, theirs_invstd = sum_of_squares_stats(x.numpy())
        theirs_s = sum_dy_x_minus_mean_sum_dy(dy.numpy(), x.numpy(), mean32.numpy())

        def rel(a, ref, denom):
            return float(((torch.as_tensor(a).double() - ref).abs() / denom).max())

        rows.append({
            "mean_over_std": ratio,
            "invstd_ours": rel(ours_invstd, invstd64, invstd64),
            "invstd_sum_sq": rel(theirs_invstd, invstd64, invstd64),
            "sum_dy_xmu_ours": rel(ours_s, s64, scale),
            "sum_dy_xmu_sum_sq": rel(theirs_s, s64, scale),
            "channels": c,
        })
    return rows


def format_table(rows: List[Dict[str, float]]) -> str:
    head = (f"{'|mean|/std':>10}  {'invstd ours':>12}  {'invstd Σx,Σx²':>14}  "
            f"{'Σdy(x-m) ours':>14}  {'Σdy·x-mΣdy':>12}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['mean_over_std']:>10.0e}  {r['invstd_ours']:>12.1e}  {r['invstd_sum_sq']:>14.1e}  "
                     f"{r['sum_dy_xmu_ours']:>14.1e}  {r['sum_dy_xmu_sum_sq']:>12.1e}")
    return "\n".join(lines)
