"""The ``torch.ops.npu_syncbn`` ops: the five aten-shaped ones and the fused
activation's two (act.py). Schemas and fake kernels (schema.py), CPU kernels
(cpu.py), NPU kernels (npu.py), float64 truth (reference.py).

Importing this package registers everything; call the ops as
``torch.ops.npu_syncbn.<name>`` or through the aliases below.
"""
import torch

from . import cpu, npu, out, schema  # noqa: F401  (import registers the kernels)

batch_norm_stats = torch.ops.npu_syncbn.batch_norm_stats
batch_norm_gather_stats_with_counts = torch.ops.npu_syncbn.batch_norm_gather_stats_with_counts
batch_norm_elemt = torch.ops.npu_syncbn.batch_norm_elemt
batch_norm_backward_reduce = torch.ops.npu_syncbn.batch_norm_backward_reduce
batch_norm_backward_elemt = torch.ops.npu_syncbn.batch_norm_backward_elemt
batch_norm_elemt_act = torch.ops.npu_syncbn.batch_norm_elemt_act
batch_norm_backward_reduce_relu = torch.ops.npu_syncbn.batch_norm_backward_reduce_relu

OP_NAMES = tuple(schema.SCHEMAS)
NPU_ROUTE = npu.ROUTE
