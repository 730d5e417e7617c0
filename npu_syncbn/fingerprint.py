"""Fingerprints that ride in the forward collective's buffer.

SyncBatchNorm's classic failure is silent: ranks that call layers in different
orders mix statistics of different layers. Each forward collective therefore
carries a few numbers saying what this rank is computing: which layer (a hash
of its qualified name), its channel count, the input dtype, and the index of
this call among the synchronized calls on this group. Ranks that disagree
raise a RuntimeError naming the layer and the ranks, instead of mixing.

Fields are small integers so that they are exact in float32 payloads.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import Tensor

FIELDS = ("layer", "channels", "dtype", "call")
DTYPE_CODES = {torch.float64: 1, torch.float32: 2, torch.float16: 3, torch.bfloat16: 4}
_FIELD_MOD = 1 << 20  # keeps every field (and its square in float64) exact
_call_counters: Dict[int, int] = {}


def layer_code(name: str) -> int:
    """Stable small integer for a layer name (same on every rank, unlike hash())."""
    return zlib.crc32(name.encode()) % _FIELD_MOD if name else 0


def next_call_index(group) -> int:
    """Index of this synchronized call on ``group`` in this process (mod 2^20)."""
    key = id(group)
    index = _call_counters.get(key, 0)
    _call_counters[key] = (index + 1) % _FIELD_MOD
    return index


@dataclass(frozen=True)
class Fingerprint:
    layer: int
    channels: int
    dtype: int
    call: int

    def values(self) -> List[float]:
        return [float(self.layer), float(self.channels % _FIELD_MOD), float(self.dtype), float(self.call)]

    def tensor(self, dtype: torch.dtype, device) -> Tensor:
        return torch.tensor(self.values(), dtype=dtype, device=device)

    def scalar(self, modulus: int) -> int:
        """One integer summarising every field, in [1, modulus]."""
        h = zlib.crc32(repr(self.values()).encode())
        return h % modulus + 1


def describe(values: Sequence[float]) -> str:
    layer, channels, dtype, call = (int(v) for v in values)
    dtype_name = {code: str(d).replace("torch.", "") for d, code in DTYPE_CODES.items()}.get(dtype, f"code {dtype}")
    return f"layer #{layer:x}, C={channels}, input {dtype_name}, sync call {call}"


def mismatch_error(layer_label: str, group_label: str, rows: Tensor, my_rank: int) -> RuntimeError:
    """RuntimeError listing what each rank computed; ``rows`` is (world_size, len(FIELDS))."""
    mine = rows[my_rank].tolist()
    lines = [f"rank {r}: {describe(row)}" for r, row in enumerate(rows.tolist())]
    bad = [r for r, row in enumerate(rows.tolist()) if row != mine]
    return RuntimeError(
        f"SyncBatchNorm {layer_label}: ranks of {group_label} disagree on what they are synchronizing "
        f"(ranks {bad} differ from this rank {my_rank}): layers called in different orders, a skipped layer, "
        "or a different channel count or dtype. Statistics were not mixed.\n  " + "\n  ".join(lines)
    )
