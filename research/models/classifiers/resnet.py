"""ResNets (He et al. 2016): ImageNet form (ResNet-18/34/50/101/152, as torchvision) and CIFAR
form (ResNet-20/32/44/56/110). CIFAR shortcuts: option A (default, the paper's CIFAR choice):
identity, strided subsampling and zero padding of the new channels, no parameters (ResNet-20:
269,722 parameters); option B: 1x1 conv + BN projections where the shape changes (272,474).

Every model returns logits [N, num_classes]; `features_only=True` returns the stage outputs
{'c2', 'c3', 'c4', 'c5'} (strides 4, 8, 16, 32 for the ImageNet form; the CIFAR form has three
stages, 'c2'..'c4' at strides 1, 2, 4) for detection and segmentation heads. The ImageNet
models are also registered as BACKBONES (features_only).

`kernel_init` (ResNet, CifarResNet) names the kernel initializers, "SPEC" for all or
"CONV_SPEC,DENSE_SPEC" (research.models.initializers); the default "he_normal,lecun_normal" is He
normal with fan_out (torchvision's kaiming_normal_(mode='fan_out')) for the convolutions and
flax's LeCun normal for the fc.

Every block ends in research.models.fusion_barrier.relu_barrier: relu, whose result the native
CPU path stores once, so XLA:CPU does not recompute the residual stream in each of its consumers.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import BACKBONES, MODELS
from research.models.conv import Conv
from research.models.fusion_barrier import relu_barrier
from research.models.norm import BatchNorm
from research.models.initializers import kernel_initializers
from research.models.pooling import max_pool, sow_stage

Output = Union[jnp.ndarray, Dict[str, jnp.ndarray]]
_INIT = "he_normal,lecun_normal"


def _norm(train: bool, dtype: Any, name: str, zero: bool = False) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                   scale_init=nn.initializers.zeros if zero else nn.initializers.ones, name=name)


class BasicBlock(nn.Module):
  """Two 3x3 convs (dilated by `dilation`); projection shortcut (1x1 conv + BN) when the shape changes."""

  features: int
  strides: int = 1
  zero_init_residual: bool = False
  kernel_init: str = _INIT
  dtype: Any = jnp.float32
  dilation: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(Conv, use_bias=False, kernel_init=kernel_initializers(self.kernel_init)[0],
                             dtype=self.dtype)
    d = self.dilation
    y = conv(self.features, (3, 3), strides=self.strides, padding=d, kernel_dilation=d, name="conv1")(x)
    y = nn.relu(_norm(train, self.dtype, "bn1")(y))
    y = conv(self.features, (3, 3), padding=d, kernel_dilation=d, name="conv2")(y)
    y = _norm(train, self.dtype, "bn2", self.zero_init_residual)(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = conv(self.features, (1, 1), strides=self.strides, padding=0, name="downsample_conv")(x)
      x = _norm(train, self.dtype, "downsample_bn")(x)
    return relu_barrier(x + y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (stride and `dilation` here, as torchvision's ResNet v1.5), 1x1 expand by 4."""

  features: int
  strides: int = 1
  zero_init_residual: bool = False
  kernel_init: str = _INIT
  dtype: Any = jnp.float32
  dilation: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(Conv, use_bias=False, kernel_init=kernel_initializers(self.kernel_init)[0],
                             dtype=self.dtype)
    out = self.features * 4
    y = nn.relu(_norm(train, self.dtype, "bn1")(conv(self.features, (1, 1), padding=0, name="conv1")(x)))
    y = conv(self.features, (3, 3), strides=self.strides, padding=self.dilation, kernel_dilation=self.dilation,
             name="conv2")(y)
    y = nn.relu(_norm(train, self.dtype, "bn2")(y))
    y = _norm(train, self.dtype, "bn3", self.zero_init_residual)(conv(out, (1, 1), padding=0, name="conv3")(y))
    if x.shape[-1] != out or self.strides != 1:
      x = conv(out, (1, 1), strides=self.strides, padding=0, name="downsample_conv")(x)
      x = _norm(train, self.dtype, "downsample_bn")(x)
    return relu_barrier(x + y)


_BLOCKS: Dict[str, Callable[..., nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


@MODELS.register("resnet18", stage_sizes=(2, 2, 2, 2), block="basic")
@MODELS.register("resnet34", stage_sizes=(3, 4, 6, 3), block="basic")
@MODELS.register("resnet50", stage_sizes=(3, 4, 6, 3), block="bottleneck")
@MODELS.register("resnet101", stage_sizes=(3, 4, 23, 3), block="bottleneck")
@MODELS.register("resnet152", stage_sizes=(3, 8, 36, 3), block="bottleneck")
@MODELS.register("resnet18_cifar", stage_sizes=(2, 2, 2, 2), block="basic", small_inputs=True)
@BACKBONES.register("resnet18", stage_sizes=(2, 2, 2, 2), block="basic", features_only=True)
@BACKBONES.register("resnet50", stage_sizes=(3, 4, 6, 3), block="bottleneck", features_only=True)
class ResNet(nn.Module):
  """images [N, H, W, 3] -> logits [N, num_classes] (or stage features, see module docstring).

  small_inputs: a 3x3 stride-1 stem without max pooling, for 32x32 images (resnet18_cifar).
  replace_stride_with_dilation: for layer2, layer3, layer4, whether the stage keeps its input
    resolution and dilates its 3x3 convolutions instead of striding (torchvision's argument, same
    rule: a stage's first block uses the dilation before it). (False, False, True) gives output
    stride 16 ('c5' at stride 16, DeepLab's backbone), (False, True, True) output stride 8.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  num_classes: int = 1000
  width: int = 64
  small_inputs: bool = False
  zero_init_residual: bool = False
  features_only: bool = False
  kernel_init: str = _INIT
  replace_stride_with_dilation: Tuple[bool, bool, bool] = (False, False, False)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Output:
    if len(self.replace_stride_with_dilation) != 3:
      raise ValueError("replace_stride_with_dilation needs 3 values (layer2, layer3, layer4), got "
                       f"{self.replace_stride_with_dilation}")
    conv_init, fc_init = kernel_initializers(self.kernel_init)
    x = x.astype(self.dtype)
    if self.small_inputs:
      x = Conv(self.width, (3, 3), padding=1, use_bias=False, kernel_init=conv_init, dtype=self.dtype,
               name="conv1")(x)
    else:
      x = Conv(self.width, (7, 7), strides=2, padding=3, use_bias=False, kernel_init=conv_init, dtype=self.dtype,
               name="conv1")(x)
    x = nn.relu(_norm(train, self.dtype, "bn1")(x))
    if not self.small_inputs:
      x = sow_stage(self, "maxpool", max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))))
    feats = {}
    block = _BLOCKS[self.block]
    dilation = 1
    for i, n in enumerate(self.stage_sizes):
      stride, previous_dilation = (2 if i > 0 else 1), dilation
      if i > 0 and self.replace_stride_with_dilation[i - 1]:
        dilation, stride = dilation * stride, 1
      for j in range(n):
        x = block(self.width * 2 ** i, strides=stride if j == 0 else 1,
                  dilation=previous_dilation if j == 0 else dilation, zero_init_residual=self.zero_init_residual,
                  kernel_init=self.kernel_init, dtype=self.dtype, name=f"layer{i + 1}_{j}")(x, train)
      feats[f"c{i + 2}"] = x
    if self.features_only:
      return feats
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=fc_init, dtype=self.dtype, name="fc")(x).astype(jnp.float32)


class CifarBlock(nn.Module):
  """Basic block; shortcut 'A': x[:, ::2, ::2] zero-padded to the new width, 'B': 1x1 conv + BN."""

  features: int
  strides: int = 1
  shortcut: str = "A"
  kernel_init: str = _INIT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(Conv, use_bias=False, kernel_init=kernel_initializers(self.kernel_init)[0],
                             dtype=self.dtype)
    y = nn.relu(_norm(train, self.dtype, "bn1")(conv(self.features, (3, 3), strides=self.strides, padding=1,
                                                      name="conv1")(x)))
    y = _norm(train, self.dtype, "bn2")(conv(self.features, (3, 3), padding=1, name="conv2")(y))
    extra = self.features - x.shape[-1]
    if self.shortcut == "B" and (extra or self.strides > 1):
      shortcut = conv(self.features, (1, 1), strides=self.strides, padding=0, name="downsample_conv")(x)
      shortcut = _norm(train, self.dtype, "downsample_bn")(shortcut)
    else:
      shortcut = x[:, ::self.strides, ::self.strides] if self.strides > 1 else x
      if extra:
        shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return relu_barrier(shortcut + y)


@MODELS.register("resnet20", depth=20)
@MODELS.register("resnet32", depth=32)
@MODELS.register("resnet44", depth=44)
@MODELS.register("resnet56", depth=56)
@MODELS.register("resnet110", depth=110)
class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 images: 16/32/64 channels, n blocks per stage, shortcut 'A' or 'B'."""

  depth: int = 20
  num_classes: int = 10
  shortcut: str = "A"
  features_only: bool = False
  kernel_init: str = _INIT
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> Output:
    if (self.depth - 2) % 6:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
    n = (self.depth - 2) // 6
    conv_init, fc_init = kernel_initializers(self.kernel_init)
    x = Conv(16, (3, 3), padding=1, use_bias=False, kernel_init=conv_init, dtype=self.dtype, name="conv1")(
        x.astype(self.dtype))
    x = nn.relu(_norm(train, self.dtype, "bn1")(x))
    feats = {}
    for i, width in enumerate((16, 32, 64)):
      for j in range(n):
        x = CifarBlock(width, 2 if (i > 0 and j == 0) else 1, self.shortcut, self.kernel_init, dtype=self.dtype,
                       name=f"stage{i + 1}_{j}")(x, train)
      feats[f"c{i + 2}"] = x
    if self.features_only:
      return feats
    return nn.Dense(self.num_classes, kernel_init=fc_init, dtype=self.dtype, name="fc")(
        x.mean(axis=(1, 2))).astype(jnp.float32)
