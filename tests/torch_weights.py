"""torchvision weights into this project's Flax models, for tests that compare the two."""
from __future__ import annotations

import re
from typing import Any, Dict, Sequence, Tuple

import jax.numpy as jnp


def torchvision_to_flax(state_dict: Dict[str, Any], rename: Sequence[Tuple[str, str]] = ()) -> Dict[str, Any]:
  """A torch state_dict -> {'params', 'batch_stats'}: module paths renamed by the (regex,
  replacement) pairs in order, then split at '.'; BatchNorm modules (those with running_mean)
  give scale/bias/mean/var; conv weights OIHW -> HWIO, linear weights transposed to [in, out]."""
  variables: Dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    module, leaf = key.rsplit(".", 1)
    if leaf == "num_batches_tracked":
      continue
    value = value.numpy()
    if f"{module}.running_mean" in state_dict:
      collection, leaf = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                          "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}[leaf]
    elif leaf == "weight":
      collection, leaf = "params", "kernel"
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    else:
      collection = "params"
    for pattern, replacement in rename:
      module = re.sub(pattern, replacement, module)
    node = variables[collection]
    for part in module.split("."):
      node = node.setdefault(part, {})
    node[leaf] = jnp.asarray(value)
  return variables


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
