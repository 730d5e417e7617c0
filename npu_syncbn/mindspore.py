"""``npu_syncbn.mindspore``: the ``mindspore.nn.SyncBatchNorm`` front, and
checkpoint-name conversion between MindSpore and torch.

* :class:`SyncBatchNorm`: MindSpore's arguments (momentum convention,
  ``use_batch_statistics``, ``*_init`` initializers, ``process_groups``) on
  :class:`npu_syncbn.SyncBatchNorm`; ``gamma``/``beta``/``moving_mean``/
  ``moving_variance`` are aliases of ``weight``/``bias``/``running_mean``/``running_var``.
* :func:`from_mindspore_state_dict` / :func:`to_mindspore_state_dict`
  (from :mod:`npu_syncbn.mindspore_names`): rename BatchNorm entries of a
  checkpoint dict both ways, a bare layer's ``mean``/``variance`` included.

Written from MindSpore's public documentation; no MindSpore code is used.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from . import comm
from .mint import CellMixin, check_front_arguments, parse_dtype
from .mindspore_names import (BARE_MINDSPORE_TO_TORCH, MINDSPORE_TO_TORCH, TORCH_TO_MINDSPORE,
                              accept_mindspore_names, from_mindspore_state_dict, to_mindspore_state_dict)
from .modules import SyncBatchNorm as _TorchSyncBatchNorm

__all__ = [
    "SyncBatchNorm",
    "from_mindspore_state_dict",
    "to_mindspore_state_dict",
    "initialize",
    "MINDSPORE_TO_TORCH",
    "TORCH_TO_MINDSPORE",
    "BARE_MINDSPORE_TO_TORCH",
    "UseBatchStatisticsError",
]

# ----------------------------------------------------------------------------- initializers

# Random initializers of mindspore.common.initializer that are defined for a
# 1-D parameter, with MindSpore's documented default settings.
_NORMAL_SIGMA = 0.01        # Normal(sigma=0.01, mean=0.0)
_UNIFORM_SCALE = 0.07       # Uniform(scale=0.07): U(-scale, scale)
_TRUNC_SIGMA, _TRUNC_A, _TRUNC_B = 0.01, -2.0, 2.0   # TruncatedNormal(sigma=0.01, mean=0.0, a=-2.0, b=2.0)

# Fan-based or matrix-shaped initializers: MindSpore names them too, but fan_in
# and fan_out (or a matrix / kernel shape) do not exist for a (C,) parameter.
_NEEDS_2D = {"xavieruniform", "xaviernormal", "heuniform", "henormal", "identity", "eye", "orthogonal", "dirac", "sparse"}


def _norm_name(name: str) -> str:
    return name.strip().lower().replace("_", "")


def _init_names() -> List[str]:
    return ["zeros", "ones", "normal", "uniform", "truncatedNormal"]


def initialize(init: Any, num_features: int, dtype: Optional[torch.dtype] = None, what: str = "init") -> Tensor:
    """A (num_features,) tensor from a MindSpore-style initializer ``init``:

    * a str naming an initializer of ``mindspore.common.initializer`` that is
      defined for a 1-D parameter (case and underscores ignored):
      ``'zeros'``, ``'ones'``, ``'normal'`` (N(0, 0.01²)), ``'uniform'``
      (U(-0.07, 0.07)), ``'truncatedNormal'`` (N(0, 0.01²) cut to [-2, 2]);
      random ones draw from torch's global generator (``torch.manual_seed``).
      ``'xavier_uniform'``, ``'he_normal'`` and the other fan-based or
      matrix initializers raise ValueError: they need a parameter of at least 2 dims;
    * a number: that constant; a bool too (MindSpore documents
      ``numbers.Number``, which bool is: True fills 1.0, False 0.0);
    * a tensor, numpy array or list of shape (num_features,) (a 0-dim one is
      broadcast); ValueError for another shape;
    * a callable that fills a tensor in place, like ``torch.nn.init.normal_``.
    """
    dtype = dtype or torch.get_default_dtype()
    out = torch.empty(num_features, dtype=dtype)
    if isinstance(init, str):
        key = _norm_name(init)
        with torch.no_grad():
            if key in ("zeros", "zero"):
                return out.zero_()
            if key in ("ones", "one"):
                return out.fill_(1.0)
            if key == "normal":
                return out.normal_(0.0, _NORMAL_SIGMA)
            if key == "uniform":
                return out.uniform_(-_UNIFORM_SCALE, _UNIFORM_SCALE)
            if key == "truncatednormal":
                return torch.nn.init.trunc_normal_(out, 0.0, _TRUNC_SIGMA, _TRUNC_A, _TRUNC_B)
        if key in _NEEDS_2D:
            raise ValueError(
                f"{what}={init!r} needs a parameter of at least 2 dims (fan_in/fan_out or a matrix shape); "
                f"a BatchNorm parameter has shape ({num_features},): use one of {_init_names()}, a number or a tensor"
            )
        raise ValueError(f"{what}={init!r} is not a known initializer name: use one of {_init_names()}, a number or a tensor")
    if isinstance(init, numbers.Real):
        return out.fill_(float(init))
    if isinstance(init, Tensor) or hasattr(init, "__array__") or isinstance(init, (list, tuple)):
        value = init.detach() if isinstance(init, Tensor) else torch.as_tensor(init)
        if value.dim() == 0:
            return out.fill_(value.item())
        if tuple(value.shape) != (num_features,):
            raise ValueError(f"{what} has shape {tuple(value.shape)}, expected ({num_features},) (num_features)")
        return out.copy_(value)
    if callable(init):
        with torch.no_grad():
            result = init(out)
        return out if result is None else result
    raise TypeError(
        f"{what} must be an initializer name, a number, a tensor/array of shape ({num_features},) or a callable, "
        f"got {type(init).__name__}"
    )


# ----------------------------------------------------------------------------- process_groups


class UseBatchStatisticsError(TypeError, ValueError):
    """``use_batch_statistics`` is not None, True or False: a ValueError as
    MindSpore raises it, and a TypeError, Python's error for a wrong type, so
    that either ``except`` catches it."""


def _check_process_groups_types(process_groups) -> List[List[int]]:
    if not isinstance(process_groups, (list, tuple)):
        raise TypeError(f"process_groups must be a list of lists of rank ids, got {type(process_groups).__name__}")
    out = []
    for i, group in enumerate(process_groups):
        if not isinstance(group, (list, tuple)):
            raise TypeError(f"process_groups[{i}] must be a list of int rank ids, got {type(group).__name__}")
        for r in group:
            if isinstance(r, bool) or not isinstance(r, int):
                raise TypeError(f"process_groups[{i}] must hold int rank ids, got {r!r} ({type(r).__name__})")
        out.append(list(group))
    return out


def validate_process_groups(process_groups, world_size: int, rank: int) -> Optional[List[int]]:
    """Check MindSpore's ``process_groups`` (a list of lists of rank ids
    splitting the world) and return the group of ``rank``, or None when
    ``rank`` is in none of them (an empty list included): that rank then
    normalizes with its own batch statistics, as in MindSpore.

    TypeError: not a list of lists of ints. ValueError: an empty group, a rank
    id outside [0, world_size), or a rank named twice (in one group or in two)."""
    groups = _check_process_groups_types(process_groups)
    seen: Dict[int, int] = {}
    for i, group in enumerate(groups):
        comm.validate_rank_ids(group, world_size, f"process_groups[{i}]")
        for r in group:
            if r in seen:
                raise ValueError(f"rank {r} is in process_groups[{seen[r]}] and in process_groups[{i}]: a rank may be in one group only")
            seen[r] = i
    return groups[seen[rank]] if rank in seen else None


def _group_name(ranks: Sequence[int]) -> str:
    return "npu_syncbn.mindspore:" + ",".join(map(str, ranks))


def _named_group_for(ranks: List[int]) -> str:
    """A create_group name for ``ranks`` (made once, then shared by every layer with that group)."""
    name = _group_name(ranks)
    try:
        if comm.group_ranks(name) == ranks:
            return name
    except ValueError:  # not made yet
        pass
    comm.create_group(name, ranks)
    return name


# ----------------------------------------------------------------------------- the module


class SyncBatchNorm(CellMixin, _TorchSyncBatchNorm):
    r"""``mindspore.nn.SyncBatchNorm`` on torch.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Args:
        num_features (int): C of the input; >= 1.
        eps (float): added to the variance; float > 0. Default 1e-5.
        momentum (float): MindSpore convention, in [0, 1]: the weight of the
            *old* moving statistics, ``moving = momentum * moving + (1 - momentum) * batch``.
            torch's momentum is ``1 - momentum``; the default 0.9 is torch's 0.1.
            The module stores torch's value in ``self.momentum`` (that is what
            the torch machinery and ``revert_sync_batchnorm`` read); MindSpore's
            is ``self.mindspore_momentum``.
        affine (bool): True: γ and β are learned. False: they exist (with
            their ``*_init`` values) but have ``requires_grad=False``.
        gamma_init, beta_init, moving_mean_init, moving_var_init: initial
            values of ``gamma``, ``beta``, ``moving_mean`` and
            ``moving_variance``: an initializer name (``'ones'``, ``'zeros'``,
            ``'normal'``, ``'uniform'``, ``'truncatedNormal'``), a number, a
            tensor / numpy array of shape (num_features,), or an in-place
            filling callable; see :func:`initialize`.
        use_batch_statistics (bool or None); another value raises
            :class:`UseBatchStatisticsError`, a ValueError as in MindSpore and a TypeError:
            * None (default): follow the mode: training normalizes with the
              batch statistics (synced over the group) and updates the moving
              statistics; inference normalizes with the moving statistics.
            * True: always batch statistics, and the moving statistics are
              updated on *every* call, in inference mode too (as MindSpore
              documents: True means "use the current batch and track the
              running statistics", whatever the mode).
            * False: always the moving statistics, never updated, training
              mode too; no communication. Gradients flow through that
              normalization as through an eval-mode BatchNorm
              (dx = dy * γ / sqrt(moving_variance + eps)).
        process_groups (list of lists of int, optional): split of the world
            into sync groups, e.g. ``[[0, 1], [2, 3]]``: statistics are synced
            within the group of this rank. Rank ids in [0, world size), each
            in one group only. None: the whole world. The group is made with
            :func:`npu_syncbn.create_group` under the name
            ``"npu_syncbn.mindspore:0,1"`` (only its members take part; layers
            with the same group share it). A rank in none of the groups
            (``[]`` leaves out every rank) normalizes with its own batch
            statistics, with a warning, as MindSpore runs it. Without
            ``npu_syncbn.init()`` the world is this one process (rank 0 of 1),
            so ``[[0]]`` and ``[]`` work there as in MindSpore.
        dtype: dtype of the parameters (MindSpore's ``dtype``; default
            float32): a floating torch.dtype or its name (``"float16"`` ...).
        sync_mode, layer_name (keyword-only, not MindSpore's): as in
            :class:`npu_syncbn.SyncBatchNorm`.

    **Starts in inference mode** like a MindSpore Cell; call ``set_train()``
    (or ``train()``) to train.

    Input: (N, C, H, W) or (N, C) as in MindSpore; any (N, C, \*) with at
    least 2 dims is accepted as well (same statistics: over N and every dim after C).

    Attributes ``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` are
    aliases of ``weight``, ``bias``, ``running_mean``, ``running_var`` (read
    and assign). ``state_dict()`` uses the torch names; ``load_state_dict``
    takes either naming (MindSpore names, ``mean``/``variance`` of a bare
    MindSpore layer's checkpoint included, are renamed, and a missing
    ``num_batches_tracked`` is then taken as 0).

    Raises:
        TypeError: num_features not an int, eps not a float, momentum not a
            number, process_groups not a list of lists of ints, an
            initializer of a wrong type.
        ValueError: num_features < 1, eps <= 0, momentum not in [0, 1], a rank
            id in process_groups not in [0, world size), a rank twice, an
            empty group; an unknown or 2-D-only initializer name, an
            initializer tensor of the wrong shape.
        UseBatchStatisticsError (ValueError and TypeError):
            use_batch_statistics not None, True or False.

    The types follow MindSpore's documentation where it names one (an int
    ``eps`` and a non-list ``process_groups`` are TypeErrors; MindSpore 2.10
    accepts the first and raises ValueError for the second);
    docs/mindspore.md lists every difference.
    """

    _ALIASES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.9,
        affine: bool = True,
        gamma_init: Any = "ones",
        beta_init: Any = "zeros",
        moving_mean_init: Any = "zeros",
        moving_var_init: Any = "ones",
        use_batch_statistics: Optional[bool] = None,
        process_groups: Optional[Sequence[Sequence[int]]] = None,
        dtype=torch.float32,
        *,
        sync_mode: str = "auto",
        layer_name: str = "",
    ) -> None:
        check_front_arguments(num_features, eps, momentum, affine)
        if use_batch_statistics is not None and not isinstance(use_batch_statistics, bool):
            raise UseBatchStatisticsError(f"use_batch_statistics must be None, True or False, got {use_batch_statistics!r}")
        dtype = parse_dtype(dtype)
        values = {
            name: initialize(init, num_features, dtype, name)
            for name, init in (("gamma_init", gamma_init), ("beta_init", beta_init),
                               ("moving_mean_init", moving_mean_init), ("moving_var_init", moving_var_init))
        }
        group_name, ranks, synchronized = None, None, True
        if process_groups is not None:
            distributed = comm.is_distributed()
            world_size, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
            ranks = validate_process_groups(process_groups, world_size, rank)
            if ranks is None:
                synchronized = False
                _warn_no_group(rank, process_groups)
            elif distributed:
                group_name = _named_group_for(ranks)

        # round(.., 15): MindSpore's 0.9 gives torch's 0.1 exactly rather than 0.09999999999999998.
        torch_momentum = round(1.0 - float(momentum), 15)
        super().__init__(num_features, eps, torch_momentum, True, True, process_group=group_name, dtype=dtype,
                         sync_mode=sync_mode, layer_name=layer_name)
        with torch.no_grad():
            self.weight.copy_(values["gamma_init"])
            self.bias.copy_(values["beta_init"])
            self.running_mean.copy_(values["moving_mean_init"])
            self.running_var.copy_(values["moving_var_init"])
        self.mindspore_momentum = float(momentum)
        self.mindspore_affine = affine
        self.use_batch_statistics = use_batch_statistics
        self.process_groups = None if process_groups is None else [list(g) for g in process_groups]
        self.group_ranks = ranks
        self.synchronized = synchronized
        if not affine:
            # As MindSpore documents and runs it: γ and β exist but are not learned.
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)
        self._start_as_cell()

    # --- MindSpore attribute names --------------------------------------------------
    gamma = property(lambda self: self.weight, doc="alias of ``weight`` (γ)")
    beta = property(lambda self: self.bias, doc="alias of ``bias`` (β)")
    moving_mean = property(lambda self: self.running_mean, doc="alias of ``running_mean``")
    moving_variance = property(lambda self: self.running_var, doc="alias of ``running_var``")

    def __setattr__(self, name: str, value) -> None:
        # Assigning an alias assigns the torch attribute (Module.__setattr__ would
        # otherwise register a Parameter/buffer under the MindSpore name).
        super().__setattr__(self._ALIASES.get(name, name), value)

    # --- forward ----------------------------------------------------------------------
    def uses_batch_statistics(self) -> bool:
        """Whether the next call normalizes with batch statistics (and updates the moving ones)."""
        return self.training if self.use_batch_statistics is None else self.use_batch_statistics

    def forward(self, x: Tensor) -> Tensor:
        use_batch = self.uses_batch_statistics()
        # Batch statistics are synchronized whenever they are used (unless this
        # rank is in none of process_groups); moving statistics never communicate.
        return self._normalize(x, use_batch_stats=use_batch, sync=use_batch and self.synchronized)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        raise NotImplementedError(
            "npu_syncbn.mindspore.SyncBatchNorm takes MindSpore's arguments; convert torch BatchNorm layers with "
            "npu_syncbn.convert_sync_batchnorm (or npu_syncbn.mint.SyncBatchNorm.convert_sync_batchnorm)"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Before torch's own handling (which fills a missing num_batches_tracked with the current value).
        accept_mindspore_names(state_dict, prefix, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        text = text.replace(f"momentum={self.momentum}", f"momentum={self.mindspore_momentum} (torch {self.momentum:g})", 1)
        text = text.replace("affine=True", f"affine={self.mindspore_affine}", 1)
        text = text.replace(", track_running_stats=True", "", 1)
        return text + f", use_batch_statistics={self.use_batch_statistics}"


def _warn_no_group(rank: int, process_groups) -> None:
    warnings.warn(
        f"SyncBatchNorm: this rank ({rank}) is in none of process_groups {process_groups}, so this layer normalizes "
        "with this rank's batch statistics only (no synchronization), as MindSpore runs it",
        UserWarning,
        stacklevel=3,
    )
