"""Transfer accounting of the emulated device: how often data left it, and
how many bytes it copied within itself (layout copies such as .contiguous())."""
from __future__ import annotations

from . import device


def host_transfers() -> int:
    """Device-to-host copies and host reads of device data since import:
    ``.cpu()``, ``.to("cpu")``, ``.item()``, ``.tolist()``, printing, Python
    ``bool()`` on an npu tensor. A training step that syncs with the host
    shows up here; one of SyncBatchNorm on "npu" makes none."""
    return int(device.extension().host_transfers())


def device_copy_bytes() -> int:
    """Bytes copied from npu memory to npu memory since import (``copy_``,
    ``clone``, ``.contiguous()`` of a non-contiguous tensor): a layout copy of
    an activation shows up here as that activation's size."""
    return int(device.extension().device_copy_bytes())
