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

import os
import sys
import zlib
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torch import Tensor

FIELDS = ("layer", "channels", "dtype", "call")
DTYPE_CODES = {torch.float64: 1, torch.float32: 2, torch.float16: 3, torch.bfloat16: 4}
_FIELD_MOD = 1 << 20  # keeps every field (and its square in float64) exact
# id(group) -> (group, calls). Holding the group keeps its id from being
# reused by a later group, which would start that group mid-count on one rank.
_call_counters: Dict[int, tuple] = {}


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_per_site: Dict[str, int] = {}


def construction_identity() -> str:
    """Identity of a SyncBatchNorm nobody named (no ``layer_name``, not made
    by convert_sync_batchnorm), taken when it is constructed: the place of
    the constructor call (file name, function, line of the first frame
    outside npu_syncbn) and how many layers that place constructed before
    in this process.

    Ranks that build the same model run the same constructor calls in the
    same order, so a layer gets the same identity on every rank and two
    layers get different ones (another line, or another index at the same
    line, e.g. in a loop). Constructions elsewhere (a probe layer only one
    rank builds) do not shift it; ranks that construct different numbers of
    unnamed layers at the same line before the model's would disagree and
    raise at the first step: name such layers (``layer_name=``) or convert
    the model. File names, not paths, so checkouts in different directories agree."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    site = "?" if frame is None else f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}:{frame.f_lineno}"
    index = _per_site.get(site, 0)
    _per_site[site] = index + 1
    return f"{site}#{index}"


def layer_code(name: str, unnamed_identity: str = "") -> int:
    """Stable small integer for a layer (same on every rank, unlike hash()):
    of its name, or for an unnamed layer of its :func:`construction_identity`."""
    key = name if name else "\0" + unnamed_identity  # a NUL no qualified module name has
    return zlib.crc32(key.encode()) % _FIELD_MOD


def next_call_index(group) -> int:
    """Index of this synchronized call on ``group`` in this process (mod 2^20)."""
    key = id(group)
    _, index = _call_counters.get(key, (group, 0))
    _call_counters[key] = (group, (index + 1) % _FIELD_MOD)
    return index


def forget_group(group) -> None:
    """Drop a destroyed group's call counter."""
    _call_counters.pop(id(group), None)


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
        """One integer summarising every field, in [1, modulus] (plain arithmetic
        so that torch.compile can trace it)."""
        h = 0
        for v in (self.layer, self.channels, self.dtype, self.call):
            h = (h * 1000003 + v) % 2147483647
        return h % modulus + 1


def describe(values: Sequence[float]) -> str:
    layer, channels, dtype, call = (int(v) for v in values)
    dtype_name = {code: str(d).replace("torch.", "") for d, code in DTYPE_CODES.items()}.get(dtype, f"code {dtype}")
    return f"layer #{layer:x}, C={channels}, input {dtype_name}, sync call {call}"


def mismatch_error(layer_label: str, group_label: str, rows: Tensor, my_rank: int) -> "FingerprintMismatch":
    """RuntimeError listing what each rank computed; ``rows`` is (world_size, len(FIELDS))."""
    mine = rows[my_rank].tolist()
    lines = [f"rank {r}: {describe(row)}" for r, row in enumerate(rows.tolist())]
    bad = [r for r, row in enumerate(rows.tolist()) if row != mine]
    return FingerprintMismatch(
        f"SyncBatchNorm {layer_label}: ranks of {group_label} disagree on what they are synchronizing "
        f"(ranks {bad} differ from this rank {my_rank}): layers called in different orders, a skipped layer, "
        "or a different channel count or dtype. Statistics were not mixed.\n  " + "\n  ".join(lines)
    )


class FingerprintMismatch(RuntimeError):
    """Ranks synchronized different things; the message names the layer (and the ranks when known)."""


# The checks are custom ops (not Python branches) so that torch.compile keeps
# one graph: each returns a copy of its input and raises when ranks disagree.
_LIB = torch.library.Library("npu_syncbn", "FRAGMENT")
_LIB.define("verified_rows(Tensor rows, Tensor expected, str layer, str group, int rank) -> Tensor")
_LIB.define("verified_sums(Tensor sums, Tensor expected, str layer, str group) -> Tensor")


def check_rows(rows: Tensor, expected: Tensor, layer: str, group: str, rank: int) -> None:
    """Raise FingerprintMismatch unless every row of ``rows`` starts with ``expected``."""
    k = expected.numel()
    if not torch.equal(rows[:, :k], expected.expand(rows.shape[0], k)):
        raise mismatch_error(layer, group, rows[:, :k].cpu(), rank)


def check_sums(sums: Tensor, expected: Tensor, layer: str, group: str) -> None:
    """Raise FingerprintMismatch unless ``sums`` starts with ``expected``."""
    k = expected.numel()
    if not torch.equal(sums[:k], expected):
        raise FingerprintMismatch(
            f"SyncBatchNorm {layer}: ranks of {group} disagree on what they are synchronizing: layers called "
            "in different orders, a skipped layer, or a different channel count or dtype. Statistics were not mixed."
        )


def verified_rows(rows: Tensor, expected: Tensor, layer: str, group: str, rank: int) -> Tensor:
    """``rows`` once :func:`check_rows` passed: checked in place in eager mode,
    through the custom op under torch.compile (one graph, no Python branch on values)."""
    if torch.compiler.is_compiling():
        return torch.ops.npu_syncbn.verified_rows(rows, expected, layer, group, rank)
    check_rows(rows, expected, layer, group, rank)
    return rows


def verified_sums(sums: Tensor, expected: Tensor, layer: str, group: str) -> Tensor:
    """``sums`` once :func:`check_sums` passed (as :func:`verified_rows`)."""
    if torch.compiler.is_compiling():
        return torch.ops.npu_syncbn.verified_sums(sums, expected, layer, group)
    check_sums(sums, expected, layer, group)
    return sums


def _verified_rows(rows: Tensor, expected: Tensor, layer: str, group: str, rank: int) -> Tensor:
    check_rows(rows, expected, layer, group, rank)
    return rows.clone()  # an op's output must not alias its input


def _verified_sums(sums: Tensor, expected: Tensor, layer: str, group: str) -> Tensor:
    check_sums(sums, expected, layer, group)
    return sums.clone()


_LIB.impl("verified_rows", _verified_rows, "CompositeExplicitAutograd")
_LIB.impl("verified_sums", _verified_sums, "CompositeExplicitAutograd")


@torch.library.register_fake("npu_syncbn::verified_rows", lib=_LIB)
def _verified_rows_fake(rows, expected, layer, group, rank):
    return torch.empty_like(rows)


@torch.library.register_fake("npu_syncbn::verified_sums", lib=_LIB)
def _verified_sums_fake(sums, expected, layer, group):
    return torch.empty_like(sums)
