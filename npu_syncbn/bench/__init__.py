"""Benchmark of SyncBatchNorm against local BatchNorm and the bare collectives.

Usage (console script ``npu-syncbn-bench``)::

    python -m npu_syncbn.bench                              # default shapes, 2 gloo ranks
    python -m npu_syncbn.bench --shape 16,64,56,56 --channels-last --dtype bfloat16
    python -m npu_syncbn.bench --json out.json --plot scaling.png   # plot needs pip install .[plot]

The parent process spawns W ranks (gloo on loopback, ``--threads`` torch
threads each, default 1 so that ranks do not fight over cores). On every rank
and for every shape, one run interleaves R repetitions of the timed steps,
in a rotating order so that drift (other load, thermal, caches) hits all
of them alike:

* ``sync``: ``npu_syncbn.SyncBatchNorm`` in training mode, forward + ``y.backward(grad)``
  with an input that requires grad;
* ``local``: ``torch.nn.BatchNorm1d/2d/3d`` (by input rank) on the same per-rank shard;
* ``coll``: the bare collectives of the sizes SyncBatchNorm issues per step
  (see :func:`collective_plan`), through the same ``npu_syncbn.comm`` calls,
  hence over the same transport (the shared-memory channel or gloo, see
  npu_syncbn/shm.py). Over the channel SyncBatchNorm's eager step runs fused
  (npu_syncbn/cpu_step.py: the rendezvous happens inside one C call), while
  these go through the channel's Python collectives, about 10-20 us more
  each on the 2-core VM: (sync - coll) errs low by that much (~0.03 of a
  256x1024 local step).

* ``read`` and ``copy``: ``x.sum()`` and a copy of the activation, on every
  rank at once; ``floor = 4 * read + 2 * copy``, the 6 reads and 2 writes any
  BatchNorm training step moves (see :func:`floor_seconds`), and
  ``sync/floor`` says how close the step comes to it;
* ``kernel:*``: the four C kernels of the fused CPU step alone (when they
  take the dtype and layout; bare ctypes calls, outputs allocated
  beforehand), as GB/s against the copy's, so that the part of a step that
  is neither kernel nor floor shows, split into the wait for the peer at the
  two rendezvous (timed in C, ``npu_syncbn.ops.cpu_fast.wait_seconds``) and
  the rest (Python, autograd, allocation);
* ``fused`` / ``unfused`` (unless ``--no-fused``):
  ``SyncBatchNorm(activation="relu")(x, residual)`` against SyncBatchNorm,
  ``+=`` and ``ReLU(inplace=True)`` as torchvision's blocks do.

The header names the instruction-set variant the C kernels run (baseline,
avx2 or avx512; ``NPU_SYNCBN_CPU_ISA`` forces one, see docs/cpu_kernels.md).

A barrier (not timed) precedes every timed step. A repetition's time is the
largest over ranks (the step time of the slowest rank); the tables give the
median and the inter-quartile range (IQR) over repetitions, and the ratios
sync/local and (sync - coll)/local, i.e. what SyncBatchNorm costs beyond
communication, against a local BatchNorm baseline measured in the same run.
Timings are never asserted anywhere: they depend on the machine and its load.

With ``--bind-cores`` rank i is pinned to its share of the cores, as
``npu-syncbn-run --bind_core=True`` does. Not the default: on the 2-core VM
this was written on, pinning made SyncBatchNorm's step faster (fewer
migrations: 32x256x14x14 channels_last 8.4 -> 5.3 ms) but the bare
collectives right after a barrier slower (1.0 -> 2.7 ms; a halted vCPU must
be woken for every message), which would flatter (sync - coll)/local.

The ranks run with glibc malloc's mmap and trim thresholds raised
(:data:`MALLOC_TUNING`, unless the variables are already set, or with
``--no-malloc-tuning``): with the defaults, freeing an activation-sized
buffer can hand its pages back to the kernel, and the next step page-faults
them in again. On a 2-core VM that doubled both local BatchNorm and
SyncBatchNorm step times at random and drowned the ratios in noise. The
same variables speed up real CPU training (see the README).

Bytes sent per rank per step come from a ring model, not a measurement
(see :func:`ring_bytes_per_rank`). Memory kept for backward is measured with
``torch.autograd.graph.saved_tensors_hooks`` (unique storages, in bytes and in
units of the input activation's size).

Modules: cli (arguments, printing, --json), world (spawning the ranks),
measure (one rank's timed steps), kernels (the C kernels alone), plans
(collectives and their bytes), report (tables, plot).
"""
from __future__ import annotations

import importlib.util  # noqa: F401  (tests stub importlib.util.find_spec through here)

from .cli import DEFAULT_SHAPES, DTYPES, PLOT_WORLD_SIZES, build_parser, main, parse_shape
from .measure import floor_seconds, saved_for_backward, summarize
from .plans import BYTES_MODEL, collective_plan, fingerprint_check_enabled, modelled_bytes_per_rank, resolve_mode, ring_bytes_per_rank
from .report import COLUMNS, format_memory, format_table, make_plot
from .world import MALLOC_TUNING, core_groups, rank_environment, run_world

__all__ = [
    "BYTES_MODEL", "COLUMNS", "DEFAULT_SHAPES", "DTYPES", "MALLOC_TUNING", "PLOT_WORLD_SIZES", "build_parser",
    "collective_plan", "core_groups", "fingerprint_check_enabled", "floor_seconds", "format_memory", "format_table", "main",
    "make_plot", "modelled_bytes_per_rank", "parse_shape", "rank_environment", "resolve_mode",
    "ring_bytes_per_rank", "run_world", "saved_for_backward", "summarize",
]
