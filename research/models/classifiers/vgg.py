"""VGG-11/13/16/19 (Simonyan and Zisserman 2015), with or without BatchNorm, and AlexNet
(Krizhevsky et al. 2012, torchvision's single-GPU variant), both with torchvision's classifier:
adaptive average pooling to a fixed grid, then dropout-FC-ReLU twice and the output layer.
Parameter counts for 1000 classes equal torchvision's (VGG-16 138,357,544; AlexNet 61,100,840).
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.pooling import max_pool

_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def adaptive_avg_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """torch.nn.AdaptiveAvgPool2d(size) on NHWC: bin i covers [floor(i H / s), ceil((i + 1) H / s))."""
  n, h, w, c = x.shape
  if (h, w) == (size, size):
    return x
  rows = []
  for i in range(size):
    r0, r1 = (i * h) // size, -(-((i + 1) * h) // size)
    cols = []
    for j in range(size):
      c0, c1 = (j * w) // size, -(-((j + 1) * w) // size)
      cols.append(x[:, r0:r1, c0:c1].mean(axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


class _Classifier(nn.Module):
  """Adaptive pool to pool x pool, flatten, (dropout, FC hidden, ReLU) x 2, FC num_classes."""

  num_classes: int
  hidden: int = 4096
  pool: int = 7
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = adaptive_avg_pool(x, self.pool).reshape(x.shape[0], -1)
    for i in range(2):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f"fc{i + 1}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x).astype(jnp.float32)


@MODELS.register("vgg11", depth=11)
@MODELS.register("vgg13", depth=13)
@MODELS.register("vgg16", depth=16)
@MODELS.register("vgg19", depth=19)
@MODELS.register("vgg11_bn", depth=11, batch_norm=True)
@MODELS.register("vgg16_bn", depth=16, batch_norm=True)
class VGG(nn.Module):
  """images [N, H, W, 3] (224 in the paper; any size >= 32) -> logits [N, num_classes]."""

  depth: int = 16
  num_classes: int = 1000
  batch_norm: bool = False
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.astype(self.dtype)
    for i, v in enumerate(_CFGS[self.depth]):
      if v == "M":
        x = max_pool(x, (2, 2))
        continue
      x = Conv(v, (3, 3), padding=1, dtype=self.dtype, name=f"conv{i}")(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
      x = nn.relu(x)
    return _Classifier(self.num_classes, self.hidden, 7, self.dropout_rate, self.dtype, name="classifier")(x, train)


@MODELS.register("alexnet")
class AlexNet(nn.Module):
  """images [N, 224, 224, 3] -> logits [N, num_classes] (torchvision's layer sizes)."""

  num_classes: int = 1000
  hidden: int = 4096
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    x = x.astype(self.dtype)
    specs: Sequence[tuple[int, int, int, int, Union[bool, None]]] = (
        (64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
        (256, 3, 1, 1, True))
    for i, (features, kernel, stride, pad, pool) in enumerate(specs):
      x = nn.relu(Conv(features, (kernel, kernel), strides=stride, padding=pad, dtype=self.dtype,
                       name=f"conv{i + 1}")(x))
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
    return _Classifier(self.num_classes, self.hidden, 6, self.dropout_rate, self.dtype, name="classifier")(x, train)
