"""GoogLeNet / Inception v1 (Szegedy et al. 2015), layer for layer as torchvision.models.googlenet.

Layout NHWC. Stem: BasicConv 7x7/2 64 -> max pool 3/2 -> 1x1 64 -> 3x3 192 -> max pool 3/2, then
inception 3a, 3b -> max pool 3/2 -> 4a..4e -> max pool 2/2 -> 5a, 5b -> global average pool ->
dropout 0.2 -> fc. A BasicConv is Conv (no bias) + BatchNorm (eps 1e-3) + ReLU. As torchvision,
the "5x5" branch of every inception block is a 3x3 convolution, the pool branch is a 3x3 stride-1
max pool, and all max pools use ceil mode (`max_pool_ceil`): at 224x224 the stages are 112, 56,
28, 14, 7. Auxiliary heads (aux_logits, after 4a and 4d, training only): adaptive average pool to
4x4, BasicConv 1x1 128, fc 1024, ReLU, dropout 0.7, fc num_classes.

Parameters for 1000 classes: 6,624,904 without the auxiliary heads, 13,004,888 with them (both
equal torchvision's). Kernels are initialized by `kernel_init` (default torchvision's N(0, 0.01);
torchvision truncates at +-2, i.e. 200 standard deviations, which changes nothing).

Outputs: logits [N, num_classes] in evaluation; in training with aux_logits the dict
{'logits', 'aux1', 'aux2'} (ClassificationTask adds the auxiliary losses, weighted by
task.aux_loss_weight); with features_only the stage outputs {'c2': 192 channels, 'c3': 480,
'c4': 832, 'c5': 1024} at strides 4, 8, 16, 32 (ceil(H / stride) for other sizes), as ResNet's.
Also registered as BACKBONES "googlenet" (features_only, no auxiliary heads). Parameter names
follow torchvision's (conv1.conv, inception3a.branch2_0.bn, ...); porting its weights needs HWIO
kernels and, for the aux heads' fc1, inputs flattened in HWC order rather than torch's CHW.
"""
from __future__ import annotations

from typing import Any, Dict, Union

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import BACKBONES, MODELS
from research.models.conv import Conv
from research.models.norm import BatchNorm
from research.models.initializers import kernel_initializers
from research.models.pooling import adaptive_avg_pool, max_pool_ceil, sow_stage

Output = Union[jnp.ndarray, Dict[str, jnp.ndarray]]

# Inception blocks: (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (a 3x3 conv), pool projection).
_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm (eps 1e-3, torch momentum 0.1) + ReLU: [N, H, W, C] -> [N, H', W', features]."""

  features: int
  kernel: int = 1
  strides: int = 1
  padding: int = 0
  kernel_init: str = "normal:0.01"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = Conv(self.features, (self.kernel, self.kernel), strides=self.strides, padding=self.padding, use_bias=False,
             kernel_init=kernel_initializers(self.kernel_init)[0], dtype=self.dtype, name="conv")(x)
    x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """Four branches concatenated on channels: [N, H, W, C] -> [N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj]."""

  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  kernel_init: str = "normal:0.01"
  dtype: Any = jnp.float32

  def _conv(self, features: int, kernel: int, name: str) -> BasicConv:
    return BasicConv(features, kernel, padding=kernel // 2, kernel_init=self.kernel_init, dtype=self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    b1 = self._conv(self.ch1x1, 1, "branch1")(x, train)
    b2 = self._conv(self.ch3x3, 3, "branch2_1")(self._conv(self.ch3x3red, 1, "branch2_0")(x, train), train)
    b3 = self._conv(self.ch5x5, 3, "branch3_1")(self._conv(self.ch5x5red, 1, "branch3_0")(x, train), train)
    b4 = self._conv(self.pool_proj, 1, "branch4_1")(sow_stage(self, "branch4_pool", max_pool_ceil(x, 3, 1, 1)), train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
  """Auxiliary classifier: [N, H, W, C] -> logits [N, num_classes] (float32)."""

  num_classes: int
  dropout_rate: float = 0.7
  kernel_init: str = "normal:0.01"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    init = kernel_initializers(self.kernel_init)[1]
    x = BasicConv(128, 1, kernel_init=self.kernel_init, dtype=self.dtype, name="conv")(adaptive_avg_pool(x, 4), train)
    x = nn.relu(nn.Dense(1024, kernel_init=init, dtype=self.dtype, name="fc1")(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


@MODELS.register("googlenet")
@BACKBONES.register("googlenet", aux_logits=False, features_only=True)
class GoogLeNet(nn.Module):
  """images [N, H, W, 3] (224 in the paper; at least 15x15) -> logits, aux dict or features (module docstring).

  Attributes:
    num_classes: output classes.
    aux_logits: build the two auxiliary heads and return their logits in training.
    dropout_rate: dropout before the last fc (torchvision 0.2); aux_dropout_rate: in the aux heads (0.7).
    features_only: return the stage features {'c2'..'c5'} instead of logits.
    kernel_init: kernel initializer spec, "SPEC" or "CONV_SPEC,DENSE_SPEC" (research.models.initializers).
  """

  num_classes: int = 1000
  aux_logits: bool = True
  dropout_rate: float = 0.2
  aux_dropout_rate: float = 0.7
  features_only: bool = False
  kernel_init: str = "normal:0.01"
  dtype: Any = jnp.float32

  def _conv(self, features: int, kernel: int, strides: int, name: str) -> BasicConv:
    return BasicConv(features, kernel, strides, kernel // 2, self.kernel_init, self.dtype, name=name)

  def _inception(self, key: str) -> Inception:
    return Inception(*_BLOCKS[key], kernel_init=self.kernel_init, dtype=self.dtype, name=f"inception{key}")

  def _aux(self, name: str) -> InceptionAux:
    return InceptionAux(self.num_classes, self.aux_dropout_rate, self.kernel_init, self.dtype, name=name)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Output:
    # The aux heads are built at initialization too (initialization runs in evaluation mode).
    with_aux = self.aux_logits and not self.features_only and (train or self.is_initializing())
    feats, outputs = {}, {}
    x = self._conv(64, 7, 2, "conv1")(x.astype(self.dtype), train)
    x = sow_stage(self, "pool1", max_pool_ceil(x, 3, 2))
    x = self._conv(64, 1, 1, "conv2")(x, train)
    feats["c2"] = x = self._conv(192, 3, 1, "conv3")(x, train)
    x = sow_stage(self, "pool2", max_pool_ceil(x, 3, 2))
    x = self._inception("3a")(x, train)
    feats["c3"] = x = self._inception("3b")(x, train)
    x = sow_stage(self, "pool3", max_pool_ceil(x, 3, 2))
    x = self._inception("4a")(x, train)
    if with_aux:
      outputs["aux1"] = self._aux("aux1")(x, train)
    for key in ("4b", "4c", "4d"):
      x = self._inception(key)(x, train)
    if with_aux:
      outputs["aux2"] = self._aux("aux2")(x, train)
    feats["c4"] = x = self._inception("4e")(x, train)
    x = sow_stage(self, "pool4", max_pool_ceil(x, 2, 2))
    feats["c5"] = x = self._inception("5b")(self._inception("5a")(x, train), train)
    if self.features_only:
      return feats
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x.mean(axis=(1, 2)))
    logits = nn.Dense(self.num_classes, kernel_init=kernel_initializers(self.kernel_init)[1], dtype=self.dtype,
                      name="fc")(x).astype(jnp.float32)
    return {"logits": logits, **outputs} if train and outputs else logits
