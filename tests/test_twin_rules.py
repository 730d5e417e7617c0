"""The twin refuses kernels that break AscendC rules: a Python TwinError naming
the kernel and the rule, never a crash. The broken kernels are test-only
sources compiled into the twin library (op_kernels/twin/tests/broken_kernels.cpp)."""
import pytest

from npu_syncbn import twin

CASES = [
    ("twin_broken_ub_overflow", "UB overflow", 1),
    ("twin_broken_misaligned_copy", "misaligned DataCopy", 1),
    ("twin_broken_queue_leak", "queue imbalance", 1),
    ("twin_broken_deque_empty", "queue imbalance", 1),
    ("twin_broken_double_alloc", "queue imbalance", 1),
    ("twin_broken_skip_syncall", "SyncAll imbalance", 4),
    ("twin_broken_gm_overrun", "GM out of bounds", 1),
    ("twin_broken_ub_overflow", "UB overflow", 48),
]


def run(name, cores):
    lib = twin.library()
    rc = lib.twin_run_test_kernel(name.encode(), cores)
    if rc == 1:
        raise twin.TwinError(lib.twin_last_error().decode())
    assert rc == 0, lib.twin_last_error().decode()


@pytest.mark.parametrize("name,rule,cores", CASES)
def test_rule_break_raises_twin_error(name, rule, cores):
    with pytest.raises(twin.TwinError) as info:
        run(name, cores)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert name in str(err) and rule in str(err)
    assert err.kernel == name and err.rule == rule


def test_correct_kernel_passes_on_many_cores():
    for cores in (1, 8, 32):
        run("twin_ok_copy", cores)


def test_twin_stays_usable_after_a_failure():
    with pytest.raises(twin.TwinError):
        run("twin_broken_skip_syncall", 8)
    run("twin_ok_copy", 8)
    import torch

    mean, _ = twin.batch_norm_stats(torch.ones(2, 3, 4), 1e-5, block_dim=8)
    assert mean.tolist() == [1.0, 1.0, 1.0]
