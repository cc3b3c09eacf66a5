"""A small convolutional encoder returning stage features by stride, for dense heads on small images.

Returns {'c1': stride 2, 'c2': 4, 'c3': 8, 'c4': 16, 'c5': 32}, each [N, H/s, W/s, C_s]. The
zoo's ResNet backbones return the same keys ('c2'..'c5'), so heads take either.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import BACKBONES
from research.models.conv import Conv
from research.models.norm import BatchNorm


class ConvBNReLU(nn.Module):
  """3x3 (or k x k) conv, BatchNorm, ReLU: [N, H, W, C] -> [N, H/s, W/s, features]."""

  features: int
  kernel: int = 3
  strides: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    pad = self.dilation * (self.kernel - 1) // 2
    x = Conv(self.features, (self.kernel, self.kernel), strides=self.strides, padding=pad,
             kernel_dilation=self.dilation, use_bias=False, dtype=self.dtype)(x)
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
    return nn.relu(x)


@BACKBONES.register("small_cnn")
class SmallEncoder(nn.Module):
  """Five stages of two ConvBNReLU each; stage s halves the resolution (first conv stride 2)."""

  widths: Sequence[int] = (16, 32, 64, 128, 128)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Dict[str, jnp.ndarray]:
    feats = {}
    x = x.astype(self.dtype)
    for s, width in enumerate(self.widths, start=1):
      x = ConvBNReLU(width, strides=2, dtype=self.dtype, name=f"stage{s}_a")(x, train)
      x = ConvBNReLU(width, dtype=self.dtype, name=f"stage{s}_b")(x, train)
      feats[f"c{s}"] = x
    return feats


def build_backbone(backbone: str, dtype: Any, **kwargs: Any) -> nn.Module:
  """A registered backbone by name with `kwargs` (its `dtype` set when it has one)."""
  ctor = BACKBONES.get(backbone)
  fields = getattr(getattr(ctor, "fn", ctor), "__dataclass_fields__", {})
  unknown = sorted(set(kwargs) - set(fields))
  if fields and unknown:
    raise ValueError(f"backbone {backbone!r} has no option {', '.join(unknown)} (e.g. dilation needs a ResNet "
                     f"backbone)")
  return ctor(dtype=dtype, **kwargs) if "dtype" in fields else ctor(**kwargs)


def deepest_stage(features: Dict[str, Any]) -> str:
  """The key of the deepest pooled stage 'cK' (largest K) in a backbone's features; other keys
  (e.g. VGG's pre-pool 'conv5') are ignored."""
  stages = [k for k in features if k[:1] == "c" and k[1:].isdigit()]
  if not stages:
    raise ValueError(f"backbone features have no 'cK' stage key: {sorted(features)}")
  return max(stages, key=lambda k: int(k[1:]))
