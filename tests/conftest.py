import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from dist_utils import RankPool  # noqa: E402

_POOLS = {}
_DEVICE_BUILD = {}  # "error": why the emulated device cannot be built ("" once it loaded)
BUILD_TIMEOUT_S = 900  # the first build of the device extension takes about a minute on 2 cores
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emulated_device_built() -> None:
    """Build (or load from TORCH_EXTENSIONS_DIR) the emulated device once, in a
    subprocess so this process never registers it; fails every emulated test,
    loudly and with the compiler's output, when it cannot be built."""
    if "error" not in _DEVICE_BUILD:
        code = "from npu_syncbn.emulation import device; device.extension()"
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S)
            _DEVICE_BUILD["error"] = "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-4000:]
        except subprocess.TimeoutExpired:
            _DEVICE_BUILD["error"] = f"building the emulated npu device took over {BUILD_TIMEOUT_S} s"
    if _DEVICE_BUILD["error"]:
        pytest.fail("the emulated npu device (npu_syncbn/emulation/csrc) does not build:\n" + _DEVICE_BUILD["error"])


@pytest.fixture(scope="session")
def ranks():
    """``ranks(world_size)`` -> a live RankPool of gloo ranks on CPU;
    ``ranks(world_size, "npu")`` -> one of "hccl" ranks on the emulated npu
    device. Rebuilt if a test broke it."""

    def get(world_size: int, device: str = "cpu") -> RankPool:
        assert device in ("cpu", "npu"), device
        if device == "npu":
            emulated_device_built()
        key = (world_size, device)
        pool = _POOLS.get(key)
        if pool is None or pool.broken:
            pool = _POOLS[key] = RankPool(world_size, emulate_npu=device == "npu")
        return pool

    yield get
    for pool in _POOLS.values():
        pool.close()
