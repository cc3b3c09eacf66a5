"""DCGAN generator and discriminator (Radford et al. 2016), sized for 28x28, 32x32 and 64x64.

Guidelines followed: strided convolutions in D and fractionally strided (transposed) ones in G,
no pooling, BatchNorm in both except G's output and D's input layer, ReLU in G (tanh output),
LeakyReLU(0.2) in D, weights from N(0, 0.02) and BatchNorm scales from N(1, 0.02).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.norm import BatchNorm

_UPSAMPLINGS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}  # image size -> (start size, 2x steps)
_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _batch_norm(train: bool, dtype: Any, name: str) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   scale_init=_bn_scale_init, name=name)


def _geometry(image_size: int) -> tuple[int, int]:
  if image_size not in _UPSAMPLINGS:
    raise ValueError(f"DCGAN image_size must be one of {sorted(_UPSAMPLINGS)}, got {image_size}")
  return _UPSAMPLINGS[image_size]


@MODELS.register("dcgan_generator")
class DCGANGenerator(nn.Module):
  """z [N, z_dim] -> images [N, image_size, image_size, channels] in [-1, 1]."""

  image_size: int = 32
  channels: int = 3
  base_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    start, steps = _geometry(self.image_size)
    features = self.base_features * 2 ** (steps - 1)
    x = nn.Dense(start * start * features, use_bias=False, kernel_init=_INIT, dtype=self.dtype, name="project")(
        z.astype(self.dtype))
    x = x.reshape(z.shape[0], start, start, features)
    x = nn.relu(_batch_norm(train, self.dtype, "bn0")(x))
    for i in range(1, steps):
      features //= 2
      x = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                           kernel_init=_INIT, dtype=self.dtype, name=f"up{i}")(x)
      x = nn.relu(_batch_norm(train, self.dtype, f"bn{i}")(x))
    x = nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_INIT,
                         dtype=self.dtype, name=f"up{steps}")(x)
    return jnp.tanh(x).astype(jnp.float32)


@MODELS.register("dcgan_discriminator")
class DCGANDiscriminator(nn.Module):
  """images [N, image_size, image_size, C] in [-1, 1] -> real/fake logits [N]."""

  image_size: int = 32
  base_features: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    _, steps = _geometry(self.image_size)
    x = x.astype(self.dtype)
    for i in range(steps):
      x = Conv(self.base_features * 2 ** i, (4, 4), strides=2, padding=1, use_bias=i == 0,
               kernel_init=_INIT, dtype=self.dtype, name=f"down{i}")(x)
      if i:
        x = _batch_norm(train, self.dtype, f"bn{i}")(x)
      x = nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1, kernel_init=_INIT, dtype=self.dtype, name="logit")(x)[:, 0].astype(jnp.float32)
