"""SyncBatchNorm as a drop-in module: constructor errors, local equivalence,
convert/revert, state_dict compatibility (single process, no process group)."""
import copy

import pytest
import torch

import npu_syncbn
from npu_syncbn import SyncBatchNorm


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(num_features=3.0), TypeError, "num_features must be an int"),
        (dict(num_features="3"), TypeError, "num_features must be an int"),
        (dict(num_features=True), TypeError, "num_features must be an int"),
        (dict(num_features=0), ValueError, "num_features must be >= 1"),
        (dict(num_features=3, eps=1), TypeError, "eps must be a float"),
        (dict(num_features=3, eps="1e-5"), TypeError, "eps must be a float"),
        (dict(num_features=3, eps=-1e-5), ValueError, "eps must be a finite float > 0"),
        (dict(num_features=3, momentum=1.5), ValueError, r"momentum must be in range \[0, 1\]"),
        (dict(num_features=3, momentum=-0.1), ValueError, r"momentum must be in range \[0, 1\]"),
        (dict(num_features=3, momentum="0.1"), TypeError, "momentum"),
        (dict(num_features=3, process_group=5), TypeError, "process_group"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SyncBatchNorm(**kwargs)


@pytest.mark.parametrize(
    "shape, match",
    [((4,), r"expected input of shape \(N, 3, \*\) with at least 2 dims, got shape \(4,\)"),
     ((4, 5, 2), r"expected input of shape \(N, 3, \*\) \(num_features=3 channels in dim 1\), got shape \(4, 5, 2\)")],
)
def test_bad_input_shape_names_expected_shape(shape, match):
    with pytest.raises(ValueError, match=match):
        SyncBatchNorm(3)(torch.randn(shape))


BN_FOR_DIM = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 6), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_without_process_group_equals_local_batchnorm_exactly(shape, momentum, track):
    torch.manual_seed(0)
    sync = SyncBatchNorm(3, momentum=momentum, track_running_stats=track)
    local = BN_FOR_DIM[len(shape)](3, momentum=momentum, track_running_stats=track)
    with torch.no_grad():
        sync.weight.uniform_(0.5, 1.5)
        sync.bias.uniform_(-1, 1)
    local.load_state_dict(sync.state_dict())
    for step in range(3):
        x = torch.randn(shape) * 2 + 1
        xs, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        ys, yl = sync(xs), local(xl)
        assert torch.equal(ys, yl)
        g = torch.randn(shape)
        ys.backward(g)
        yl.backward(g)
        assert torch.equal(xs.grad, xl.grad)
        assert torch.equal(sync.weight.grad, local.weight.grad)
    if track:
        assert torch.equal(sync.running_mean, local.running_mean)
        assert torch.equal(sync.running_var, local.running_var)
        assert int(sync.num_batches_tracked) == 3
    sync.eval(), local.eval()
    x = torch.randn(shape)
    assert torch.equal(sync(x), local(x))


def test_state_dict_keys_match_batchnorm2d_and_load_both_ways():
    torch.manual_seed(1)
    bn = torch.nn.BatchNorm2d(4)
    bn(torch.randn(3, 4, 2, 2) * 3 + 2)
    sync = SyncBatchNorm(4)
    assert list(sync.state_dict()) == list(bn.state_dict())
    sync.load_state_dict(bn.state_dict())
    for k, v in bn.state_dict().items():
        assert torch.equal(sync.state_dict()[k], v), k
    sync(torch.randn(3, 4, 2, 2))
    back = torch.nn.BatchNorm2d(4)
    back.load_state_dict(sync.state_dict())
    assert int(back.num_batches_tracked) == 2
    assert torch.equal(back.running_var, sync.running_var)


def _net():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv1d(4, 4, 1), torch.nn.BatchNorm1d(4, momentum=None)),
        torch.nn.InstanceNorm2d(4, affine=True), torch.nn.BatchNorm3d(2, affine=False, eps=1e-3),
    )


def test_convert_shares_parameters_keeps_buffers_and_flags():
    net = _net()
    net[1](torch.randn(2, 4, 3, 3))  # non-trivial running stats
    net.eval()
    bn, bn1d, bn3d = net[1], net[3][1], net[5]
    converted = npu_syncbn.convert_sync_batchnorm(net, process_group="grp")
    assert isinstance(converted[1], SyncBatchNorm) and isinstance(converted[3][1], SyncBatchNorm)
    assert isinstance(converted[5], SyncBatchNorm)
    assert isinstance(converted[4], torch.nn.InstanceNorm2d), "InstanceNorm must not be converted"
    assert converted[1].weight is bn.weight and converted[1].bias is bn.bias
    assert converted[1].running_mean is bn.running_mean
    assert converted[1].process_group == "grp"
    assert converted[3][1].momentum is None and converted[5].eps == 1e-3 and not converted[5].affine
    assert not converted[1].training
    assert SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(2)).__class__ is SyncBatchNorm


def test_revert_restores_original_classes_for_inference():
    net = _net()
    x = torch.randn(2, 3, 5, 5)
    net[1].train()
    net[1](torch.randn(2, 4, 3, 3))
    net.eval()
    expected = net[:3](x)
    state = copy.deepcopy(net.state_dict())
    back = npu_syncbn.revert_sync_batchnorm(npu_syncbn.convert_sync_batchnorm(net))
    assert type(back[1]) is torch.nn.BatchNorm2d
    assert type(back[3][1]) is torch.nn.BatchNorm1d
    assert type(back[5]) is torch.nn.BatchNorm3d
    assert not any(isinstance(m, SyncBatchNorm) for m in back.modules())
    assert torch.equal(back[:3](x), expected)
    for k, v in back.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert type(npu_syncbn.revert_sync_batchnorm(SyncBatchNorm(3))) is torch.nn.BatchNorm2d


def test_half_input_with_float32_parameters_locally():
    sync = SyncBatchNorm(3)
    x = torch.randn(4, 3, 5, dtype=torch.bfloat16)
    y = sync(x)
    assert y.dtype == torch.bfloat16 and sync.weight.dtype == torch.float32


@pytest.mark.parametrize("sync_mode", ["allgather", "allreduce"])
def test_function_in_a_world_of_one_with_cumulative_momentum(sync_mode):
    """The path accelerators take at world size 1 with momentum=None (no host
    read of 1/num_batches_tracked): our ops with no communication."""
    from npu_syncbn.function import SyncBatchNormFunction

    torch.manual_seed(3)
    sync = SyncBatchNorm(3, momentum=None, sync_mode=sync_mode)
    local = torch.nn.BatchNorm1d(3, momentum=None)
    for step in range(3):
        x = torch.randn(6, 3, 4) * 2 + 1
        xs, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        sync.num_batches_tracked.add_(1)
        factor = 1.0 / sync.num_batches_tracked.to(torch.float64)
        ys = SyncBatchNormFunction.apply(xs, sync.weight, sync.bias, sync.running_mean, sync.running_var, sync.eps, factor, sync._plan(None, 1, xs))
        yl = local(xl)
        g = torch.randn_like(x)
        ys.backward(g), yl.backward(g)
        torch.testing.assert_close(ys, yl)
        torch.testing.assert_close(xs.grad, xl.grad)
    torch.testing.assert_close(sync.running_mean, local.running_mean)
    torch.testing.assert_close(sync.running_var, local.running_var)


def test_parametrized_weight_is_the_one_normalized_with():
    """A parametrization (a property on the module's class) gives the weight
    the step uses, as for torch.nn.BatchNorm1d with the same parametrization."""
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    layers = [SyncBatchNorm(4), torch.nn.BatchNorm1d(4)]
    for layer in layers:
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([0.5, 1.0, -1.5, 3.0]))
        parametrize.register_parametrization(layer, "weight", Doubled())
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(layers[0](x), layers[1](x))
    torch.testing.assert_close(layers[0].running_mean, layers[1].running_mean)
