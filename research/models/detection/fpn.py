"""Feature pyramid network (Lin et al. 2017) as torchvision's FeaturePyramidNetwork.

Input: backbone maps [N, H_l, W_l, C_l], finest first (e.g. 'c2'..'c5', strides 4..32).
Output: the same number of maps [N, H_l, W_l, channels] (P2..P5), plus with `extra_pool` a
coarser map P6 = P5[:, ::2, ::2] (torchvision's LastLevelMaxPool, max pool of kernel 1 and
stride 2) used by the RPN only. Top-down: lateral 1x1 conv + nearest upsampling of the coarser
level to the lateral's size, then a 3x3 conv per level; convs are kaiming_uniform(a=1), bias 0.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.conv import Conv

_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def resize_nearest(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """[N, h, w, C] -> [N, height, width, C], torch's F.interpolate(mode='nearest'):
  source index floor(i * h / height)."""
  rows = (jnp.arange(height) * x.shape[1]) // height
  cols = (jnp.arange(width) * x.shape[2]) // width
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """maps (finest first) -> pyramid maps (finest first), see the module docstring."""

  channels: int = 256
  extra_pool: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps: Sequence[jnp.ndarray]) -> List[jnp.ndarray]:
    def conv(k: int, name: str) -> Conv:
      return Conv(self.channels, (k, k), padding=k // 2, kernel_init=_INIT, dtype=self.dtype, name=name)

    laterals = [conv(1, f"inner{i}")(m) for i, m in enumerate(maps)]
    outs: List[jnp.ndarray] = [jnp.zeros(())] * len(maps)
    top = laterals[-1]
    outs[-1] = conv(3, f"layer{len(maps) - 1}")(top)
    for i in range(len(maps) - 2, -1, -1):
      top = laterals[i] + resize_nearest(top, laterals[i].shape[1], laterals[i].shape[2])
      outs[i] = conv(3, f"layer{i}")(top)
    if self.extra_pool:
      outs.append(outs[-1][:, ::2, ::2])
    return outs
