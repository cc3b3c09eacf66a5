"""PyTorch eager reference models for research-benchmark (torch is a test/benchmark extra only).

Each mirrors the project's model of the same registry name: same layers, same parameter count.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn
from torch.nn import functional as F


class LeNet5(nn.Module):
  """As research.models.classifiers.lenet.LeNet5 (ReLU, max pooling, conv1 padding 2)."""

  def __init__(self, num_classes: int = 10, in_channels: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
    self.conv2 = nn.Conv2d(6, 16, 5)
    self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2)
    x = torch.flatten(x, 1)
    return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class _CifarBlock(nn.Module):
  """He et al. 2016 CIFAR basic block, option A (identity shortcut, zero-padded channels)."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.pad = stride, cout - cin

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
    if self.pad:
      shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
    return F.relu(out + shortcut)


class CifarResNet(nn.Module):
  """ResNet-6n+2 for 32x32 inputs (ResNet-20: n=3)."""

  def __init__(self, depth: int = 20, num_classes: int = 10):
    super().__init__()
    n = (depth - 2) // 6
    self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn = nn.BatchNorm2d(16)
    layers, cin = [], 16
    for i, width in enumerate((16, 32, 64)):
      for j in range(n):
        layers.append(_CifarBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
        cin = width
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(64, num_classes)

  def forward(self, x):
    x = self.layers(F.relu(self.bn(self.conv(x))))
    return self.fc(x.mean((2, 3)))


def _resnet18_cifar(num_classes: int) -> nn.Module:
  import torchvision
  model = torchvision.models.resnet18(num_classes=num_classes)
  model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
  model.maxpool = nn.Identity()
  return model


def _torchvision(name: str) -> Callable[[int], nn.Module]:
  def build(num_classes: int) -> nn.Module:
    import torchvision
    return getattr(torchvision.models, name)(num_classes=num_classes)
  return build


BUILDERS: Dict[str, Callable[[int], nn.Module]] = {
    "lenet5": lambda c: LeNet5(c),
    "resnet20": lambda c: CifarResNet(20, c),
    "resnet56": lambda c: CifarResNet(56, c),
    "resnet18_cifar": _resnet18_cifar,
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
}


def build(name: str, num_classes: int, in_channels: int) -> nn.Module:
  if name not in BUILDERS:
    raise KeyError(f"no PyTorch reference for model {name!r}; have: {', '.join(sorted(BUILDERS))}")
  model = BUILDERS[name](num_classes)
  if name == "lenet5" and in_channels != 1:
    model = LeNet5(num_classes, in_channels)
  return model
