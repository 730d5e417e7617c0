"""``npu_syncbn.mint``: the ``mindspore.mint.nn.SyncBatchNorm`` front.

Same signature and errors as MindSpore's ``mint.nn.SyncBatchNorm``, on torch
tensors, built on :class:`npu_syncbn.SyncBatchNorm`::

    import torch, npu_syncbn
    from npu_syncbn import mint

    npu_syncbn.init()
    npu_syncbn.create_group("0-1", [0, 1])
    bn = mint.SyncBatchNorm(num_features=2, process_group="0-1", dtype=torch.float32)
    bn.set_train(False)            # MindSpore's Cell.set_train; torch's .train()/.eval() work too

Written from MindSpore's public documentation; no MindSpore code is used.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from . import comm
from .modules import SyncBatchNorm as _TorchSyncBatchNorm
from .modules import validate_hyperparameters

__all__ = ["SyncBatchNorm"]

# dtype names accepted as strings (MindSpore spells its dtypes like torch: mindspore.float32 ...).
_DTYPE_NAMES = {
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float64": torch.float64, "double": torch.float64, "fp64": torch.float64,
}


def parse_dtype(dtype) -> Optional[torch.dtype]:
    """Parameter dtype of a front: None (torch's default dtype), a floating
    ``torch.dtype``, or its name as a str (``"float32"``, ``"torch.float16"``,
    ``"mindspore.bfloat16"``, ``"fp32"`` ...). TypeError for other types,
    ValueError for an unknown name or a non-floating dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower()
        for prefix in ("torch.", "mindspore.", "mstype.", "ms."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key not in _DTYPE_NAMES:
            raise ValueError(f"dtype {dtype!r} is not a known floating dtype name (one of {sorted(_DTYPE_NAMES)})")
        return _DTYPE_NAMES[key]
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be None, a torch.dtype or a dtype name such as 'float32', got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype of the parameters must be a floating dtype, got {dtype}")
    return dtype


def check_named_group(name) -> str:
    """Validate a MindSpore-style group name at layer construction.

    The name must be a str naming a group made with :func:`npu_syncbn.create_group`
    whose rank ids are all in [0, world size) of the current default group,
    and this rank must be one of them. TypeError for a non-str, ValueError otherwise."""
    if not isinstance(name, str):
        raise TypeError(
            f"process_group must be None or the str name of a group made with npu_syncbn.create_group, "
            f"got {type(name).__name__}"
        )
    if not comm.is_distributed():
        raise ValueError(
            f"process_group {name!r} needs an initialised process group: call npu_syncbn.init() and "
            f"npu_syncbn.create_group({name!r}, rank_ids) first"
        )
    try:
        ranks = comm.group_ranks(name)
    except ValueError:
        raise ValueError(f"process_group {name!r} is not a group made with npu_syncbn.create_group") from None
    # Re-check against the world as it is now (the group may predate a re-initialised world).
    ranks = comm.validate_rank_ids(ranks, dist.get_world_size(), f"process_group {name!r}")
    if dist.get_rank() not in ranks:
        raise ValueError(f"this rank ({dist.get_rank()}) is not a member of process_group {name!r} (ranks {ranks})")
    return name


def check_front_arguments(num_features, eps, momentum, affine, allow_none_momentum: bool = False) -> None:
    """Argument checks shared by the MindSpore fronts: num_features, eps and
    momentum (a number; None only where ``allow_none_momentum``) as in
    :func:`validate_hyperparameters`, and affine a bool. TypeError / ValueError."""
    validate_hyperparameters(num_features, eps, momentum, allow_none_momentum=allow_none_momentum)
    if not isinstance(affine, bool):
        raise TypeError(f"affine must be a bool, got {type(affine).__name__}")


class CellMixin:
    """MindSpore ``Cell`` spellings on a torch module."""

    def set_train(self, mode: bool = True):
        """MindSpore's ``Cell.set_train``: same as ``train(mode)`` (recursive, returns self)."""
        return self.train(mode)

    def _start_as_cell(self) -> None:
        """End of a front's ``__init__``: the module starts in inference mode,
        as MindSpore cells do."""
        self.train(False)


class SyncBatchNorm(CellMixin, _TorchSyncBatchNorm):
    r"""``mindspore.mint.nn.SyncBatchNorm`` on torch: batch normalization over an
    (N, C, \*) input with statistics synchronized over a process group.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Args:
        num_features (int): C of an (N, C, \*) input; >= 1.
        eps (float): added to the variance; a float > 0. Default 1e-5.
        momentum (float or None): torch convention (weight of the new
            batch), in [0, 1]; None: cumulative average (1 / num_batches_tracked),
            as torch and MindSpore's implementation take it (its documentation
            only names a float). Default 0.1.
        affine (bool): True: γ (``weight``) and β (``bias``) are learned.
            False: there are none (``weight`` and ``bias`` are None, not in
            the state_dict, ``affine`` is False), as in MindSpore's
            implementation and torch. MindSpore's documentation calls them
            "unlearnable parameters"; we follow the implementation so that
            checkpoints load strictly both ways (the output is the same:
            γ = 1, β = 0).
        track_running_stats (bool): keep ``running_mean``/``running_var``;
            False: batch statistics in training and in eval.
        process_group (str, optional): name of a group made with
            :func:`npu_syncbn.create_group`; None syncs over the whole world.
            Only a str is accepted (not a ``ProcessGroup``: use
            :class:`npu_syncbn.SyncBatchNorm` for that).
        dtype: dtype of the parameters and buffers: a floating ``torch.dtype``
            or its name as a str (``"float32"``, ``"mindspore.float16"``,
            ``"bf16"`` ...); None: torch's default dtype.
        sync_mode, layer_name (keyword-only, not MindSpore's): as in
            :class:`npu_syncbn.SyncBatchNorm`.

    **Starts in inference mode**, like every MindSpore Cell (``Cell.training``
    is False until ``set_train()``), unlike a torch module: call
    ``set_train()`` / ``train()`` before training. A parent torch module's
    ``train()``/``eval()`` sets it as usual. (The MindSpore example calls
    ``set_train(False)`` explicitly, which is harmless either way.)

    Raises:
        TypeError: num_features not an int, eps not a float, momentum not a
            number or None, process_group not None or a str, dtype of a wrong type.
        ValueError: num_features < 1, eps <= 0, momentum not in [0, 1], a
            process_group name that create_group did not make, whose rank
            ids are not in [0, world size), or that this rank is not a
            member of; an unknown dtype name.

    These errors follow MindSpore's documentation; MindSpore 2.10 itself
    accepts ``num_features=0``, an int ``eps``, ``momentum`` outside [0, 1],
    non-bool flags and an unknown group name when the layer is constructed.
    ``track_running_stats=False`` and 5-D input run as documented here, where
    MindSpore 2.10 on CPU refuses them (docs/mindspore.md lists every difference).

    Input (N, C, \*) with at least 2 dims; output of the same shape and dtype.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Optional[str] = None,
        dtype=None,
        *,
        sync_mode: str = "auto",
        layer_name: str = "",
    ) -> None:
        check_front_arguments(num_features, eps, momentum, affine, allow_none_momentum=True)
        if not isinstance(track_running_stats, bool):
            raise TypeError(f"track_running_stats must be a bool, got {type(track_running_stats).__name__}")
        if process_group is not None:
            check_named_group(process_group)
        super().__init__(
            num_features, eps, None if momentum is None else float(momentum), affine, track_running_stats,
            process_group=process_group, dtype=parse_dtype(dtype), sync_mode=sync_mode, layer_name=layer_name,
        )
        self._start_as_cell()
