"""Training on the emulated npu device over "hccl", two ranks: SyncBatchNorm
steps equal float64 BatchNorm2d on the global batch with no host transfer
(what the emulated device promises), DDP with convert/revert and a state_dict round trip
npu -> cpu -> npu, kernel errors on every rank, CPU tensors refused."""
import pytest

import emulated_scenarios

TOL = 2e-5  # float32 against float64: a few ulps


@pytest.mark.parametrize("momentum", [0.1, None])
def test_step_on_npu_equals_global_batchnorm_without_host_transfer(ranks, momentum):
    for rank, seen in enumerate(ranks(2, "npu").run(emulated_scenarios.step_equals_global_batchnorm, momentum)):
        assert (seen.pop("device"), seen.pop("param_device"), seen.pop("output_device")) == (f"npu:{rank}",) * 3
        assert seen.pop("transfers") == 0, f"rank {rank}: the step read device data on the host"
        assert seen.pop("batches") == 2
        bad = {k: v for k, v in seen.items() if not v <= TOL}
        assert not bad, f"rank {rank}: errors above {TOL}: {bad}"


def test_ddp_convert_revert_and_state_dict_round_trip(ranks):
    for rank, seen in enumerate(ranks(2, "npu").run(emulated_scenarios.ddp_convert_state_dict_round_trip)):
        assert "SyncBatchNorm" in seen["types"] and "BatchNorm2d" not in seen["types"]
        assert seen["state_devices"] == [f"npu:{rank}"] and seen["loaded_devices"] == ["cpu"]
        assert "BatchNorm2d" in seen["reverted"] and "SyncBatchNorm" not in seen["reverted"]
        assert seen["again_devices"] == [f"npu:{rank}"]  # .npu() takes the current device: LOCAL_RANK
        for key in ("trained", "cpu_inference", "npu_inference"):
            assert seen[key] < 1e-5, (rank, key, seen)


def test_kernel_error_raises_on_every_rank_and_nothing_hangs(ranks):
    for rank, seen in enumerate(ranks(2, "npu").run(emulated_scenarios.kernel_error_on_every_rank, timeout=60)):
        assert seen["error"].startswith("npu_syncbn::batch_norm_elemt on the emulated npu: kernel 'batch_norm_elemt'"), seen
        assert "GM out of bounds" in seen["error"], seen
        assert seen["after"] == [2.0, 2.0]


def test_hccl_refuses_cpu_tensors(ranks):
    for message in ranks(2, "npu").run(emulated_scenarios.cpu_tensors_refused):
        assert "No backend type associated with device type cpu" in message or "npu tensors only" in message, message


@pytest.mark.parametrize("layout", ["channels_last", "channels_last_3d", "2d"])
def test_channels_last_and_2d_steps_make_no_layout_copy(ranks, layout):
    """The C-last kernels take channels_last, channels_last_3d and
    (N, C) input as they are: the whole training step copies less than one
    activation within the device, and y and dx keep the input's layout."""
    for rank, seen in enumerate(ranks(2, "npu").run(emulated_scenarios.layout_copies_in_step, layout)):
        assert seen["copied_bytes"] < seen["activation_bytes"], (rank, seen)
        assert seen["y_layout_kept"] and seen["dx_layout_kept"], (rank, seen)
        assert seen["output"] <= TOL and seen["grad_input"] <= TOL, (rank, seen)


def test_non_dense_input_takes_one_copy_and_the_counter_sees_it(ranks):
    """The counter can fail: a strided input that is dense in no layout is
    copied once per kernel that reads it (stats, elemt, backward reduce and elemt)."""
    for rank, seen in enumerate(ranks(2, "npu").run(emulated_scenarios.layout_copies_in_step, "strided")):
        assert seen["copied_bytes"] >= seen["activation_bytes"], (rank, seen)
        assert seen["output"] <= TOL and seen["grad_input"] <= TOL, (rank, seen)
