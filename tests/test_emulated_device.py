"""The emulated Ascend device in one process (NPU_SYNCBN_EMULATE_NPU=1): the
torch.npu calls, placement, factories, views, a training step against CPU,
host-transfer accounting and kernel errors. The device must exist before
first use, so the checks run in tests/emulated_device_probe.py, in two
subprocesses (default SoC and 8 devices; Ascend910B4 with 3 devices)."""
import json
import os
import subprocess
import sys
import warnings

import pytest

from conftest import REPO, emulated_device_built

PROBE = os.path.join(REPO, "tests", "emulated_device_probe.py")
_RUNS = {}


def probed(**env):
    """The probe's records under ``env`` (one subprocess per distinct env)."""
    key = tuple(sorted(env.items()))
    if key not in _RUNS:
        emulated_device_built()
        full = dict(os.environ, NPU_SYNCBN_EMULATE_NPU="1", **env)
        for name in ("NPU_SYNCBN_EMULATE_DEVICES", "NPU_SYNCBN_SOC", "NPU_SYNCBN_BLOCK_DIM"):
            if name not in env:
                full.pop(name, None)
        full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, PROBE], cwd=REPO, env=full, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip(), f"probe failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
        _RUNS[key] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _RUNS[key]


def record(name, **env):
    seen = probed(**env)[name]
    assert "error" not in seen, seen.get("error")
    return seen


def test_torch_npu_module():
    seen = record("device_module")
    assert seen["active"] and seen["route"] == "emulated" and seen["available"]
    assert seen["count"] == 8 and seen["start"] == 0
    assert (seen["after_int"], seen["after_str"], seen["after_device"]) == (7, 1, 2)
    assert seen["new_tensor_on_current"] == "npu:2"
    assert "0..7" in seen["bad_index"] and "NPU_SYNCBN_EMULATE_DEVICES" in seen["bad_index"]


def test_device_count_from_environment_and_other_soc():
    env = dict(NPU_SYNCBN_EMULATE_DEVICES="3", NPU_SYNCBN_SOC="Ascend910B4")
    seen = record("device_module", **env)
    assert seen["count"] == 3 and seen["after_int"] == 2 and "0..2" in seen["bad_index"]
    # 40 vector cores there, NPU_SYNCBN_BLOCK_DIM unset: the limits follow the SoC
    soc = record("soc_limits", **env)
    assert soc["device"] == "npu:0" and soc["max_err"] < 1e-5, soc


def test_placement_and_factories():
    seen = record("placement")
    assert (seen["device_1"], seen["to"], seen["to_index"], seen["npu"], seen["npu_index"]) == (
        "npu:1", "npu:0", "npu:2", "npu:0", "npu:3")
    assert seen["is_npu"] and seen["round_trip_equal"] and seen["cpu"] == "cpu" and seen["module"] == "npu:0"
    assert seen["deepcopy"] == ["npu:0", True, True] and seen["save_load"] == ["npu:0", True]
    for name, (device, equal) in record("factories").items():
        assert device == "npu:0" and equal, name


def test_views_and_in_place_ops_stay_on_npu_storage():
    seen = record("views_and_in_place")
    assert seen == {"devices": ["npu:0"], "storage_device": "npu:0", "views_share_storage": True, "values_equal": True}


def test_conv_linear_relu_sgd_step_equals_cpu_bitwise():
    seen = record("training_step_equals_cpu")
    assert seen == {"param_devices": ["npu:0"], "loss_device": "npu:0", "bitwise_equal": True, "losses_equal": True}


def test_host_transfers_count_host_reads():
    counts = record("host_transfers")
    for name in ("item", "tolist", "cpu", "to_cpu", "bool", "float", "print"):
        assert counts[name] >= 1, (name, counts)
    assert counts["on_device_math"] == 0 and counts["host_to_device"] == 0, counts


def test_sync_batchnorm_step_makes_no_host_transfer():
    seen = record("sync_batchnorm_step_makes_no_transfer")
    assert seen == {"0.1": 0, "0.1_output_device": "npu:0", "None": 0, "None_output_device": "npu:0"}


def test_kernel_error_names_op_and_kernel_and_op_refuses_bad_input():
    seen = record("kernel_errors")
    # the raw kernel route: the twin catches the launch reading past the 3-element weight
    raw = seen["raw_kernel"]
    assert raw.startswith("RuntimeError: npu_syncbn::batch_norm_elemt on the emulated npu: kernel 'batch_norm_elemt'"), raw
    assert "GM out of bounds" in raw, raw
    # the public op validates first, on the device as on CPU
    assert seen["public_op"] == "ValueError: weight must have shape (6,) (one value per channel), got (3,)"
    assert seen["after"] == 6


def test_variable_with_torch_npu_importable_warns_once_and_does_not_emulate(monkeypatch):
    from npu_syncbn import emulation

    assert not emulation.active(), "this pytest process must not be emulated"
    monkeypatch.setenv("NPU_SYNCBN_EMULATE_NPU", "1")
    monkeypatch.setattr(emulation, "_torch_npu_importable", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert emulation.activate_from_environment() is False
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert "NPU_SYNCBN_EMULATE_NPU" in messages[0] and "real NPU" in messages[0]
    assert not emulation.active()
    with pytest.raises(RuntimeError, match="not active"):
        emulation.host_transfers()


@pytest.mark.parametrize("raw", ["0", "65", "eight"])
def test_bad_device_count_is_refused(monkeypatch, raw):
    from npu_syncbn.emulation import device

    monkeypatch.setenv("NPU_SYNCBN_EMULATE_DEVICES", raw)
    with pytest.raises(ValueError, match="NPU_SYNCBN_EMULATE_DEVICES must be an integer in 1..64"):
        device.device_count_from_environment()
