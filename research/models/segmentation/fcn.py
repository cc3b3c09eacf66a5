"""FCN (Long et al. 2015): class scores from stride-32/16/8 features, fused by upsampling.

variant '32s' scores c5 only; '16s' adds c4; '8s' adds c4 and c3 (the skip connections). With
`fc_channels` > 0, c5 first goes through the paper's convolutionalized classifier: fc6 (7x7 conv,
padding 3 where the paper pads the input by 100 and crops) and fc7 (1x1), each followed by ReLU and
dropout (`fc_dropout`), 4,096 channels for VGG-16, loadable from VGG's classifier fc1/fc2 (the
same numbers reshaped; see configs/fcn8s_voc2012.py). Each step upsamples 2x, learned
(ConvTranspose initialized to bilinear, as in the paper) or fixed bilinear, and the result is
upsampled to the input size. Output logits [N, H, W, num_classes]. `FCNHead` is the decoder
alone, on a backbone's feature dict (for models sharing a backbone).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.core.registry import MODELS
from research.models.conv import Conv
from research.models.segmentation.encoder import build_backbone


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
  """[size, size, channels, channels] per-channel bilinear upsampling kernel (FCN's init)."""
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  og = np.ogrid[:size, :size]
  filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
  kernel = np.zeros((size, size, channels, channels), np.float32)
  kernel[:, :, range(channels), range(channels)] = filt[:, :, None]
  return kernel


def resize_to(x: jnp.ndarray, hw: tuple[int, int]) -> jnp.ndarray:
  """Bilinear resize of [N, h, w, C] to [N, H, W, C]."""
  return jax.image.resize(x, (x.shape[0], hw[0], hw[1], x.shape[-1]), "bilinear")


class FCNHead(nn.Module):
  """Backbone features {'c3', 'c4', 'c5'} -> logits [N, H, W, num_classes] at image_hw = (H, W).

  The FCN decoder on its own: per-stride class scores (zero-initialized 1x1 convs `score_cK`),
  fused coarse to fine by 2x upsampling (`up_cK`), then resized to the input. A multi-task model
  runs it on a shared backbone; `FCN` shares its scope, so its parameters keep their paths."""

  num_classes: int = 21
  variant: str = "8s"
  learned_upsampling: bool = True
  dtype: Any = jnp.float32
  fc_channels: int = 0
  fc_dropout: float = 0.5

  def _up2(self, x: jnp.ndarray, hw: tuple[int, int], name: str) -> jnp.ndarray:
    if not self.learned_upsampling:
      return resize_to(x, hw)
    c = x.shape[-1]
    y = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME", use_bias=False, dtype=self.dtype,
                         kernel_init=lambda *_: jnp.asarray(bilinear_kernel(4, c)), name=name)(x)
    return y[:, :hw[0], :hw[1]]

  @nn.compact
  def __call__(self, feats: Dict[str, jnp.ndarray], image_hw: Tuple[int, int], train: bool = False
               ) -> jnp.ndarray:
    score = lambda f, n: Conv(self.num_classes, (1, 1), dtype=self.dtype, kernel_init=nn.initializers.zeros,  # noqa: E731
                              name=n)(f)
    top = feats["c5"]
    if self.fc_channels:
      for name, kernel in (("fc6", 7), ("fc7", 1)):
        top = nn.relu(Conv(self.fc_channels, (kernel, kernel), padding=kernel // 2, dtype=self.dtype, name=name)(top))
        top = nn.Dropout(self.fc_dropout, deterministic=not train)(top)
    out = score(top, "score_c5")
    skips = {"32s": (), "16s": ("c4",), "8s": ("c4", "c3")}[self.variant]
    for key in skips:
      skip = feats[key]
      out = self._up2(out, skip.shape[1:3], f"up_{key}") + score(skip, f"score_{key}")
    return resize_to(out, image_hw).astype(jnp.float32)


@MODELS.register("fcn32s", variant="32s")
@MODELS.register("fcn16s", variant="16s")
@MODELS.register("fcn8s", variant="8s")
class FCN(nn.Module):
  """images [N, H, W, 3] -> logits [N, H, W, num_classes]: a registered backbone + `FCNHead`."""

  num_classes: int = 21
  backbone: str = "small_cnn"
  variant: str = "8s"
  learned_upsampling: bool = True
  fc_channels: int = 0
  fc_dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    feats = build_backbone(self.backbone, self.dtype, name="backbone")(x, train)
    head = FCNHead(self.num_classes, self.variant, self.learned_upsampling, self.dtype, self.fc_channels,
                   self.fc_dropout)
    nn.share_scope(self, head)
    return head(feats, x.shape[1:3], train)
