"""Random torchvision weights for tests that compare models with torchvision (the conversion itself
is research.weights.convert)."""
from __future__ import annotations

from typing import Any


def randomize_(model: Any) -> None:
  """Weights that keep activations O(1) and non-trivial BatchNorm statistics, in place (torch module)."""
  import torch
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        torch.nn.init.kaiming_normal_(m.weight)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1), m.running_mean.normal_(0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
