"""U-Net (Ronneberger et al. 2015): encoder-decoder with skip connections at every scale.

depth levels of two ConvBNReLU; each down step max-pools 2x and doubles the width, each up step
upsamples 2x (nearest, then a 3x3 ConvBNReLU: the "up-convolution"; a transposed convolution's
gradient is slow on XLA:CPU), concatenates the skip and applies two ConvBNReLU. Input sides
must be divisible by 2**(depth-1). Output logits [N, H, W, num_classes].
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.pooling import max_pool, sow_stage
from research.models.segmentation.encoder import ConvBNReLU


@MODELS.register("unet")
class UNet(nn.Module):
  """images [N, H, W, C] -> logits [N, H, W, num_classes]."""

  num_classes: int = 2
  width: int = 16
  depth: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.astype(self.dtype)
    skips = []
    for level in range(self.depth):
      w = self.width * 2 ** level
      if level:
        x = sow_stage(self, f"pool{level}", max_pool(x, (2, 2)))
      x = ConvBNReLU(w, dtype=self.dtype, name=f"down{level}_a")(x, train)
      x = ConvBNReLU(w, dtype=self.dtype, name=f"down{level}_b")(x, train)
      skips.append(x)
    for level in range(self.depth - 2, -1, -1):
      w = self.width * 2 ** level
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = ConvBNReLU(w, dtype=self.dtype, name=f"up{level}")(x, train)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = ConvBNReLU(w, dtype=self.dtype, name=f"up{level}_a")(x, train)
      x = ConvBNReLU(w, dtype=self.dtype, name=f"up{level}_b")(x, train)
    return Conv(self.num_classes, (1, 1), dtype=self.dtype, name="logits")(x).astype(jnp.float32)
