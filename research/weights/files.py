"""Reading a PyTorch checkpoint file into a state_dict of numpy arrays.

`.safetensors` files are read with the `safetensors` package (no torch needed); any other file
(`.pth`, `.pt`, ...) with `torch.load(weights_only=True)`, which accepts a plain state_dict, as
torchvision publishes them, or a training checkpoint holding it under 'model' (torchvision's
reference scripts) or 'state_dict'. A 'module.' prefix on every key (DataParallel) is removed.
torch is imported only when a .pth file is read.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping

import numpy as np

from research.weights.convert import WeightsError


def _read_safetensors(path: str) -> Dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file
  except ImportError:
    raise WeightsError(f"{path}: reading .safetensors needs the safetensors package: "
                       "pip install safetensors (or pip install -e '.[weights]')") from None
  try:
    return load_file(path)
  except Exception as e:  # the package raises its own SafetensorError and others
    raise WeightsError(f"{path}: not a readable .safetensors file ({type(e).__name__}: {e})") from None


def _read_torch(path: str) -> Dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise WeightsError(f"{path}: reading a PyTorch checkpoint needs torch (the CPU build is enough): "
                       "pip install torch (or pip install -e '.[weights]')") from None
  try:
    raw: Any = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle, zip and torch's own errors
    raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
  if isinstance(raw, Mapping):
    for key in ("model", "state_dict"):
      if isinstance(raw.get(key), Mapping):
        raw = raw[key]
        break
  if not isinstance(raw, Mapping) or not raw or not all(torch.is_tensor(v) for v in raw.values()):
    raise WeightsError(f"{path}: holds a {type(raw).__name__}, not a state_dict of tensors "
                       "(save one with torch.save(model.state_dict(), path))")
  return {k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy() for k, v in raw.items()}


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{torch key: numpy array} of a checkpoint file (floating point as float32)."""
  if not os.path.isfile(path):
    raise WeightsError(f"{path}: no such file")
  state = _read_safetensors(path) if path.endswith(".safetensors") else _read_torch(path)
  if all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state
