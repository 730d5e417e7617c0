"""Transfer accounting of the emulated device: how often data left it, how
many bytes it copied within itself (layout copies such as .contiguous()), and
what each of our kernels read and wrote in global memory."""
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


def take_kernel_log():
    """Our kernels launched since the last call, in launch order, as
    ``[(kernel, block_dim, {gm_buffer: (bytes_read, bytes_written)})]``: the
    twin's count of every DataCopy / DataCopyPad, the GM traffic an NPU would
    see. The log is emptied; it starts with the first call (launches before
    it are not recorded, so a run that never asks keeps no log)."""
    return [(k, int(b), {n: (int(r), int(w)) for n, (r, w) in bufs.items()})
            for k, b, bufs in device.extension().take_kernel_log()]
