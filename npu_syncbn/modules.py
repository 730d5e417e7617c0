"""SyncBatchNorm, a drop-in for torch.nn.SyncBatchNorm, and convert/revert helpers.

The module decides *what* to do (sync or not, which statistics, which
momentum); :class:`~npu_syncbn.function.SyncBatchNormFunction` does *how*.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from . import comm, recompute
from .comm import GroupLike
from .fingerprint import DTYPE_CODES, Fingerprint, construction_identity, layer_code, next_call_index
from .function import SyncBatchNormFunction, SyncPlan, activate
from .fuse import FusedReLU, original_block
from .fuse import fold as fuse_relus
from .ops.checks import FLOAT_DTYPES
from .ops.schema import stats_dtype

SYNC_MODES = ("auto", "allgather", "allreduce")
ACTIVATIONS = (None, "relu")
_STATE_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_PLAIN_STATE = {}  # module class -> none of _STATE_NAMES is a class attribute (see SyncBatchNorm._state)


def resolve_sync_mode(sync_mode: str, world_size: int, device: torch.device) -> str:
    """"auto" picks the mode that sends fewer bytes per rank for this world size:
    allgather sends (W-1)·K float32 values, allreduce 2·(W-1)/W·K values in its
    payload dtype (float64 on CPU, float32 elsewhere). So on CPU allgather up to
    W = 4, on accelerators up to W = 2, allreduce beyond."""
    if sync_mode != "auto":
        return sync_mode
    allreduce_itemsize = 8 if device.type == "cpu" else 4
    allgather_bytes = (world_size - 1) * 4
    allreduce_bytes = 2 * (world_size - 1) / world_size * allreduce_itemsize
    return "allgather" if allgather_bytes <= allreduce_bytes else "allreduce"


def validate_hyperparameters(num_features, eps, momentum, allow_none_momentum: bool = True) -> None:
    """The constructor checks shared by every front (torch-, mint- and MindSpore-shaped)."""
    if isinstance(num_features, bool) or not isinstance(num_features, int):
        raise TypeError(f"num_features must be an int (C of an (N, C, *) input), got {type(num_features).__name__}")
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if isinstance(eps, bool) or not isinstance(eps, float):
        raise TypeError(f"eps must be a float, got {type(eps).__name__} {eps!r}")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite float > 0, got {eps!r}")
    if momentum is None and allow_none_momentum:
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (float, int)):
        raise TypeError(f"momentum must be a float in [0, 1]{' or None' if allow_none_momentum else ''}, got {momentum!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in range [0, 1], got {momentum!r}")


class SyncBatchNorm(_BatchNorm):
    r"""Batch normalization over an (N, C, \*) input with statistics shared
    across the processes of a group.

    .. math:: y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Mean and biased variance are taken per channel over N and every dim after C
    on *all* ranks of ``process_group`` together; each rank may bring a
    different N (even 0). Same arguments, state_dict keys and semantics as
    ``torch.nn.SyncBatchNorm``, but it also runs on CPU (gloo) and on Ascend
    NPUs (HCCL), and with no process group (or a group of one) it computes
    exactly what a local ``torch.nn.BatchNorm*d`` would.

    Args:
        num_features: C, the number of channels (dim 1 of the input).
        eps: added to the variance for numerical stability; float > 0.
        momentum: weight of the new batch in the running stats, in [0, 1];
            None for a cumulative average (1 / num_batches_tracked).
        affine: learn per-channel ``weight`` (γ) and ``bias`` (β).
        track_running_stats: keep ``running_mean``/``running_var``; when False
            batch statistics are used in eval mode too.
        process_group: None (the default group), a ProcessGroup, or a str name
            made with :func:`npu_syncbn.create_group`; also
            ``GroupMember.NON_GROUP_MEMBER``, what ``dist.new_group(ranks)``
            returns on a rank outside ``ranks`` (stored as torch stores it, so
            one model can be built and converted on every rank). On such a
            rank a training forward has no group to synchronize with and
            normalizes with its local batch statistics (as
            torch.nn.SyncBatchNorm does), warning once per process.
        sync_mode: how the forward statistics travel: "allgather" (every
            rank's mean/invstd/count, merged exactly; bytes grow with the world
            size), "allreduce" (shifted sums, O(C) bytes whatever the world
            size) or "auto" (whichever sends fewer bytes per rank; see
            :func:`resolve_sync_mode`).
        layer_name: name carried in the collective's fingerprint so that ranks
            calling layers out of order raise an error naming the layer;
            :func:`convert_sync_batchnorm` sets it to the qualified module name.
            An unnamed layer is identified by where it was constructed (see
            :func:`npu_syncbn.fingerprint.construction_identity`): equal on
            ranks that build the same model, different between layers, so
            unnamed layers called out of step raise too.
        activation: None, or "relu" for ``relu(bn(x) + residual)`` in one
            fused step (apex's ``fuse_relu``): the ReLU's mask is taken from
            the saved output, so it keeps no activation beyond what local
            BatchNorm + ReLU keep. On CPU the fused C step does it; on
            NPUs the AscendC kernels batch_norm_elemt_act and
            batch_norm_backward_reduce_relu. :func:`convert_sync_batchnorm`
            with ``fuse=True`` sets it where a ReLU provably follows.

    ``forward(input, residual=None)``: ``residual`` (the input's dtype and
    device) is added after the affine transform and before the activation,
    as in a ResNet block's ``relu(bn2(conv2(x)) + identity)``, and receives
    the gradient of that sum. Of the input's shape (any layout) it is fused;
    one that broadcasts is added by torch after the normalization.

    Shape: input (N, C, \*) with at least 2 dims; output the same shape and dtype.
    float16/bfloat16 input works with float32 parameters (statistics in float32).
    Otherwise parameters and running stats must have the input's dtype: a
    float64 weight with a float32 input raises TypeError naming ``weight``,
    with or without a process group (as local BatchNorm refuses it).

    Eval mode with running stats normalizes with them and communicates nothing.
    Weight and bias gradients are this rank's share; DistributedDataParallel
    sums them, exactly as with torch.nn.SyncBatchNorm.

    A training step in which every rank's batch is empty gives an empty
    output and zero weight/bias gradients, leaves ``running_mean`` and
    ``running_var`` unchanged and counts the step in ``num_batches_tracked``:
    what local BatchNorm does with an empty batch. Unchanged, because a step
    with no data says nothing about the statistics (torch.nn.SyncBatchNorm on
    CUDA drops the empty ranks' rows, merges none, and moves them toward 0).

    Under ``torch.utils.checkpoint`` the forward recomputed in backward
    reuses the global statistics of the forward it repeats: no second
    collective, no second running-stat update (see :mod:`npu_syncbn.recompute`
    for how it is detected and what is not).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: GroupLike = None,
        device=None,
        dtype=None,
        sync_mode: str = "auto",
        layer_name: str = "",
        activation: Optional[str] = None,
    ) -> None:
        validate_hyperparameters(num_features, eps, momentum)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        if sync_mode not in SYNC_MODES:
            raise ValueError(f"sync_mode must be one of {', '.join(SYNC_MODES)}, got {sync_mode!r}")
        if not isinstance(layer_name, str):
            raise TypeError(f"layer_name must be a str, got {type(layer_name).__name__}")
        if process_group is not None and not (
            isinstance(process_group, (str, torch.distributed.ProcessGroup)) or comm.is_non_member(process_group)
        ):
            raise TypeError(
                "process_group must be None, a torch.distributed.ProcessGroup, GroupMember.NON_GROUP_MEMBER or a "
                f"str made with create_group, got {type(process_group).__name__} {process_group!r}"
            )
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self._construction_identity = construction_identity()
        self.process_group = process_group
        self.sync_mode = sync_mode
        self.layer_name = layer_name
        self.activation = activation

    @property
    def layer_name(self) -> str:
        return self._layer_name

    @layer_name.setter
    def layer_name(self, name: str) -> None:
        self._layer_name = name
        self._layer_code = layer_code(name, self._construction_identity)  # hashed once, not in every forward

    @property
    def layer_label(self) -> str:
        """How errors and warnings name this layer."""
        if self.layer_name:
            return repr(self.layer_name)
        return f"(unnamed, constructed at {self._construction_identity}, C={self.num_features})"

    def _state(self):
        """(weight, bias, running_mean, running_var, num_batches_tracked) as
        attribute access gives them. Read from the module's own dicts unless a
        class attribute (a parametrization's property) intercepts one of the
        names: nn.Module's attribute fallback costs about half a microsecond a
        name, a dozen times a step."""
        plain = not torch.compiler.is_compiling() and _PLAIN_STATE.get(type(self))  # (graphs: the accesses as written)
        if plain is None:
            plain = _PLAIN_STATE[type(self)] = not any(hasattr(type(self), n) for n in _STATE_NAMES)
        p, b = self._parameters, self._buffers
        if plain and {"weight", "bias"} <= p.keys() and {"running_mean", "running_var", "num_batches_tracked"} <= b.keys():
            return p["weight"], p["bias"], b["running_mean"], b["running_var"], b["num_batches_tracked"]
        return tuple(getattr(self, n, None) for n in _STATE_NAMES)

    def _check_input_dim(self, input: Tensor, state=None) -> None:
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a torch.Tensor of shape (N, {self.num_features}, *), got {type(input).__name__}")
        if input.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"input must be a float tensor (float64, float32, float16 or bfloat16) of shape "
                f"(N, {self.num_features}, *), got {input.dtype}"
            )
        if input.dim() < 2:
            raise ValueError(
                f"expected input of shape (N, {self.num_features}, *) with at least 2 dims, got shape {tuple(input.shape)}"
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"expected input of shape (N, {self.num_features}, *) (num_features={self.num_features} channels "
                f"in dim 1), got shape {tuple(input.shape)}"
            )
        state = self._state() if state is None else state
        held = state[0] if state[0] is not None else state[2]
        if held is not None and not (input.is_cpu and held.is_cpu) and input.device != held.device:
            raise ValueError(
                f"input is on {input.device} but this layer's parameters and buffers are on {held.device}: "
                "move the input or the module (.to(device)) so that they share a device"
            )
        self._check_state_dtypes(input, state)

    def _check_state_dtypes(self, input: Tensor, state=None) -> None:
        """Parameters and running stats in the input's dtype, or float32 for a
        float16/bfloat16 input: what every path (local, eval, synchronized)
        computes the same way. Anything else raises here, naming the tensor,
        rather than failing in aten on one rank and passing on two."""
        state = self._state() if state is None else state
        dtype = input.dtype
        low = dtype is torch.float16 or dtype is torch.bfloat16
        for name, t in zip(_STATE_NAMES[:4], state):
            if t is not None and t.dtype is not dtype and not (low and t.dtype is torch.float32):
                allowed = (dtype, torch.float32) if low else (dtype,)
                expected = " or ".join(str(d) for d in allowed)
                raise TypeError(
                    f"{name} is {t.dtype} but the input is {input.dtype}: this layer's {name} must be {expected} for "
                    f"a {input.dtype} input; convert the module (.to({input.dtype})) or the input (.to({t.dtype}))"
                )

    def _momentum_for_step(self, num_batches_tracked=None):
        """Momentum of the step about to run: a float, or for the cumulative
        average a 0-dim tensor 1/(num_batches_tracked + 1), never read on the host."""
        nbt = self.num_batches_tracked if num_batches_tracked is None else num_batches_tracked
        if self.momentum is None and nbt is not None:
            return 1.0 / (nbt + 1).to(torch.float64)
        return 0.0 if self.momentum is None else self.momentum

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        # As torch: batch statistics in training, and in eval when there are no
        # running stats (then local ones: torch syncs only in training).
        use_batch_stats = self.training or self.running_mean is None
        return self._normalize(input, use_batch_stats=use_batch_stats, sync=self.training, residual=residual)

    def _fusable_residual(self, input: Tensor, residual: Tensor) -> bool:
        """True when ``residual`` has the input's shape (fused); False for one
        that broadcasts to it (then torch adds it); raises for another dtype or
        device, or a shape that does not broadcast to the input's."""
        if not isinstance(residual, Tensor):
            raise TypeError(f"residual must be a torch.Tensor or None, got {type(residual).__name__}")
        if residual.dtype != input.dtype or residual.device != input.device:
            raise ValueError(
                f"residual must have the input's dtype and device ({input.dtype}, {input.device}), "
                f"got {residual.dtype}, {residual.device}"
            )
        if residual.shape == input.shape:
            return True
        try:
            broadcasts = torch.broadcast_shapes(residual.shape, input.shape) == input.shape
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise ValueError(
                f"residual must have the input's shape {tuple(input.shape)} (or one that broadcasts to it), "
                f"got {tuple(residual.shape)}"
            )
        return False

    def _normalize(self, input: Tensor, use_batch_stats: bool, sync: bool, residual: Optional[Tensor] = None) -> Tensor:
        """The one place that decides what to compute (fronts call it directly).

        use_batch_stats: normalize with this batch's statistics (and update the
        running stats when they exist), else with the running stats (no update,
        no communication). sync: batch statistics over the process group.
        residual and ``self.activation``: see the class docstring."""
        state = self._state()  # read once: every step below takes these
        self._check_input_dim(input, state)
        relu = self.activation == "relu"
        if residual is not None and not self._fusable_residual(input, residual):
            # A broadcast residual: bn(x) + residual as torch computes it, not fused.
            return activate(self._statistics_step(input, use_batch_stats, sync, None, False, state), residual, relu)
        return self._statistics_step(input, use_batch_stats, sync, residual, relu, state)

    def _statistics_step(self, input: Tensor, use_batch_stats: bool, sync: bool, residual: Optional[Tensor],
                         relu: bool, state=None) -> Tensor:
        weight, bias, running_mean, running_var, nbt = self._state() if state is None else state
        if not use_batch_stats:
            y = F.batch_norm(input, running_mean, running_var, weight, bias, False, 0.0, self.eps)
            return activate(y, residual, relu)
        update = running_mean is not None
        output, stepped = self._batch_stats_step(input, self._momentum_for_step(nbt) if update else 0.0, sync, residual,
                                                 relu, state)
        if update and stepped and nbt is not None:
            # Counted only once the step went through, so a step that raised
            # (e.g. ranks out of step) leaves the cumulative average intact.
            nbt.add_(1)
        return output

    def _batch_stats_step(self, input: Tensor, momentum, sync: bool, residual: Optional[Tensor] = None, relu: bool = False,
                          state=None):
        """(output, stepped): stepped is False for a checkpoint recompute, which
        reuses its forward's statistics and updates nothing (recompute.py)."""
        weight, bias, running_mean, running_var, _ = self._state() if state is None else state
        if sync and comm.is_non_member(self.process_group):
            _warn_non_member(self)
            sync = False
        group = comm.resolve_group(self.process_group) if sync else None
        world_size = 1 if group is None else torch.distributed.get_world_size(group)
        if world_size == 1:
            if isinstance(momentum, Tensor):
                # F.batch_norm takes a float: reading it is free on CPU only.
                if input.device.type != "cpu":
                    return SyncBatchNormFunction.apply(
                        input, weight, bias, running_mean, running_var, self.eps, momentum,
                        self._plan(None, 1, input), residual, relu,
                    ), True
                momentum = float(momentum)
            y = F.batch_norm(input, running_mean, running_var, weight, bias, True, momentum, self.eps)
            return activate(y, residual, relu), True
        reuse = recompute.take(self, input) if recompute.in_recompute() else None
        keep = [] if reuse is None and recompute.may_be_recomputed() else None
        plan = self._plan(group, world_size, input, reuse, keep)
        output = SyncBatchNormFunction.apply(
            input, weight, bias, running_mean, running_var, self.eps, momentum, plan, residual, relu,
        )
        if plan.save_shift is not None:
            self.__dict__["_sync_shift_ready"] = True
        if keep:
            recompute.record(self, input, keep[0])
        if not torch.compiler.is_compiling() and self._first_call_on(group):
            self._synchronized_group = id(group)  # later calls skip the first-call check (function.check_level)
        return output, reuse is None

    def _first_call_on(self, group) -> bool:
        """No synchronized step of this layer went through on ``group`` yet
        (read from __dict__: nn.Module's attribute fallback is slow)."""
        return self.__dict__.get("_synchronized_group") != id(group)

    def _sync_shift_for(self, input: Tensor) -> Tensor:
        """The layer's previous global mean on ``input``'s device in its stats
        dtype (function.py: the accelerator allreduce shift); a new one, not
        ready, after a move. Kept out of the buffers: not state, and DDP must
        not broadcast it."""
        sd = stats_dtype(input)
        t = self.__dict__.get("_sync_shift")
        if t is None or t.device != input.device or t.dtype != sd or t.numel() != self.num_features:
            t = self.__dict__["_sync_shift"] = torch.zeros(self.num_features, dtype=sd, device=input.device)
            self.__dict__["_sync_shift_ready"] = False
        return t

    def _plan(self, group, world_size: int, input: Tensor, reuse=None, keep=None) -> SyncPlan:
        mode = resolve_sync_mode(self.sync_mode, world_size, input.device)
        shift = save_shift = None
        if world_size > 1 and input.device.type != "cpu" and reuse is None:
            if torch.compiler.is_compiling():
                # A mean kept across calls cannot live in a graph: "auto" takes
                # the exact allgather (an explicit "allreduce" keeps the
                # running-mean shift; see function.py).
                if self.sync_mode == "auto":
                    mode = "allgather"
            else:
                save_shift = self._sync_shift_for(input)
                if mode == "allreduce":
                    if self.__dict__.get("_sync_shift_ready"):
                        shift = save_shift
                    else:
                        mode = "allgather"  # first call: no previous mean to shift by
        fp = Fingerprint(
            layer=self._layer_code,
            channels=self.num_features,
            dtype=DTYPE_CODES[input.dtype],
            # A recompute sends nothing, so it takes no place in the call order.
            call=next_call_index(group) if reuse is None else 0,
        )
        return SyncPlan(
            group=group,
            world_size=world_size,
            rank=0 if group is None else torch.distributed.get_rank(group),
            mode=mode,
            layer_label=self.layer_label,
            group_spec=self.process_group,
            fingerprint=fp,
            # Under torch.compile always a first call: a flag read here would
            # be guarded and recompile the graph once it flips.
            first_call=torch.compiler.is_compiling() or self._first_call_on(group),
            reuse=reuse,
            keep=keep,
            shift=shift,
            save_shift=save_shift,
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group: GroupLike = None,
                               fuse: bool = False) -> torch.nn.Module:
        """Replace every BatchNorm1d/2d/3d (and torch.nn.SyncBatchNorm) in ``module``
        by ``cls``, sharing parameters and keeping buffers, training flag and
        device. InstanceNorm layers are left alone. Returns the converted module
        (the module itself is converted in place below the root).

        ``fuse=True`` also folds the ``nn.ReLU`` that provably follows a
        converted layer, with the residual add of a ResNet block before it,
        into the layer (``activation="relu"``, :mod:`npu_syncbn.fuse` says
        where that is proven); :func:`revert_sync_batchnorm` undoes it."""
        out = _convert(module, cls, process_group)
        return fuse_relus(out, cls) if fuse else out

    def extra_repr(self) -> str:
        group = self.process_group
        if group is None:
            shown = ""
        elif isinstance(group, str):
            shown = f", process_group={group!r}"
        else:
            shown = ", process_group=NON_GROUP_MEMBER" if comm.is_non_member(group) else ", process_group=<ProcessGroup>"
        if self.activation is not None:
            shown += f", activation={self.activation!r}"
        return super().extra_repr() + shown


_warned_non_member = False


def _warn_non_member(layer: SyncBatchNorm) -> None:
    """Say once per process that this rank's layers given a group it is not in normalize locally."""
    global _warned_non_member
    if _warned_non_member:
        return
    _warned_non_member = True
    rank = torch.distributed.get_rank() if comm.is_distributed() else 0
    warnings.warn(
        f"SyncBatchNorm {layer.layer_label}: rank {rank} is not a member of its process_group (GroupMember.NON_GROUP_MEMBER, "
        "what dist.new_group returns to the ranks it leaves out), so this layer and every other one given that group "
        "normalize with this rank's local batch statistics, as torch.nn.SyncBatchNorm does (warned once per process)",
        UserWarning,
        stacklevel=4,
    )


def _copy_state(src: _BatchNorm, dst: _BatchNorm) -> _BatchNorm:
    if src.affine:
        with torch.no_grad():
            dst.weight = src.weight
            dst.bias = src.bias
    dst.running_mean = src.running_mean
    dst.running_var = src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.training = src.training
    if hasattr(src, "qconfig"):
        dst.qconfig = src.qconfig
    return dst


def _convert(module: torch.nn.Module, cls: Type[SyncBatchNorm], process_group: GroupLike, prefix: str = "") -> torch.nn.Module:
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, process_group)
        out.layer_name = prefix
        _copy_state(module, out)
        # Remember the class to come back to in revert_sync_batchnorm.
        out._reverts_to = type(module) if type(module) is not torch.nn.SyncBatchNorm else None
    for name, child in module.named_children():
        out.add_module(name, _convert(child, cls, process_group, f"{prefix}.{name}" if prefix else name))
    return out


def convert_sync_batchnorm(module: torch.nn.Module, process_group: GroupLike = None, fuse: bool = False) -> torch.nn.Module:
    """Function form of :meth:`SyncBatchNorm.convert_sync_batchnorm`."""
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group, fuse)


def revert_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every npu_syncbn SyncBatchNorm in ``module`` by a plain BatchNorm
    for single-device inference and export, sharing parameters and buffers.

    A layer made by :func:`convert_sync_batchnorm` goes back to its original
    class (BatchNorm1d/2d/3d); one constructed directly becomes BatchNorm2d,
    whose only difference from 1d/3d is the input-rank check it applies.
    What ``fuse=True`` folded comes back as it was (the ``nn.ReLU`` in its
    Sequential, the original block of a traced one); a layer constructed
    with ``activation="relu"`` becomes ``nn.Sequential(BatchNorm2d, nn.ReLU())``."""
    block = original_block(module)
    if block is not None:
        return revert_sync_batchnorm(block)
    if isinstance(module, FusedReLU):
        return torch.nn.ReLU(module.inplace)
    out = module
    if isinstance(module, SyncBatchNorm):
        target = getattr(module, "_reverts_to", None) or torch.nn.BatchNorm2d
        out = target(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        _copy_state(module, out)
        if module.activation == "relu" and not getattr(module, "_relu_folded", False):
            out = torch.nn.Sequential(out, torch.nn.ReLU())
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out
