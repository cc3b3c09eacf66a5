"""VGG-11/13/16/19 (Simonyan and Zisserman 2015), with or without BatchNorm, and AlexNet
(Krizhevsky et al. 2012, torchvision's single-GPU variant), both with torchvision's classifier:
adaptive average pooling to a fixed grid, then dropout-FC-ReLU twice and the output layer.
Parameter counts for 1000 classes equal torchvision's (VGG-16 138,357,544; AlexNet 61,100,840).

VGG with `features_only=True` returns the feature map after each max pool, {'c1', ..., 'c5'} at
strides 2, 4, 8, 16, 32 with 64, 128, 256, 512, 512 channels, and each stage's last convolution
(after its ReLU, before the pool), {'conv1', ..., 'conv5'} at strides 1, 2, 4, 8, 16 ('conv5' is
conv5_3, the feature map of Faster R-CNN's VGG-16); no classifier parameters. VGG-16 in this form
is registered as BACKBONES "vgg16" (FCN-8s's and Faster R-CNN's encoder). `kernel_init` names the kernel
initializers, "SPEC" or "CONV_SPEC,DENSE_SPEC" (research.models.initializers; default flax's
lecun_normal, as before; torchvision's VGG is "he_normal,normal:0.01", its AlexNet "torch_default").
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import BACKBONES, MODELS
from research.models.conv import Conv
from research.models.norm import BatchNorm
from research.models.initializers import kernel_initializers
from research.models.pooling import adaptive_avg_pool, max_pool, sow_stage

_CFGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class _Classifier(nn.Module):
  """Adaptive pool to pool x pool, flatten, two hidden FC + ReLU layers with dropout, FC num_classes.

  Dropout placement as torchvision: AlexNet (`dropout_first`) drops the input of each hidden FC
  layer; VGG drops the output of each (so also the input of the last layer)."""

  num_classes: int
  hidden: int = 4096
  pool: int = 7
  dropout_rate: float = 0.5
  kernel_init: str = "lecun_normal"
  dtype: Any = jnp.float32
  dropout_first: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    init = kernel_initializers(self.kernel_init)[1]
    x = sow_stage(self, "avgpool", adaptive_avg_pool(x, self.pool)).reshape(x.shape[0], -1)
    dropout = lambda y: nn.Dropout(self.dropout_rate, deterministic=not train)(y)  # noqa: E731
    for i in range(2):
      x = dropout(x) if self.dropout_first else x
      x = nn.relu(nn.Dense(self.hidden, kernel_init=init, dtype=self.dtype, name=f"fc{i + 1}")(x))
      x = x if self.dropout_first else dropout(x)
    return nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="fc3")(x).astype(jnp.float32)


@MODELS.register("vgg11", depth=11)
@MODELS.register("vgg13", depth=13)
@MODELS.register("vgg16", depth=16)
@MODELS.register("vgg19", depth=19)
@MODELS.register("vgg11_bn", depth=11, batch_norm=True)
@MODELS.register("vgg13_bn", depth=13, batch_norm=True)
@MODELS.register("vgg16_bn", depth=16, batch_norm=True)
@MODELS.register("vgg19_bn", depth=19, batch_norm=True)
@BACKBONES.register("vgg16", depth=16, features_only=True)
class VGG(nn.Module):
  """images [N, H, W, 3] (224 in the paper; any size >= 32) -> logits [N, num_classes], or with
  features_only the stage features {'c1'..'c5', 'conv1'..'conv5'} (module docstring)."""

  depth: int = 16
  num_classes: int = 1000
  batch_norm: bool = False
  hidden: int = 4096
  dropout_rate: float = 0.5
  features_only: bool = False
  kernel_init: str = "lecun_normal"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Union[jnp.ndarray, Dict[str, jnp.ndarray]]:
    in_hw = x.shape[1:3]
    x = x.astype(self.dtype)
    feats = {}
    for i, v in enumerate(_CFGS[self.depth]):
      if v == "M":
        stage = len(feats) // 2 + 1
        feats[f"conv{stage}"] = x
        x = sow_stage(self, f"pool{stage}", max_pool(x, (2, 2)))
        feats[f"c{stage}"] = x
        continue
      x = Conv(v, (3, 3), padding=1, kernel_init=kernel_initializers(self.kernel_init)[0], dtype=self.dtype,
               name=f"conv{i}")(x)
      if self.batch_norm:
        x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
      x = nn.relu(x)
    if 0 in x.shape[1:3]:
      raise ValueError(f"VGG needs images of at least 32x32, got {in_hw}")
    if self.features_only:
      return feats
    return _Classifier(self.num_classes, self.hidden, 7, self.dropout_rate, self.kernel_init, self.dtype,
                       name="classifier")(x, train)


@MODELS.register("alexnet")
class AlexNet(nn.Module):
  """images [N, 224, 224, 3] (at least 63x63) -> logits [N, num_classes] (torchvision's layer sizes)."""

  num_classes: int = 1000
  hidden: int = 4096
  dropout_rate: float = 0.5
  kernel_init: str = "lecun_normal"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    in_hw = x.shape[1:3]
    x = x.astype(self.dtype)
    specs: Sequence[tuple[int, int, int, int, Union[bool, None]]] = (
        (64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
        (256, 3, 1, 1, True))
    for i, (features, kernel, stride, pad, pool) in enumerate(specs):
      x = nn.relu(Conv(features, (kernel, kernel), strides=stride, padding=pad,
                       kernel_init=kernel_initializers(self.kernel_init)[0], dtype=self.dtype,
                       name=f"conv{i + 1}")(x))
      if pool:
        x = sow_stage(self, f"pool{i + 1}", max_pool(x, (3, 3), (2, 2)))
    if 0 in x.shape[1:3]:
      raise ValueError(f"AlexNet needs images of at least 63x63 (torchvision's min_size), got {in_hw}")
    return _Classifier(self.num_classes, self.hidden, 6, self.dropout_rate, self.kernel_init, self.dtype, True,
                       name="classifier")(x, train)
