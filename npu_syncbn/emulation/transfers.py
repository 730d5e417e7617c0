"""Host-transfer accounting of the emulated device: how often data left it."""
from __future__ import annotations

from . import device


def host_transfers() -> int:
    """Device-to-host copies and host reads of device data since import:
    ``.cpu()``, ``.to("cpu")``, ``.item()``, ``.tolist()``, printing, Python
    ``bool()`` on an npu tensor. A training step that syncs with the host
    shows up here; one of SyncBatchNorm on "npu" makes none."""
    return int(device.extension().host_transfers())
