"""Pooling layers with a fast path for non-overlapping windows.

XLA:CPU's gradient of a windowed max (select-and-scatter) is about 2x slower than the same
reduction written as a reshape; for windows equal to strides with VALID padding (LeNet, VGG,
AlexNet-style 2x2 pools) `max_pool` reshapes, otherwise it is `flax.linen.max_pool`. Gradients
are equal except at ties inside a window, where the reshape form splits the gradient evenly
(both are valid subgradients; after a ReLU, ties are at 0 where the ReLU gradient is 0 anyway).
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None, padding: str,
          reduce: Callable[..., jax.Array], fallback: Callable[..., jax.Array]) -> jax.Array:
  strides = tuple(strides or window)
  wh, ww = window
  if tuple(window) == strides and padding == "VALID":
    n, h, w, c = x.shape
    ho, wo = h // wh, w // ww
    return reduce(x[:, :ho * wh, :wo * ww].reshape(n, ho, wh, wo, ww, c), axis=(2, 4))
  return fallback(x, tuple(window), strides=strides, padding=padding)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "VALID") -> jax.Array:
  """x [N, H, W, C] -> [N, H', W', C], as nn.max_pool(x, window, strides, padding)."""
  return _pool(x, window, strides, padding, jnp.max, nn.max_pool)


def avg_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = "VALID") -> jax.Array:
  """x [N, H, W, C] -> [N, H', W', C], as nn.avg_pool (same fast path as max_pool)."""
  return _pool(x, window, strides, padding, jnp.mean, nn.avg_pool)
