"""Models for the fuse=True tests: torchvision-style residual blocks (written
here as torchvision writes them: bn, then the shared ReLU module; the
identity added with ``+=`` before the last ReLU) and the rank-side scenario
that trains a fused and an unfused copy side by side."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

import npu_syncbn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cin, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def net() -> nn.Module:
    """A small ResNet: stem (Sequential conv, bn, relu), a downsampling BasicBlock, a Bottleneck."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        BasicBlock(8, 16, stride=2),
        Bottleneck(16, 4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def fused_trains_like_unfused(rank: int, world_size: int) -> Dict:
    """Three SGD steps of net() converted with fuse=True and with fuse=False;
    whether outputs, input gradients and the state stay bitwise equal, and how
    many layers were fused."""
    fused = npu_syncbn.convert_sync_batchnorm(net(), fuse=True)
    plain = npu_syncbn.convert_sync_batchnorm(net())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (fused, plain)]
    same = True
    for step in range(3):
        x = torch.randn(2 + rank, 3, 8, 8, generator=torch.Generator().manual_seed(10 * step + rank))
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        ys = [m(xi) for m, xi in zip((fused, plain), xs)]
        for y in ys:
            y.square().sum().backward()
        same &= torch.equal(ys[0], ys[1]) and torch.equal(xs[0].grad, xs[1].grad)
        for opt in opts:
            opt.step(), opt.zero_grad()
    same &= all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), plain.state_dict().values()))
    relu_layers = sum(1 for m in fused.modules() if isinstance(m, npu_syncbn.SyncBatchNorm) and m.activation == "relu")
    return {"same": same, "relu_layers": relu_layers}
