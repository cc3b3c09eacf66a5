"""DeepLabv3-style head (Chen et al. 2017): atrous spatial pyramid pooling on backbone features.

ASPP = a 1x1 conv, three 3x3 atrous convs (rates configurable, e.g. (6, 12, 18) at output stride
16, doubled at output stride 8) and image-level pooling, concatenated, projected by 1x1, then a
3x3 conv and the classifier; logits upsampled (bilinear) to the input. Output logits
[N, H, W, num_classes]. `DeepLabHead` is the decoder alone, on a backbone's feature dict (for
models sharing a backbone).

Which feature ASPP reads: with `dilated_backbone` (the paper's and torchvision's form; ResNet
backbones) the backbone's last stages trade their stride for dilation so that its deepest
feature 'c5' has stride `output_stride` (16: layer4 dilated by 2; 8: layer3 by 2, layer4 by 4);
without it, the undilated backbone's feature at that stride (8: 'c3', 16: 'c4').
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.segmentation.encoder import ConvBNReLU, build_backbone
from research.models.segmentation.fcn import resize_to


class ASPP(nn.Module):
  """[N, h, w, C] -> [N, h, w, features]."""

  features: int = 64
  rates: Sequence[int] = (6, 12, 18)
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    branches = [ConvBNReLU(self.features, kernel=1, dtype=self.dtype, name="b0")(x, train)]
    for i, rate in enumerate(self.rates, start=1):
      branches.append(ConvBNReLU(self.features, dilation=rate, dtype=self.dtype, name=f"b{i}")(x, train))
    pooled = ConvBNReLU(self.features, kernel=1, dtype=self.dtype, name="pool")(
        x.mean(axis=(1, 2), keepdims=True), train)
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    y = ConvBNReLU(self.features, kernel=1, dtype=self.dtype, name="project")(jnp.concatenate(branches, -1), train)
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class DeepLabHead(nn.Module):
  """Backbone features {'c3' or 'c4'} -> logits [N, H, W, num_classes] at image_hw = (H, W).

  The DeepLabv3 decoder on its own (`aspp`, `head`, `logits`), on the feature of stride
  `output_stride`. A multi-task model runs it on a shared backbone; `DeepLabV3` shares its scope,
  so its parameters keep their paths."""

  num_classes: int = 21
  output_stride: int = 8
  aspp_features: int = 64
  rates: Sequence[int] = (2, 4, 6)
  dtype: Any = jnp.float32
  feature: str = ""  # the feature ASPP reads; "" = the undilated backbone's at output_stride

  @nn.compact
  def __call__(self, feats: Dict[str, jnp.ndarray], image_hw: Tuple[int, int], train: bool = False
               ) -> jnp.ndarray:
    f = feats[self.feature or _UNDILATED_FEATURE[self.output_stride]]
    y = ASPP(self.aspp_features, tuple(self.rates), dtype=self.dtype, name="aspp")(f, train)
    y = ConvBNReLU(self.aspp_features, dtype=self.dtype, name="head")(y, train)
    y = Conv(self.num_classes, (1, 1), dtype=self.dtype, name="logits")(y)
    return resize_to(y, image_hw).astype(jnp.float32)


_UNDILATED_FEATURE = {8: "c3", 16: "c4"}
# ResNet's replace_stride_with_dilation (layer2, layer3, layer4) that puts 'c5' at the output stride.
_DILATION = {8: (False, True, True), 16: (False, False, True)}


@MODELS.register("deeplabv3")
class DeepLabV3(nn.Module):
  """images [N, H, W, 3] -> logits [N, H, W, num_classes]: a registered backbone + `DeepLabHead`."""

  num_classes: int = 21
  backbone: str = "small_cnn"
  output_stride: int = 8
  aspp_features: int = 64
  rates: Sequence[int] = (2, 4, 6)
  dilated_backbone: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.output_stride not in _UNDILATED_FEATURE:
      raise ValueError(f"DeepLabV3 output_stride must be 8 or 16, got {self.output_stride}")
    kwargs = {"replace_stride_with_dilation": _DILATION[self.output_stride]} if self.dilated_backbone else {}
    feats = build_backbone(self.backbone, self.dtype, name="backbone", **kwargs)(x, train)
    head = DeepLabHead(self.num_classes, self.output_stride, self.aspp_features, tuple(self.rates), self.dtype,
                       feature="c5" if self.dilated_backbone else "")
    nn.share_scope(self, head)
    return head(feats, x.shape[1:3], train)
