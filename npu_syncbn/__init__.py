"""npu_syncbn: synchronized BatchNorm for PyTorch on Ascend NPUs and on CPUs.

Public API (everything else is internal):

* :class:`SyncBatchNorm`, :func:`convert_sync_batchnorm`, :func:`revert_sync_batchnorm`
* communication: :func:`init`, :func:`get_rank`, :func:`get_group_size`,
  :func:`get_local_rank`, :func:`create_group`, :func:`destroy_group`
* the five ops as ``torch.ops.npu_syncbn.<name>`` (registered on import)
* fronts for MindSpore users: ``npu_syncbn.mint``, ``npu_syncbn.mindspore``
* ``npu_syncbn.emulation``: the emulated Ascend device (``NPU_SYNCBN_EMULATE_NPU=1``)
"""
from . import emulation

emulation.activate_from_environment()  # NPU_SYNCBN_EMULATE_NPU=1: device "npu" before the ops register for it
from . import ops  # noqa: E402,F401  (registers torch.ops.npu_syncbn.*)
from . import mindspore, mint  # noqa: F401  (MindSpore-shaped fronts)
from .comm import create_group, destroy_group, get_group_size, get_local_rank, get_rank, init
from .modules import SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm
from .version import __version__

__all__ = [
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "revert_sync_batchnorm",
    "init",
    "get_rank",
    "get_group_size",
    "get_local_rank",
    "create_group",
    "destroy_group",
    "__version__",
]
