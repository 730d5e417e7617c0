"""Training on the emulated npu device over "hccl", two ranks: SyncBatchNorm
steps equal float64 BatchNorm2d on the global batch with no host transfer
(issue 12's "done when"), DDP with convert/revert and a state_dict round trip
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
