"""Checkpoint names between MindSpore's BatchNorm and torch's: the dict
converters :func:`from_mindspore_state_dict` / :func:`to_mindspore_state_dict`
and the renaming a layer does when it loads MindSpore names itself.

MindSpore names a cell's parameters by attribute inside a network
(``bn1.gamma``, ``bn1.moving_mean``) and by their own names in a bare layer
(``gamma``, ``beta``, ``mean``, ``variance``); torch uses ``weight``, ``bias``,
``running_mean``, ``running_var`` and ``num_batches_tracked``.

Written from MindSpore's public documentation; no MindSpore code is used.
"""
from __future__ import annotations

import collections
import numbers
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "from_mindspore_state_dict",
    "to_mindspore_state_dict",
    "accept_mindspore_names",
    "MINDSPORE_TO_TORCH",
    "TORCH_TO_MINDSPORE",
    "BARE_MINDSPORE_TO_TORCH",
    "BARE_TORCH_TO_MINDSPORE",
]

# MindSpore BatchNorm parameter name -> torch name, for a layer inside a network
# (MindSpore names a cell's parameters by attribute: "bn1.moving_mean") ...
MINDSPORE_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
TORCH_TO_MINDSPORE = {v: k for k, v in MINDSPORE_TO_TORCH.items()}
# ... and for a bare layer, whose checkpoint has its parameters' own names.
BARE_MINDSPORE_TO_TORCH = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "variance": "running_var"}
BARE_TORCH_TO_MINDSPORE = {v: k for k, v in BARE_MINDSPORE_TO_TORCH.items()}


def accept_mindspore_names(state_dict, prefix, error_msgs) -> None:
    """Rename this layer's MindSpore keys in ``state_dict`` to torch's (in place);
    a missing num_batches_tracked is then 0."""
    renamed = False
    for ms_name, torch_name in {**MINDSPORE_TO_TORCH, **BARE_MINDSPORE_TO_TORCH}.items():
        key = prefix + ms_name
        if key in state_dict:
            if prefix + torch_name in state_dict:
                error_msgs.append(f"both {key!r} and {prefix + torch_name!r} in the state_dict")
                continue
            state_dict[prefix + torch_name] = _as_tensor(state_dict.pop(key))
            renamed = True
    if renamed and prefix + "num_batches_tracked" not in state_dict:
        state_dict[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)


def _as_tensor(value):
    if isinstance(value, Tensor):
        return value
    if hasattr(value, "__array__") or isinstance(value, numbers.Number):
        return torch.as_tensor(value)
    return value


def _split(key: str):
    prefix, _, leaf = key.rpartition(".")
    return (prefix + "." if prefix else ""), leaf


def _bn_prefixes(keys: Iterable[str], stats: Sequence[str]) -> set:
    found = collections.defaultdict(set)
    for key in keys:
        prefix, leaf = _split(key)
        if leaf in stats:
            found[prefix].add(leaf)
    return {p for p, leaves in found.items() if leaves == set(stats)}


def _rename(d: Mapping[str, Any], mapping: Dict[str, str], bare_mapping: Dict[str, str], prefixes: set,
            convert) -> "collections.OrderedDict[str, Any]":
    # bare_mapping for the prefix "": a bare layer.
    out: "collections.OrderedDict[str, Any]" = collections.OrderedDict()
    for key, value in d.items():
        prefix, leaf = _split(key)
        names = bare_mapping if prefix == "" else mapping
        new_key = prefix + names[leaf] if (prefix in prefixes and leaf in names) else key
        if new_key in out or (new_key != key and new_key in d):
            raise ValueError(f"state_dict has both {key!r} and {new_key!r}: cannot rename one onto the other")
        out[new_key] = convert(value)
    return out


def _layers(layers: Optional[Iterable[str]]) -> Optional[set]:
    if layers is None:
        return None
    return {(p if p.endswith(".") or p == "" else p + ".") for p in layers}


def from_mindspore_state_dict(d: Mapping[str, Any], layers: Optional[Iterable[str]] = None) -> "collections.OrderedDict[str, Tensor]":
    """MindSpore checkpoint names -> torch names, for ``load_state_dict``.

    In every BatchNorm layer (a prefix with both ``moving_mean`` and
    ``moving_variance``, or the prefixes given in ``layers``, e.g.
    ``["backbone.bn1"]``) renames ``gamma`` -> ``weight``, ``beta`` ->
    ``bias``, ``moving_mean`` -> ``running_mean``, ``moving_variance`` ->
    ``running_var``. In a bare layer's checkpoint (no prefix, with both
    ``mean`` and ``variance``, as MindSpore saves a layer that is not inside a
    network; or ``""`` in ``layers``) ``mean`` and ``variance`` become
    ``running_mean`` and ``running_var``. Adds ``num_batches_tracked``
    = 0 (int64) when the dict has none for that layer (MindSpore keeps no such
    counter; it only matters for torch's momentum=None). Other keys (including
    ``gamma``/``beta`` of non-BatchNorm layers such as LayerNorm) are kept as they are.

    Values may be torch tensors, numpy arrays or numbers (numpy arrays and
    numbers become tensors). Returns a new ordered dict; ``d`` is not modified.
    ValueError when a renamed key would collide with an existing one.
    """
    prefixes = _layers(layers)
    if prefixes is None:
        prefixes = _bn_prefixes(d.keys(), ("moving_mean", "moving_variance"))
        if "mean" in d and "variance" in d:
            prefixes.add("")
    out = _rename(d, MINDSPORE_TO_TORCH, BARE_MINDSPORE_TO_TORCH, prefixes, _as_tensor)
    for prefix in sorted(prefixes):
        if prefix + "running_mean" in out and prefix + "num_batches_tracked" not in out:
            out[prefix + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def to_mindspore_state_dict(
    d: Mapping[str, Any], num_batches_tracked: str = "drop", layers: Optional[Iterable[str]] = None
) -> "collections.OrderedDict[str, Any]":
    """torch names -> MindSpore checkpoint names (the inverse of :func:`from_mindspore_state_dict`).

    In every BatchNorm layer (a prefix with both ``running_mean`` and
    ``running_var``, or the prefixes given in ``layers``) renames ``weight`` ->
    ``gamma``, ``bias`` -> ``beta``, ``running_mean`` -> ``moving_mean``,
    ``running_var`` -> ``moving_variance``; a bare layer's (no prefix) moving
    statistics become ``mean`` and ``variance``, the names of a bare MindSpore
    layer, so the dict loads strictly with ``load_param_into_net`` into a
    layer or a network alike. Other keys (a Conv's ``weight`` ...) are kept.
    Values are kept as given (tensors stay tensors).

    ``num_batches_tracked`` has no MindSpore counterpart; what happens to a
    BatchNorm layer's counter is chosen, never silent:

    * ``"drop"`` (default): left out (a MindSpore net has no such parameter;
      the counter only matters for torch's momentum=None, which MindSpore lacks).
      :func:`from_mindspore_state_dict` brings it back as 0;
    * ``"keep"``: kept under its torch name (round trips exactly; MindSpore
      would see an extra parameter);
    * ``"error"``: ValueError if any counter is non-zero (dropping it would lose
      information), else dropped.
    """
    if num_batches_tracked not in ("drop", "keep", "error"):
        raise ValueError(f"num_batches_tracked must be 'drop', 'keep' or 'error', got {num_batches_tracked!r}")
    prefixes = _layers(layers)
    if prefixes is None:
        prefixes = _bn_prefixes(d.keys(), ("running_mean", "running_var"))
    out = _rename(d, TORCH_TO_MINDSPORE, BARE_TORCH_TO_MINDSPORE, prefixes, lambda v: v)
    if num_batches_tracked != "keep":
        for prefix in prefixes:
            key = prefix + "num_batches_tracked"
            if key in out:
                if num_batches_tracked == "error" and int(_as_tensor(out[key])) != 0:
                    raise ValueError(
                        f"{key} = {int(_as_tensor(out[key]))} has no MindSpore counterpart; pass "
                        "num_batches_tracked='drop' to leave it out or 'keep' to keep it"
                    )
                del out[key]
    return out
