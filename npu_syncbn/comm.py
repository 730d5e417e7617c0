"""Process groups, backend choice and the two collectives of SyncBatchNorm.

A "group" anywhere in npu_syncbn may be ``None`` (the default group), a
``torch.distributed.ProcessGroup``, or the ``str`` name given to
:func:`create_group` (MindSpore style, e.g. ``"0-1"``).
"""
from __future__ import annotations

import datetime
import hashlib
import importlib
import importlib.util
import os
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor

from . import emulation, shm
from .fingerprint import forget_group
from .timeouts import DEFAULT_TIMEOUT_S, ENV_TIMEOUT, default_timeout  # noqa: F401 (part of comm's API)

GroupLike = Union[None, str, dist.ProcessGroup]

ENV_BACKEND = "NPU_SYNCBN_BACKEND"

# name -> ProcessGroup (None when this rank is not a member), with its ranks.
_NAMED_GROUPS: Dict[str, Optional[dist.ProcessGroup]] = {}
_NAMED_RANKS: Dict[str, List[int]] = {}
# name -> how many times create_group made it in this process (see _new_member_group).
_CREATIONS: Dict[str, int] = {}


def npu_available() -> bool:
    """True when torch-npu imports (CANN present) and sees at least one NPU,
    or the emulated device is active (``NPU_SYNCBN_EMULATE_NPU=1``)."""
    if emulation.active():
        return True
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        importlib.import_module("torch_npu")
        return bool(torch.npu.is_available())
    except Exception:  # torch_npu without CANN fails in many ways at import
        return False


def default_backend() -> str:
    """hccl with torch-npu and an NPU, nccl with CUDA, else gloo (or $NPU_SYNCBN_BACKEND)."""
    explicit = os.environ.get(ENV_BACKEND)
    if explicit:
        return explicit
    if npu_available():
        return "hccl"
    if torch.cuda.is_available():
        return "nccl"
    return "gloo"


def _env_int(names: Sequence[str], what: str) -> int:
    for name in names:
        raw = os.environ.get(name)
        if raw is not None:
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"environment variable {name} must be an integer ({what}), got {raw!r}") from None
    raise RuntimeError(
        f"{what} is not set: set {' or '.join(names)} (launchers such as npu-syncbn-run, torchrun "
        "and msrun set it), or call torch.distributed.init_process_group yourself"
    )


def init(backend: Optional[str] = None, timeout: Optional[Union[float, datetime.timedelta]] = None) -> None:
    """Initialise the default process group from the launcher's environment.

    Reads RANK (or msrun's RANK_ID), WORLD_SIZE (or RANK_SIZE), MASTER_ADDR
    (default 127.0.0.1) and MASTER_PORT. ``backend`` defaults to
    :func:`default_backend`. ``timeout`` (seconds or timedelta) bounds every
    collective; default :func:`default_timeout`. A no-op when already initialised.
    On NPU/CUDA the current device is set to LOCAL_RANK (or DEVICE_ID).
    """
    if dist.is_initialized():
        return
    rank = _env_int(("RANK", "RANK_ID"), "the rank of this process")
    world_size = _env_int(("WORLD_SIZE", "RANK_SIZE"), "the number of processes")
    if "MASTER_PORT" not in os.environ:
        raise RuntimeError("MASTER_PORT is not set: the rendezvous needs MASTER_ADDR and MASTER_PORT")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    backend = backend or default_backend()
    if timeout is None:
        timeout = default_timeout()
    elif not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(seconds=float(timeout))
    if backend == "hccl":
        if not emulation.active():
            importlib.import_module("torch_npu")
        torch.npu.set_device(get_local_rank())
    elif backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)


def get_local_rank() -> int:
    """This process's index on its node: LOCAL_RANK (or msrun's DEVICE_ID), default 0."""
    for name in ("LOCAL_RANK", "DEVICE_ID"):
        if name in os.environ:
            return int(os.environ[name])
    return 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_non_member(group) -> bool:
    """``group`` is ``GroupMember.NON_GROUP_MEMBER``: what ``dist.new_group``
    returns to the ranks it leaves out (an int sentinel in torch, not a group)."""
    return type(group) is int and group == dist.GroupMember.NON_GROUP_MEMBER


def resolve_group(group: GroupLike) -> Optional[dist.ProcessGroup]:
    """ProcessGroup for ``group``; None means "no distributed run" (local BatchNorm).

    A str must name a group made with :func:`create_group` that this rank belongs to."""
    if isinstance(group, str):
        if group not in _NAMED_GROUPS:
            known = ", ".join(sorted(_NAMED_GROUPS)) or "none"
            raise ValueError(f"process_group {group!r} is not a group made with create_group (known: {known})")
        pg = _NAMED_GROUPS[group]
        if pg is None:
            raise ValueError(
                f"this rank ({dist.get_rank()}) is not a member of process_group {group!r} "
                f"(ranks {_NAMED_RANKS[group]})"
            )
        return pg
    if group is None:
        return dist.group.WORLD if is_distributed() else None
    if isinstance(group, dist.ProcessGroup):
        return group
    raise TypeError(
        f"process_group must be None, a torch.distributed.ProcessGroup or a str made with create_group, "
        f"got {type(group).__name__}"
    )


def get_rank(group: GroupLike = None) -> int:
    """Rank of this process within ``group`` (0 when not distributed)."""
    pg = resolve_group(group)
    return 0 if pg is None else dist.get_rank(pg)


def get_group_size(group: GroupLike = None) -> int:
    """Number of processes in ``group`` (1 when not distributed)."""
    pg = resolve_group(group)
    return 1 if pg is None else dist.get_world_size(pg)


def group_name_of(group: GroupLike) -> str:
    """Readable name of a group for error messages."""
    if isinstance(group, str):
        return repr(group)
    if group is None or group is dist.group.WORLD:
        return "the default group (WORLD)"
    return f"group with global ranks {dist.get_process_group_ranks(group)}"


def create_group(name: str, rank_ids: Sequence[int]) -> None:
    """Create a named group of global ``rank_ids`` (MindSpore's create_group).

    Only the member ranks need to call it (torch's local synchronization);
    a non-member may call it too and is recorded as a non-member. Raises
    ValueError for a used name, an empty or duplicated rank list, or a rank
    id outside [0, world_size); TypeError for a non-str name or non-int ids.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not is_distributed():
        raise RuntimeError("create_group needs an initialised process group: call npu_syncbn.init() first")
    if name in _NAMED_GROUPS:
        raise ValueError(f"a group named {name!r} exists already (ranks {_NAMED_RANKS[name]})")
    world = dist.get_world_size()
    ranks = validate_rank_ids(rank_ids, world, "rank_ids")
    if dist.get_rank() in ranks:
        pg = _new_member_group(name, ranks)
    else:
        pg = None
    _NAMED_GROUPS[name] = pg
    _NAMED_RANKS[name] = ranks


def _new_member_group(name: str, ranks: List[int]) -> dist.ProcessGroup:
    """``dist.new_group`` that only the member ranks call.

    torch names such groups by hashing the ranks together with the number of
    groups the calling rank already has; ranks that made different numbers of
    other groups before (normal when only members call create_group) would
    then rendezvous under different names and hang. The name is made from our
    group name, the ranks and how often this name was created before (all
    identical on every member) instead. The count matters: the store keeps a
    destroyed group's keys, so a re-created group under the same name could
    read its predecessor's addresses and get "Connection refused"."""
    c10d = dist.distributed_c10d
    original = getattr(c10d, "_process_group_name", None)
    if original is None:  # a torch without this hook: its own naming applies
        return dist.new_group(ranks, use_local_synchronization=True, timeout=default_timeout())
    generation = _CREATIONS.get(name, 0)
    _CREATIONS[name] = generation + 1
    digest = hashlib.sha1(f"npu_syncbn/{name}/{ranks}/{generation}".encode()).hexdigest()
    c10d._process_group_name = lambda _ranks, use_hashed_name: digest
    try:
        return dist.new_group(ranks, use_local_synchronization=True, timeout=default_timeout())
    finally:
        c10d._process_group_name = original


def validate_rank_ids(rank_ids: Sequence[int], world_size: int, what: str) -> List[int]:
    """Check a list of distinct int rank ids in [0, world_size); return it as a list."""
    if isinstance(rank_ids, (str, bytes)) or not hasattr(rank_ids, "__iter__"):
        raise TypeError(f"{what} must be a list of int rank ids, got {type(rank_ids).__name__}")
    ranks = list(rank_ids)
    if not ranks:
        raise ValueError(f"{what} must name at least one rank, got an empty list")
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int):
            raise TypeError(f"{what} must hold int rank ids, got {r!r} ({type(r).__name__})")
        if not 0 <= r < world_size:
            raise ValueError(f"rank id {r} in {what} is not in range [0, {world_size}) (the world size)")
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"{what} names a rank twice: {ranks}")
    return ranks


def group_ranks(name: str) -> List[int]:
    """Global ranks of the group made with :func:`create_group` under ``name``."""
    if name not in _NAMED_RANKS:
        raise ValueError(f"no group named {name!r} (known: {', '.join(sorted(_NAMED_RANKS)) or 'none'})")
    return list(_NAMED_RANKS[name])


def is_member(name: str) -> bool:
    """Whether this rank belongs to the named group."""
    group_ranks(name)
    return _NAMED_GROUPS[name] is not None


def destroy_group(name: str) -> None:
    """Destroy a group made with :func:`create_group` and forget its name."""
    if name not in _NAMED_GROUPS:
        raise ValueError(f"no group named {name!r} (known: {', '.join(sorted(_NAMED_GROUPS)) or 'none'})")
    pg = _NAMED_GROUPS.pop(name)
    _NAMED_RANKS.pop(name)
    if pg is not None:
        forget_group(pg)
        shm.forget(pg)
        dist.destroy_process_group(pg)


# torch 2.13 deprecates all_gather_into_tensor (a FutureWarning per call) for
# all_gather_single, which torch < 2.13 does not have.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _uses_list_all_gather(pg: dist.ProcessGroup) -> bool:
    # gloo has no all_gather_into_tensor.
    return dist.get_backend(pg) == "gloo"


def shm_channel(buf: Tensor, pg: dist.ProcessGroup) -> Optional[shm.ShmChannel]:
    """The group's shared-memory channel for this eager CPU collective, if any (see shm.py)."""
    if buf.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    return shm.channel_for(pg, dist.get_world_size(pg))


def all_gather_rows(buf: Tensor, pg: Optional[dist.ProcessGroup], world_size: int) -> Tensor:
    """Gather a 1-D ``buf`` from every rank of ``pg``: returns (world_size, len(buf))."""
    if pg is None:  # a world of one: nothing to exchange
        return buf.unsqueeze(0)
    channel = shm_channel(buf, pg)
    if channel is not None:
        rows = channel.all_gather_rows(buf)
        if rows is not None:
            return rows
    if _uses_list_all_gather(pg):
        rows = [torch.empty_like(buf) for _ in range(world_size)]
        dist.all_gather(rows, buf, group=pg)
        return torch.stack(rows)
    # Flat (concatenation form): dynamo's functional remap of the stacked (W, n)
    # form copies a flat result into it and fails under torch.compile.
    out = buf.new_empty(world_size * buf.numel())
    _all_gather_single(out, buf, group=pg)
    return out.view(world_size, buf.numel())


def all_reduce_sum_start(buf: Tensor, pg: Optional[dist.ProcessGroup]) -> Optional[dist.Work]:
    """Start summing ``buf`` over ``pg`` in place; pass the result to :func:`wait`
    before reading ``buf``. Lets a small gloo collective travel while the
    caller computes (under torch.compile, and over shared memory, it runs at
    once: graphs order collectives by data dependencies, and shared memory
    takes microseconds)."""
    if pg is None:  # a world of one
        return None
    channel = shm_channel(buf, pg)
    if channel is not None and channel.all_reduce_sum(buf) is not None:
        return None
    if torch.compiler.is_compiling():
        dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=pg)
        return None
    return dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=pg, async_op=True)


def wait(work: Optional[dist.Work]) -> None:
    """Wait for a collective started by :func:`all_reduce_sum_start` (None: nothing to wait for)."""
    if work is not None:
        work.wait()


def all_reduce_sum(buf: Tensor, pg: Optional[dist.ProcessGroup]) -> Tensor:
    """Sum ``buf`` over ``pg`` in place and return it."""
    if pg is None:  # a world of one
        return buf
    channel = shm_channel(buf, pg)
    if channel is not None and channel.all_reduce_sum(buf) is not None:
        return buf
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=pg)
    return buf
