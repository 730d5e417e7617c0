"""npu_syncbn.mint.SyncBatchNorm: the mindspore.mint.nn.SyncBatchNorm front."""
import pytest
import torch
import torch.distributed as dist

import front_scenarios
from npu_syncbn import mint
from npu_syncbn.modules import SyncBatchNorm as TorchFront

TOL = 1e-12


# ----------------------------------------------------------------------------- documented errors


@pytest.mark.parametrize("num_features", [2.0, "2", None, True])
def test_num_features_not_int_is_type_error(num_features):
    with pytest.raises(TypeError, match="num_features"):
        mint.SyncBatchNorm(num_features)


@pytest.mark.parametrize("num_features", [0, -3])
def test_num_features_below_one_is_value_error(num_features):
    with pytest.raises(ValueError, match="num_features"):
        mint.SyncBatchNorm(num_features)


@pytest.mark.parametrize("eps", [1, "1e-5", None, True])
def test_eps_not_float_is_type_error(eps):
    with pytest.raises(TypeError, match="eps"):
        mint.SyncBatchNorm(2, eps=eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan")])
def test_momentum_outside_unit_interval_is_value_error(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in range \[0, 1\]"):
        mint.SyncBatchNorm(2, momentum=momentum)


@pytest.mark.parametrize("momentum", ["0.1", True])
def test_momentum_must_be_a_number(momentum):
    with pytest.raises(TypeError, match="momentum"):
        mint.SyncBatchNorm(2, momentum=momentum)


def test_momentum_none_is_the_cumulative_average():
    # MindSpore's mint.nn.SyncBatchNorm takes None, as torch does: running stats = mean of the batches so far
    torch.manual_seed(2)
    m = mint.SyncBatchNorm(3, momentum=None, dtype=torch.float64).set_train()
    batches = [torch.randn(4, 3, 2, 2, dtype=torch.float64) * 2 + k for k in range(3)]
    for x in batches:
        m(x)
    close = dict(rtol=TOL, atol=TOL)
    torch.testing.assert_close(m.running_mean, torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0), **close)
    unbiased = [x.transpose(0, 1).reshape(3, -1).var(dim=1) for x in batches]
    torch.testing.assert_close(m.running_var, sum(unbiased) / 3, **close)  # step n weighs 1/n: the first replaces
    assert int(m.num_batches_tracked) == 3 and m.momentum is None


@pytest.mark.parametrize("momentum", [0.0, 1.0, 0, 1])
def test_momentum_bounds_accepted(momentum):
    assert mint.SyncBatchNorm(2, momentum=momentum).momentum == float(momentum)


@pytest.mark.parametrize("group", [0, ["0-1"], object()])
def test_process_group_must_be_a_str(group):
    with pytest.raises(TypeError, match="process_group"):
        mint.SyncBatchNorm(2, process_group=group)


def test_process_group_name_without_init_is_value_error():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="npu_syncbn.init"):
        mint.SyncBatchNorm(2, process_group="0-1")


@pytest.mark.parametrize("flag", ["affine", "track_running_stats"])
def test_bool_flags_checked(flag):
    with pytest.raises(TypeError, match=flag):
        mint.SyncBatchNorm(2, **{flag: 1})


def test_named_group_errors_at_construction(ranks):
    for rank, seen in enumerate(ranks(2).run(front_scenarios.mint_group_errors)):
        assert "not a group made with npu_syncbn.create_group" in seen["unknown"]
        assert "not in range [0, 2)" in seen["create_out_of_range"]
        assert "not in range [0, 2)" in seen["stale_out_of_range"]
        if rank == 0:
            assert "not a member" in seen["non_member"]
        else:
            assert seen["non_member"] == "constructed"


# ----------------------------------------------------------------------------- dtype


@pytest.mark.parametrize("dtype, expected", [
    (None, torch.float32), (torch.float64, torch.float64), ("float64", torch.float64), ("float16", torch.float16),
    ("mindspore.float16", torch.float16), ("torch.bfloat16", torch.bfloat16), ("FP32", torch.float32),
])
def test_dtype_of_parameters(dtype, expected):
    m = mint.SyncBatchNorm(3, dtype=dtype)
    for t in (m.weight, m.bias, m.running_mean, m.running_var):
        assert t.dtype == expected


@pytest.mark.parametrize("dtype, exc", [("int32", ValueError), ("float8", ValueError), (torch.int64, ValueError),
                                        (32, TypeError), (float, TypeError)])
def test_bad_dtype(dtype, exc):
    with pytest.raises(exc, match="dtype"):
        mint.SyncBatchNorm(3, dtype=dtype)


# ----------------------------------------------------------------------------- modes and semantics


def test_is_the_torch_front_and_starts_in_inference_mode():
    m = mint.SyncBatchNorm(2)
    assert isinstance(m, TorchFront)
    assert not m.training  # a MindSpore Cell starts in inference mode
    assert m.set_train() is m and m.training
    assert m.set_train(False) is m and not m.training
    parent = torch.nn.Sequential(torch.nn.Identity(), m)
    parent.train()
    assert m.training


def test_seed_example_single_process():
    m = mint.SyncBatchNorm(num_features=2, dtype=torch.float32)
    m.set_train(False)
    x = torch.linspace(0, 5, 2 * 2 * 2 * 2).reshape(2, 2, 2, 2)
    torch.testing.assert_close(m(x), x / torch.sqrt(torch.tensor(1 + 1e-5)))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_local_equals_torch_batchnorm(affine, track):
    torch.manual_seed(0)
    m = mint.SyncBatchNorm(3, momentum=0.3, affine=affine, track_running_stats=track, dtype=torch.float64).set_train()
    ref = torch.nn.BatchNorm2d(3, momentum=0.3, affine=affine, track_running_stats=track).double()
    for _ in range(3):
        x = torch.randn(4, 3, 5, 2, dtype=torch.float64) * 2 + 1
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y1, y2 = m(x1), ref(x2)
        torch.testing.assert_close(y1, y2, rtol=TOL, atol=TOL)
        g = torch.randn_like(x)
        y1.backward(g), y2.backward(g)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=TOL, atol=TOL)
    if track:
        torch.testing.assert_close(m.running_mean, ref.running_mean, rtol=TOL, atol=TOL)
        torch.testing.assert_close(m.running_var, ref.running_var, rtol=TOL, atol=TOL)
    m.set_train(False), ref.eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), ref(x), rtol=TOL, atol=TOL)


def test_affine_false_has_no_weight_and_bias():
    # As MindSpore's mint.nn.SyncBatchNorm runs it (and torch): no gamma/beta at all, so checkpoints load strictly
    m = mint.SyncBatchNorm(3, affine=False)
    assert m.affine is False and m.weight is None and m.bias is None
    assert set(m.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}
    assert list(m.parameters()) == []
    assert "affine=False" in repr(m)
    ref = torch.nn.BatchNorm2d(3, affine=False)
    assert not m.load_state_dict(ref.state_dict(), strict=True).missing_keys


# ----------------------------------------------------------------------------- 2 ranks


@pytest.mark.parametrize("group_name, counts, sync_mode", [
    (None, [3, 5], "auto"), ("0-1", [4, 2], "allgather"), ("0-1", [2, 5], "allreduce"), (None, [0, 4], "auto"),
])
@pytest.mark.parametrize("device", ["cpu", "npu"])  # npu: the emulated device over "hccl"
def test_two_ranks_equal_batchnorm_on_global_batch(ranks, group_name, counts, sync_mode, device):
    for errs in ranks(2, device).run(front_scenarios.mint_equivalence, group_name, counts, sync_mode):
        assert errs.pop("num_batches_tracked_equal") == 1.0
        for key, err in errs.items():
            assert err < 1e-10, (key, errs)
