"""Activation checkpointing: a recomputed forward reuses the global statistics
of the forward it repeats.

``torch.utils.checkpoint`` runs a segment's forward twice: in the forward
pass, keeping nothing for backward, and again in backward to rebuild what
backward needs. Run naively, SyncBatchNorm's second forward would send a
second statistics collective and update the running stats (and
``num_batches_tracked``) a second time (pytorch#96136). Instead:

* **Recording.** A synchronized training forward that checkpointing may
  repeat keeps its global (mean, invstd, counts) on the layer. Such a forward
  runs with grad mode off (``use_reentrant=True`` runs the first pass under
  ``torch.no_grad()``) or with saved-tensor hooks installed
  (``use_reentrant=False`` installs its own; ``save_on_cpu`` and other hooks
  also count). A plain forward with grad on and no hooks records nothing.
* **Detecting the recompute.** Both kinds of checkpoint rerun the forward
  from inside backward, i.e. while the autograd engine executes a graph
  task (``torch._C._current_graph_task_id() != -1``). A training forward
  there takes the most recent record of the same layer for an input of the
  same shape, dtype and device (backward visits segments in reverse order
  of the forward), normalizes with it, communicates nothing and leaves the
  running stats and ``num_batches_tracked`` alone. Backward then runs as
  usual, with its one gradient all_reduce.
* **What it cannot see.** A recompute outside backward (a user rerunning the
  forward by hand, or torch.compile graphs, where none of this applies) is
  an ordinary forward: a second collective and a second running-stat update.
  A recompute with no matching record (the first pass had grad on and no
  hooks) also runs as an ordinary forward. A layer called twice on the same
  shape inside one checkpointed segment gets the records in reverse order
  (its later call's statistics first); give each call its own layer there.

Records are a few (C,) tensors; each layer keeps at most :data:`MAX_RECORDS`
(the oldest go first), so forwards that are never recomputed (a no_grad
recalibration pass, a segment whose recompute stops early) cost nothing lasting.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

MAX_RECORDS = 32
_ATTR = "_recompute_records"

Stats = Tuple[Tensor, Tensor, Tensor]  # global mean, invstd (C,), per-rank counts


def _eager() -> bool:
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def in_recompute() -> bool:
    """A forward running inside backward: what checkpointing's recompute is."""
    return _eager() and torch._C._current_graph_task_id() != -1


def may_be_recomputed() -> bool:
    """A forward outside backward that checkpointing may repeat (see the module docstring)."""
    if not _eager() or torch._C._current_graph_task_id() != -1:
        return False
    return not torch.is_grad_enabled() or torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


def _key(input: Tensor) -> tuple:
    return tuple(input.shape), input.dtype, input.device


def record(layer: torch.nn.Module, input: Tensor, stats: Stats) -> None:
    """Keep ``stats`` of this forward of ``layer`` for a recompute of it."""
    records: List = layer.__dict__.setdefault(_ATTR, [])
    records.append((_key(input), tuple(t.detach() for t in stats)))
    del records[:-MAX_RECORDS]


def take(layer: torch.nn.Module, input: Tensor) -> Optional[Stats]:
    """The most recent record of ``layer`` for an input like ``input`` (removed), or None."""
    records: List = layer.__dict__.get(_ATTR, [])
    key = _key(input)
    for i in range(len(records) - 1, -1, -1):
        if records[i][0] == key:
            return records.pop(i)[1]
    return None
