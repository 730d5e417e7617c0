"""convert_sync_batchnorm(..., fuse=True) folds a ReLU (and the residual add
before it) into SyncBatchNorm only where that is provably equivalent, and
revert_sync_batchnorm restores the separate modules."""
import pytest
import torch
import torch.nn as nn

import fuse_scenarios as fs
import npu_syncbn
from npu_syncbn import SyncBatchNorm
from npu_syncbn.fuse import FusedReLU


def _relu_layers(model):
    return [name for name, m in model.named_modules() if isinstance(m, SyncBatchNorm) and m.activation == "relu"]


def _step(model, x):
    x = x.clone().requires_grad_(True)
    y = model(x)
    y.square().sum().backward()
    return y.detach(), x.grad


def test_sequential_relu_is_folded_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1),
                          nn.BatchNorm2d(2))
    reference = nn.Sequential(*[m for m in model])  # the same modules, unconverted
    x = torch.randn(2, 3, 7, 7)
    want = _step(reference, x)
    fused = npu_syncbn.convert_sync_batchnorm(model, fuse=True)
    assert _relu_layers(fused) == ["1"] and isinstance(fused[2], FusedReLU)
    assert fused[4].activation is None, "a BatchNorm with no ReLU after it was fused"
    for a, b in zip(_step(fused, x), want):
        assert torch.equal(a, b)
    back = npu_syncbn.revert_sync_batchnorm(fused)
    assert [type(m) for m in back] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d]
    assert back[2].inplace
    for a, b in zip(_step(back, x), want):
        assert torch.equal(a, b)


def test_not_folded_where_not_provable():
    shared = nn.ReLU()
    hooked = nn.ReLU()  # (a BatchNorm's hooks do not survive the conversion, as with torch's)
    hooked.register_forward_hook(lambda m, i, o: None)
    model = nn.Sequential(
        nn.Sequential(nn.BatchNorm2d(4), shared),  # the ReLU is used again below
        nn.Sequential(nn.BatchNorm2d(4), shared),
        nn.Sequential(nn.BatchNorm2d(4), nn.LeakyReLU()),  # not a ReLU
        nn.Sequential(nn.BatchNorm2d(4), hooked),  # the hook would never run
        nn.Sequential(nn.BatchNorm2d(4), nn.Identity(), nn.ReLU()),  # not the very next module
    )
    assert _relu_layers(npu_syncbn.convert_sync_batchnorm(model, fuse=True)) == []


class Branching(nn.Module):
    """bn's output is read twice: relu(bn(x)) + bn(x) cannot fold the ReLU."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        y = self.bn(x)
        return self.relu(y) + y


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(x)
        return torch.relu(y) if y.sum() > 0 else y  # does not trace


@pytest.mark.parametrize("block", [Branching, DataDependent])
def test_blocks_that_cannot_be_proven_stay_as_they_are(block):
    model = npu_syncbn.convert_sync_batchnorm(nn.Sequential(block()), fuse=True)
    assert type(model[0]) is block and _relu_layers(model) == []


def test_torchvision_style_blocks_are_folded_equivalently_and_reverted():
    reference = fs.net()
    x = torch.randn(2, 3, 8, 8)
    want = _step(reference, x)
    keys = list(reference.state_dict())
    model = npu_syncbn.convert_sync_batchnorm(fs.net(), fuse=True)
    # stem bn; BasicBlock bn1 and bn2 (+= downsampled identity); Bottleneck bn1, bn2, bn3 (+= identity)
    assert _relu_layers(model) == ["0.1", "1.bn1", "1.bn2", "2.bn1", "2.bn2", "2.bn3"]
    assert model.get_submodule("1.downsample.1").activation is None
    assert list(model.state_dict()) == keys
    for a, b in zip(_step(model, x), want):
        assert torch.allclose(a, b, atol=1e-6), "fused block differs from the torchvision-style original"
    back = npu_syncbn.revert_sync_batchnorm(model)
    assert type(back[1]) is fs.BasicBlock and type(back[2]) is fs.Bottleneck
    assert not any(isinstance(m, SyncBatchNorm) for m in back.modules())
    assert list(back.state_dict()) == keys
    for a, b in zip(_step(back, x), _step(reference, x)):
        assert torch.equal(a, b)


def test_constructed_relu_layer_reverts_to_batchnorm_then_relu():
    back = npu_syncbn.revert_sync_batchnorm(SyncBatchNorm(3, activation="relu"))
    assert [type(m) for m in back] == [nn.BatchNorm2d, nn.ReLU]


def test_fused_model_trains_bitwise_like_unfused_on_two_ranks(ranks):
    for rank, res in enumerate(ranks(2).run(fs.fused_trains_like_unfused)):
        assert res["relu_layers"] == 6, res
        assert res["same"], f"rank {rank}: fused and unfused models diverged"
