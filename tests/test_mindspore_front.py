"""npu_syncbn.mindspore: the mindspore.nn.SyncBatchNorm front and checkpoint-name conversion."""
import collections

import numpy as np
import pytest
import torch
import torch.distributed as dist

import front_scenarios
from npu_syncbn import mindspore as ms
from npu_syncbn.mindspore import SyncBatchNorm, from_mindspore_state_dict, to_mindspore_state_dict

TOL = 1e-12
EPS = 1e-5


def close(a, b, tol=TOL):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- documented errors


@pytest.mark.parametrize("kwargs, exc, needle", [
    (dict(num_features=2.0), TypeError, "num_features"),
    (dict(num_features=0), ValueError, "num_features"),
    (dict(num_features=2, eps=1), TypeError, "eps"),
    (dict(num_features=2, momentum=1.1), ValueError, "momentum"),
    (dict(num_features=2, momentum=-0.5), ValueError, "momentum"),
    (dict(num_features=2, momentum=None), TypeError, "momentum"),
    (dict(num_features=2, affine="yes"), TypeError, "affine"),
    (dict(num_features=2, use_batch_statistics=1), ValueError, "use_batch_statistics"),  # ValueError as MindSpore
    (dict(num_features=2, use_batch_statistics="True"), TypeError, "use_batch_statistics"),  # and a TypeError
    (dict(num_features=2, process_groups="0-1"), TypeError, "process_groups"),
    (dict(num_features=2, process_groups=3), TypeError, "process_groups"),
    (dict(num_features=2, process_groups=[0, 1]), TypeError, r"process_groups\[0\]"),
    (dict(num_features=2, process_groups=[[0, 1.0]]), TypeError, r"process_groups\[0\]"),
    (dict(num_features=2, process_groups=[[0, True]]), TypeError, r"process_groups\[0\]"),
    (dict(num_features=2, process_groups=[[0], []]), ValueError, "at least one rank"),
    (dict(num_features=2, process_groups=[[0, 1]]), ValueError, r"rank id 1 in process_groups\[0\] is not in range \[0, 1\)"),
    (dict(num_features=2, dtype="int8"), ValueError, "dtype"),
])
def test_constructor_errors(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        SyncBatchNorm(**kwargs)


@pytest.mark.parametrize("groups", [[[0]], []])
def test_process_groups_without_init_are_a_world_of_one(groups):
    # As MindSpore: [[0]] is this process's own group, [] leaves it in no group (local statistics, warned)
    assert not dist.is_initialized()
    if groups:
        m = SyncBatchNorm(3, process_groups=groups, dtype=torch.float64)
        assert m.group_ranks == [0] and m.synchronized
    else:
        with pytest.warns(UserWarning, match=r"this rank \(0\) is in none of process_groups \[\]"):
            m = SyncBatchNorm(3, process_groups=groups, dtype=torch.float64)
        assert m.group_ranks is None and not m.synchronized
    assert m.process_group is None
    ref = torch.nn.BatchNorm2d(3).double()
    m.set_train()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    close(m(x), ref(x))
    close(m.moving_mean, ref.running_mean)


@pytest.mark.parametrize("groups, rank, needle", [
    ([[0, 1], [2, 4]], 0, r"rank id 4 in process_groups\[1\] is not in range \[0, 4\)"),
    ([[0, -1]], 0, r"rank id -1 .* not in range \[0, 4\)"),
    ([[0, 0], [1, 2, 3]], 0, "names a rank twice"),
    ([[0, 1], [1, 2, 3]], 0, r"rank 1 is in process_groups\[0\] and in process_groups\[1\]"),
    ([[0, 1], []], 0, "at least one rank"),
])
def test_validate_process_groups_errors(groups, rank, needle):
    with pytest.raises(ValueError, match=needle):
        ms.validate_process_groups(groups, world_size=4, rank=rank)


def test_validate_process_groups_returns_own_group():
    assert ms.validate_process_groups([[0, 1], [2, 3]], 4, 2) == [2, 3]
    assert ms.validate_process_groups(([3, 1], (0, 2)), 4, 1) == [3, 1]
    assert ms.validate_process_groups([[0, 1]], 4, 0) == [0, 1]  # ranks 2, 3 need not build this layer
    assert ms.validate_process_groups([[0, 1], [2]], 4, 3) is None  # in no group: unsynchronized
    assert ms.validate_process_groups([], 4, 3) is None


# ----------------------------------------------------------------------------- construction


def test_defaults_and_inference_mode_by_default():
    m = SyncBatchNorm(3)
    assert not m.training
    assert m.mindspore_momentum == 0.9 and m.momentum == 0.1
    assert m.use_batch_statistics is None and m.process_group is None
    assert m.weight.dtype == torch.float32
    assert torch.equal(m.gamma, torch.ones(3)) and torch.equal(m.beta, torch.zeros(3))
    assert torch.equal(m.moving_mean, torch.zeros(3)) and torch.equal(m.moving_variance, torch.ones(3))
    assert m.set_train() is m and m.training
    assert "momentum=0.9" in repr(m) and "use_batch_statistics=None" in repr(m)


def test_torch_conversion_points_to_the_torch_front():
    with pytest.raises(NotImplementedError, match="npu_syncbn.convert_sync_batchnorm"):
        SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(2))


def test_aliases_are_the_torch_tensors():
    m = SyncBatchNorm(3)
    assert m.gamma is m.weight and m.beta is m.bias
    assert m.moving_mean is m.running_mean and m.moving_variance is m.running_var
    m.gamma = torch.nn.Parameter(torch.full((3,), 2.0))
    m.moving_variance = torch.full((3,), 4.0)
    assert torch.equal(m.weight, torch.full((3,), 2.0)) and torch.equal(m.running_var, torch.full((3,), 4.0))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert set(m.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_affine_false_freezes_gamma_beta_with_their_init():
    m = SyncBatchNorm(3, affine=False, gamma_init=2.0, beta_init=-1)
    assert not m.gamma.requires_grad and not m.beta.requires_grad
    assert torch.equal(m.gamma, torch.full((3,), 2.0)) and torch.equal(m.beta, torch.full((3,), -1.0))
    x = torch.randn(4, 3)
    close(m(x), (x / (1 + EPS) ** 0.5) * 2 - 1, 1e-6)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2, 2), (4, 3, 6), (2, 3, 2, 2, 2)])
def test_input_ranks(shape):
    # MindSpore documents 2-D and 4-D input; any (N, C, *) is accepted here.
    torch.manual_seed(0)
    m = SyncBatchNorm(3, dtype=torch.float64).set_train()
    ref = torch.nn.BatchNorm1d(3).double() if len(shape) <= 3 else torch.nn.BatchNorm3d(3).double()
    if len(shape) == 4:
        ref = torch.nn.BatchNorm2d(3).double()
    x = torch.randn(*shape, dtype=torch.float64)
    close(m(x), ref(x))
    close(m.moving_mean, ref.running_mean)


# ----------------------------------------------------------------------------- momentum


@pytest.mark.parametrize("ms_momentum", [0.9, 0.7, 0.0, 1.0])
def test_momentum_is_one_minus_torch_momentum(ms_momentum):
    torch.manual_seed(1)
    m = SyncBatchNorm(4, momentum=ms_momentum, dtype=torch.float64).set_train()
    ref = torch.nn.BatchNorm2d(4, momentum=1.0 - ms_momentum).double()
    for _ in range(3):
        x = torch.randn(3, 4, 2, 2, dtype=torch.float64) * 3 + 2
        close(m(x), ref(x))
    close(m.moving_mean, ref.running_mean)
    close(m.moving_variance, ref.running_var)
    # MindSpore's rule written out: moving = momentum * moving + (1 - momentum) * batch
    before = m.moving_mean.clone()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    m(x)
    close(m.moving_mean, ms_momentum * before + (1 - ms_momentum) * x.mean(dim=(0, 2, 3)))


def test_default_momentum_is_torch_default():
    assert SyncBatchNorm(2).momentum == torch.nn.BatchNorm2d(2).momentum == 0.1


# ----------------------------------------------------------------------------- use_batch_statistics


def _pair(use_batch_statistics, seed=3):
    g = torch.Generator().manual_seed(seed)
    m = SyncBatchNorm(3, use_batch_statistics=use_batch_statistics, moving_mean_init=torch.randn(3, generator=g).double(),
                      moving_var_init=torch.rand(3, generator=g).double() + 0.5, gamma_init=torch.randn(3, generator=g),
                      beta_init=torch.randn(3, generator=g), dtype=torch.float64)
    ref = torch.nn.BatchNorm2d(3).double()
    ref.load_state_dict(m.state_dict())
    return m, ref


def _x(seed=4):
    return torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 + 1


def test_none_follows_the_mode():
    m, ref = _pair(None)
    m.set_train(True), ref.train()
    close(m(_x()), ref(_x()))
    close(m.moving_mean, ref.running_mean)
    m.set_train(False), ref.eval()
    close(m(_x(5)), ref(_x(5)))
    close(m.moving_variance, ref.running_var)


@pytest.mark.parametrize("train", [True, False])
def test_true_uses_and_updates_batch_statistics_in_both_modes(train):
    m, ref = _pair(True)
    m.set_train(train)
    ref.train()
    close(m(_x()), ref(_x()))
    close(m.moving_mean, ref.running_mean)
    close(m.moving_variance, ref.running_var)
    assert int(m.num_batches_tracked) == 1
    assert m.training == train  # the mode itself is left alone


@pytest.mark.parametrize("train", [True, False])
def test_false_normalizes_with_moving_statistics_in_both_modes(train):
    m, ref = _pair(False)
    m.set_train(train)
    ref.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x1, x2 = _x().requires_grad_(True), _x().requires_grad_(True)
    y1, y2 = m(x1), ref(x2)
    close(y1, y2)
    g = torch.randn(y1.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    y1.backward(g), y2.backward(g)
    close(x1.grad, x2.grad)  # dx = dy * gamma / sqrt(moving_var + eps)
    close(x1.grad, g * (m.gamma / (m.moving_variance + EPS).sqrt()).view(1, 3, 1, 1).detach())
    close(m.gamma.grad, ref.weight.grad)
    close(m.beta.grad, ref.bias.grad)
    for k, v in m.state_dict().items():  # moving statistics (and the counter) untouched
        assert torch.equal(v, before[k]), k
    assert m.training == train


# ----------------------------------------------------------------------------- initializers


@pytest.mark.parametrize("name", ["ones", "zeros", "One", "ZEROS"])
def test_constant_init_names(name):
    m = SyncBatchNorm(5, gamma_init=name, beta_init=name, moving_mean_init=name, moving_var_init=name)
    value = 1.0 if name.lower().startswith("one") else 0.0
    for t in (m.gamma, m.beta, m.moving_mean, m.moving_variance):
        assert torch.equal(t, torch.full((5,), value))


def test_random_init_names_follow_mindspore_defaults_and_torch_seed():
    n = 4000
    torch.manual_seed(0)
    m = SyncBatchNorm(n, gamma_init="normal", beta_init="uniform", moving_mean_init="truncatedNormal",
                      moving_var_init="truncated_normal").requires_grad_(False)
    assert abs(float(m.gamma.std()) - 0.01) < 1e-3 and abs(float(m.gamma.mean())) < 1e-3
    assert float(m.beta.abs().max()) <= 0.07 and float(m.beta.abs().max()) > 0.06
    assert float(m.moving_mean.abs().max()) <= 2.0 and abs(float(m.moving_mean.std()) - 0.01) < 1e-3
    torch.manual_seed(0)
    again = SyncBatchNorm(n, gamma_init="normal", beta_init="uniform", moving_mean_init="truncatedNormal",
                          moving_var_init="truncated_normal")
    assert torch.equal(again.gamma, m.gamma) and torch.equal(again.beta, m.beta)


@pytest.mark.parametrize("value", [
    torch.tensor([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0], (1, 2, 3),
    torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), np.array([1, 2, 3], dtype=np.int32),
])
def test_tensor_and_array_init(value):
    m = SyncBatchNorm(3, gamma_init=value, moving_var_init=value)
    assert torch.equal(m.gamma, torch.tensor([1.0, 2.0, 3.0])) and m.gamma.dtype == torch.float32
    assert torch.equal(m.moving_variance, torch.tensor([1.0, 2.0, 3.0]))
    if isinstance(value, torch.Tensor):
        assert m.gamma.data_ptr() != value.data_ptr()  # copied, not shared


def test_bool_init_is_a_number():
    # MindSpore documents numbers.Number, which bool is, and fills 1.0 / 0.0
    m = SyncBatchNorm(3, gamma_init=True, beta_init=False, moving_var_init=True)
    assert torch.equal(m.gamma, torch.ones(3)) and torch.equal(m.beta, torch.zeros(3))
    assert torch.equal(m.moving_variance, torch.ones(3))


def test_use_batch_statistics_error_is_value_and_type_error():
    with pytest.raises(ValueError, match="use_batch_statistics must be None, True or False, got 1"):
        SyncBatchNorm(2, use_batch_statistics=1)
    with pytest.raises(TypeError, match="use_batch_statistics"):
        SyncBatchNorm(2, use_batch_statistics="yes")


def test_number_scalar_tensor_and_callable_init():
    m = SyncBatchNorm(3, gamma_init=0.5, beta_init=2, moving_mean_init=torch.tensor(1.5),
                      moving_var_init=lambda t: torch.nn.init.constant_(t, 3.0))
    assert torch.equal(m.gamma, torch.full((3,), 0.5)) and torch.equal(m.beta, torch.full((3,), 2.0))
    assert torch.equal(m.moving_mean, torch.full((3,), 1.5)) and torch.equal(m.moving_variance, torch.full((3,), 3.0))


@pytest.mark.parametrize("init, exc, needle", [
    ("xavier_uniform", ValueError, "at least 2 dims"),
    ("he_normal", ValueError, "at least 2 dims"),
    ("HeUniform", ValueError, "at least 2 dims"),
    ("orthogonal", ValueError, "at least 2 dims"),
    ("gaussian", ValueError, "not a known initializer"),
    (torch.ones(4), ValueError, r"shape \(4,\), expected \(3,\)"),
    (np.ones((3, 1)), ValueError, r"shape \(3, 1\)"),
    ({"ones": 1}, TypeError, "gamma_init"),
])
def test_bad_init(init, exc, needle):
    with pytest.raises(exc, match=needle):
        SyncBatchNorm(3, gamma_init=init)


def test_dtype_applies_to_initialized_values():
    m = SyncBatchNorm(3, gamma_init=np.array([1.0, 2.0, 3.0]), dtype="float64")
    assert m.gamma.dtype == m.moving_mean.dtype == torch.float64


# ----------------------------------------------------------------------------- state dict names


def _ms_checkpoint():
    return collections.OrderedDict([
        ("conv.weight", np.ones((3, 2, 1, 1), dtype=np.float32)),
        ("bn.gamma", np.array([1.0, 2.0, 3.0], dtype=np.float32)),
        ("bn.beta", np.array([0.1, 0.2, 0.3], dtype=np.float32)),
        ("bn.moving_mean", np.array([0.5, -0.5, 1.0], dtype=np.float32)),
        ("bn.moving_variance", np.array([2.0, 3.0, 4.0], dtype=np.float32)),
        ("ln.gamma", np.ones(3, dtype=np.float32)),  # a LayerNorm: not BatchNorm, left alone
    ])


def test_from_mindspore_names_and_values():
    d = _ms_checkpoint()
    out = from_mindspore_state_dict(d)
    assert list(out) == ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "ln.gamma",
                         "bn.num_batches_tracked"]
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    assert torch.equal(out["bn.running_var"], torch.tensor([2.0, 3.0, 4.0]))
    assert out["bn.num_batches_tracked"].dtype == torch.long and int(out["bn.num_batches_tracked"]) == 0
    assert "bn.gamma" in d and "bn.weight" not in d  # input not modified


def test_round_trips():
    d = _ms_checkpoint()
    back = to_mindspore_state_dict(from_mindspore_state_dict(d))  # num_batches_tracked=0 dropped again
    assert list(back) == list(d)
    for k in d:
        assert np.array_equal(np.asarray(back[k]), d[k]), k

    torch_sd = {"0.weight": torch.randn(3, 2, 1, 1), "1.weight": torch.randn(3), "1.bias": torch.randn(3),
                "1.running_mean": torch.randn(3), "1.running_var": torch.rand(3), "1.num_batches_tracked": torch.tensor(7)}
    ms_sd = to_mindspore_state_dict(torch_sd, num_batches_tracked="keep")
    assert set(ms_sd) == {"0.weight", "1.gamma", "1.beta", "1.moving_mean", "1.moving_variance", "1.num_batches_tracked"}
    again = from_mindspore_state_dict(ms_sd)
    assert set(again) == set(torch_sd) and all(torch.equal(again[k], torch_sd[k]) for k in torch_sd)


def test_num_batches_tracked_policies():
    sd = SyncBatchNorm(2).state_dict()
    assert "num_batches_tracked" not in to_mindspore_state_dict(sd)
    # a bare layer: its moving statistics under a bare MindSpore layer's names
    assert set(to_mindspore_state_dict(sd, num_batches_tracked="error")) == {"gamma", "beta", "mean", "variance"}
    sd["num_batches_tracked"] = torch.tensor(5)
    with pytest.raises(ValueError, match="num_batches_tracked = 5 has no MindSpore counterpart"):
        to_mindspore_state_dict(sd, num_batches_tracked="error")
    assert int(to_mindspore_state_dict(sd, num_batches_tracked="keep")["num_batches_tracked"]) == 5
    with pytest.raises(ValueError, match="'drop', 'keep' or 'error'"):
        to_mindspore_state_dict(sd, num_batches_tracked="ignore")
    kept = from_mindspore_state_dict({"gamma": torch.ones(2), "beta": torch.zeros(2), "moving_mean": torch.zeros(2),
                                      "moving_variance": torch.ones(2), "num_batches_tracked": torch.tensor(5)})
    assert int(kept["num_batches_tracked"]) == 5


def test_bare_layer_checkpoint_names():
    # MindSpore saves a bare layer's moving statistics as "mean"/"variance", a layer in a network as "x.moving_mean"
    bare = {"mean": torch.tensor([1.0, 2.0]), "variance": torch.tensor([3.0, 4.0]), "gamma": torch.ones(2),
            "beta": torch.zeros(2)}
    out = from_mindspore_state_dict(bare)
    assert set(out) == {"running_mean", "running_var", "weight", "bias", "num_batches_tracked"}
    assert torch.equal(out["running_var"], torch.tensor([3.0, 4.0]))
    # nested "mean"/"variance" are no MindSpore BatchNorm names: left alone
    nested = from_mindspore_state_dict({"net.mean": torch.ones(2), "net.variance": torch.ones(2)})
    assert set(nested) == {"net.mean", "net.variance"}
    layer = SyncBatchNorm(2)
    assert not layer.load_state_dict(bare, strict=True).missing_keys  # the layer's own loader takes them too
    assert torch.equal(layer.moving_mean, torch.tensor([1.0, 2.0])) and int(layer.num_batches_tracked) == 0
    back = to_mindspore_state_dict(layer.state_dict())
    assert set(back) == set(bare) and all(torch.equal(back[k], bare[k]) for k in bare)


def test_explicit_layers_and_collisions():
    # a layer without running statistics is only converted when named
    d = {"head.norm.weight": torch.ones(2), "head.norm.bias": torch.zeros(2), "fc.weight": torch.ones(2, 2)}
    assert to_mindspore_state_dict(d) == d
    out = to_mindspore_state_dict(d, layers=["head.norm"])
    assert set(out) == {"head.norm.gamma", "head.norm.beta", "fc.weight"}
    with pytest.raises(ValueError, match="both"):
        from_mindspore_state_dict({"gamma": torch.ones(2), "weight": torch.ones(2), "moving_mean": torch.zeros(2),
                                   "moving_variance": torch.ones(2)})


def test_load_converted_mindspore_checkpoint():
    net = torch.nn.Sequential(collections.OrderedDict([
        ("conv", torch.nn.Conv2d(2, 3, 1, bias=False)), ("bn", SyncBatchNorm(3)), ("ln", torch.nn.Identity())]))
    d = _ms_checkpoint()
    del d["ln.gamma"]
    result = net.load_state_dict(from_mindspore_state_dict(d), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(net.bn.gamma, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(net.bn.moving_variance, torch.tensor([2.0, 3.0, 4.0]))
    x = torch.randn(2, 2, 4, 4)
    expected = (net.conv(x) - net.bn.moving_mean.view(1, 3, 1, 1)) / (net.bn.moving_variance.view(1, 3, 1, 1) + EPS).sqrt()
    expected = expected * net.bn.gamma.view(1, 3, 1, 1) + net.bn.beta.view(1, 3, 1, 1)
    close(net(x), expected, 1e-5)  # inference mode by default: the loaded moving statistics
    # the MindSpore names load directly too (the layer renames them), num_batches_tracked then 0
    bn = SyncBatchNorm(3)
    bn.num_batches_tracked.fill_(9)
    ms_only = {k[3:]: torch.as_tensor(v) for k, v in d.items() if k.startswith("bn.")}
    assert not bn.load_state_dict(ms_only, strict=True).missing_keys
    assert torch.equal(bn.gamma, torch.tensor([1.0, 2.0, 3.0])) and int(bn.num_batches_tracked) == 0
    # and a torch checkpoint of the MindSpore front goes to MindSpore names
    assert set(to_mindspore_state_dict(net.state_dict())) == {"conv.weight", "bn.gamma", "bn.beta", "bn.moving_mean",
                                                              "bn.moving_variance"}


# ----------------------------------------------------------------------------- several ranks


@pytest.mark.parametrize("device", ["cpu", "npu"])  # npu: the emulated device over "hccl"
@pytest.mark.parametrize("process_groups, counts", [(None, [3, 5]), ([[0, 1]], [4, 0]), ([[1, 0]], [2, 2])])
def test_two_ranks_equal_batchnorm_on_global_batch(ranks, process_groups, counts, device):
    members = [0, 1] if process_groups is None else process_groups[0]
    for errs in ranks(2, device).run(front_scenarios.ms_equivalence, process_groups, {members[0]: counts}):
        assert errs.pop("group_size") == 2.0
        assert errs.pop("num_batches_tracked_equal") == 1.0
        for key, err in errs.items():
            assert err < 1e-10, (key, errs)


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_two_ranks_2d_input_and_momentum(ranks, device):
    for errs in ranks(2, device).run(front_scenarios.ms_equivalence, None, {0: [5, 3]}, 0.6, ()):
        errs.pop("group_size"), errs.pop("num_batches_tracked_equal")
        assert max(errs.values()) < 1e-10, errs


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_use_batch_statistics_true_syncs_in_inference_mode(ranks, device):
    for means in ranks(2, device).run(front_scenarios.ms_no_stats_sync_in_inference):
        assert means == pytest.approx([0.5, 0.5])  # (1 - 0.9) * mean of {0, 0, 10, 10}


@pytest.mark.parametrize("device", ["cpu", "npu"])
def test_world_of_four_split_in_two_groups(ranks, device):
    groups = [[0, 1], [2, 3]]
    counts = {0: [3, 2], 2: [1, 4]}
    for errs in ranks(4, device).run(front_scenarios.ms_equivalence, groups, counts):
        assert errs.pop("group_size") == 2.0
        assert errs.pop("num_batches_tracked_equal") == 1.0
        assert max(errs.values()) < 1e-10, errs


def test_world_of_four_process_groups_errors(ranks):
    pool = ranks(4)
    out = pool.run(front_scenarios.ms_process_groups_error, [[0, 1], [2, 4]])
    assert all(o.startswith("ValueError") and "not in range [0, 4)" in o for o in out), out
    out = pool.run(front_scenarios.ms_process_groups_error, [[0, 1], [1, 2, 3]])
    assert all(o.startswith("ValueError") and "in one group only" in o for o in out), out
    out = pool.run(front_scenarios.ms_process_groups_error, [[0, 1], [3]])
    assert out == ["ok"] * 4  # rank 2, in no group, builds an unsynchronized layer (as MindSpore)


@pytest.mark.parametrize("process_groups", [[[0]], []])
def test_rank_in_no_group_normalizes_locally(ranks, process_groups):
    for rank, errs in enumerate(ranks(2).run(front_scenarios.ms_rank_in_no_group, process_groups)):
        assert errs.pop("synchronized") == float(rank in sum(process_groups, []))
        assert max(errs.values()) < 1e-10, (rank, errs)
