"""``convert_sync_batchnorm(..., fuse=True)``: fold the ReLU (and a residual
add before it) that provably follows a SyncBatchNorm into the layer
(``activation="relu"``, ``forward(x, residual)``), and what
``revert_sync_batchnorm`` needs to undo it.

Provably means from the code that runs, never from names:

* ``nn.Sequential`` (exactly that class, whose forward chains its children):
  a SyncBatchNorm directly followed by an ``nn.ReLU`` (exactly that class).
  The ReLU is replaced by :class:`FusedReLU`, an identity that remembers it.
* other blocks (torchvision's BasicBlock/Bottleneck style: leaf layers,
  Sequentials of them, no parameters of their own) are traced with
  ``torch.fx``; where a SyncBatchNorm's output has a single user, a ReLU
  (module, ``torch.relu`` or ``F.relu``), or a single-user ``+`` / ``+=``
  whose single user is a ReLU, the graph calls the layer as
  ``bn(x, residual)`` instead, and the block becomes a ``GraphModule``
  (same submodules, same state_dict keys) that keeps the original block for
  revert. A block that does not trace is left as it is.

In both, the SyncBatchNorm must be used once in the whole model, and no
module involved may carry hooks (they would see other tensors).
"""
from __future__ import annotations

import operator
from collections import Counter
from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import fx, nn

_RELU_FUNCTIONS = (torch.relu, F.relu, torch.relu_)
_ADDS = (operator.add, operator.iadd, torch.add)
_ORIGINAL = "_npu_syncbn_unfused"  # the block a GraphModule was traced from


class FusedReLU(nn.Identity):
    """Stands where an ``nn.ReLU`` was folded into the SyncBatchNorm before it;
    ``revert_sync_batchnorm`` puts ``nn.ReLU(inplace)`` back."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"folded into the preceding SyncBatchNorm (was ReLU(inplace={self.inplace}))"


def original_block(module: nn.Module) -> Optional[nn.Module]:
    """The block a fused GraphModule replaced, or None."""
    return module.__dict__.get(_ORIGINAL)


def fold(root: nn.Module, bn_cls: Type[nn.Module]) -> nn.Module:
    """Fold provable ReLUs into the ``bn_cls`` layers of ``root``; returns the
    root (a GraphModule when the root itself is a traced block)."""
    uses = Counter(id(m) for _, m in root.named_modules(remove_duplicate=False))
    return _fold(root, bn_cls, uses)


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _foldable_bn(m, bn_cls, uses) -> bool:
    return isinstance(m, bn_cls) and m.activation is None and uses[id(m)] == 1 and not _hooked(m)


def _mark(bn: nn.Module) -> None:
    bn.activation = "relu"
    bn._relu_folded = True  # revert: the model around it applies the ReLU again


def _fold(module: nn.Module, bn_cls, uses) -> nn.Module:
    for name, child in list(module.named_children()):
        new = _fold(child, bn_cls, uses)
        if new is not child:
            setattr(module, name, new)
    if type(module) is nn.Sequential:
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            bn, relu = module._modules[a], module._modules[b]
            if _foldable_bn(bn, bn_cls, uses) and type(relu) is nn.ReLU and uses[id(relu)] == 1 and not _hooked(relu):
                _mark(bn)
                module._modules[b] = FusedReLU(relu.inplace)
        return module
    if _is_block(module, bn_cls):
        return _fold_block(module, bn_cls, uses) or module
    return module


def _is_block(module: nn.Module, bn_cls) -> bool:
    """A user block made only of torch.nn leaves, Sequentials of them and bn_cls layers."""
    if type(module).__module__.startswith("torch.") or isinstance(module, (bn_cls, fx.GraphModule)) or _hooked(module):
        return False
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        return False  # a GraphModule would hold its own copies of the block's buffers
    children = list(module.modules())[1:]
    if not any(isinstance(m, bn_cls) for m in children):
        return False
    return all(isinstance(m, bn_cls) or type(m).__module__.startswith("torch.nn") for m in children)


class _Tracer(fx.Tracer):
    def __init__(self, bn_cls) -> None:
        super().__init__()
        self.bn_cls = bn_cls

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.bn_cls) or super().is_leaf_module(m, qualname)


def _sole_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_relu_of(node: Optional[fx.Node], arg: fx.Node, block: nn.Module) -> bool:
    if node is None or node.args[:1] != (arg,):
        return False
    if node.op == "call_module":
        m = block.get_submodule(node.target)
        return type(m) is nn.ReLU and not _hooked(m) and len(node.args) == 1 and not node.kwargs
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return len(node.args) == 1 and set(node.kwargs) <= {"inplace"}
    return False


def _residual_of(add: Optional[fx.Node], bn_node: fx.Node) -> Optional[fx.Node]:
    """The other operand of ``bn + other`` (``+=`` only with bn on the left), or None."""
    if add is None or add.op != "call_function" or add.target not in _ADDS or len(add.args) != 2 or add.kwargs:
        return None
    left, right = add.args
    if left is bn_node and isinstance(right, fx.Node):
        return right
    if right is bn_node and isinstance(left, fx.Node) and add.target is not operator.iadd:
        return left
    return None


def _fold_block(block: nn.Module, bn_cls, uses) -> Optional[fx.GraphModule]:
    try:
        graph = _Tracer(bn_cls).trace(block)
    except Exception:  # data-dependent control flow and the like: leave the block alone
        return None
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    order = {n: i for i, n in enumerate(graph.nodes)}
    folded = False
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        bn = block.get_submodule(node.target)
        if not _foldable_bn(bn, bn_cls, uses):
            continue
        user = _sole_user(node)
        residual = _residual_of(user, node)
        add, relu = (user, _sole_user(user)) if residual is not None else (None, user)
        if not _is_relu_of(relu, add if add is not None else node, block):
            continue
        relu.replace_all_uses_with(node)
        graph.erase_node(relu)
        if add is not None:
            graph.erase_node(add)
            node.args = (node.args[0], residual)
            if order[residual] > order[node]:
                # (torchvision computes the downsampled identity after bn2):
                # the layer now runs once its residual exists; nothing between
                # reads its output, so only the order of independent calls moves.
                residual.append(node)
        _mark(bn)
        folded = True
    if not folded:
        return None
    graph.lint()
    gm = fx.GraphModule(block, graph, class_name=type(block).__name__)
    # Submodules in the block's order (GraphModule registers them in call
    # order): the same parameters() order, hence the same optimizer state layout.
    rank = {name: i for i, name in enumerate(block._modules)}
    gm._modules = type(gm._modules)(sorted(gm._modules.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    gm.__dict__[_ORIGINAL] = block  # not a submodule: no second copy in state_dict or parameters()
    return gm
