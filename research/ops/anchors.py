"""Anchor boxes as torchvision.models.detection.anchor_utils.AnchorGenerator makes them.

All boxes are [x1, y1, x2, y2] in absolute pixels of the (padded) input image. For a size s and
aspect ratio ar = height / width, the anchor has h = sqrt(ar) s and w = s / sqrt(ar); the
zero-centred base anchor round([-w, -h, w, h] / 2) is shifted to every feature-map cell by
(x, y) = (j * stride_w, i * stride_h), with stride = image_size // feature_size (integer
division, as torchvision). Anchors are ordered cell-major: for each row i, each column j, each
aspect ratio, each size -- the order of an NHWC head output reshaped to [H * W * A, ...] when the
A = len(aspect_ratios) * len(sizes) anchors of a cell are laid out ratio-major.

Anchors depend only on static shapes, so they are computed with numpy in float32 (the same
operations torchvision performs) and enter a jitted function as constants.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def base_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """Zero-centred anchors [len(aspect_ratios) * len(sizes), 4], [x1, y1, x2, y2] pixels.

  Ratio-major order (all sizes of the first ratio first), rounded half to even like torch.round.
  """
  scales = np.asarray(sizes, np.float32)
  ratios = np.asarray(aspect_ratios, np.float32)
  h_ratios = np.sqrt(ratios)
  w_ratios = 1 / h_ratios
  ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2)


def grid_anchors(feature_size: Tuple[int, int], stride: Tuple[int, int],
                 cell_anchors: np.ndarray) -> np.ndarray:
  """Anchors [H * W * A, 4] ([x1, y1, x2, y2] pixels) of one feature map.

  feature_size: (H, W) of the feature map; stride: (stride_h, stride_w) in pixels;
  cell_anchors: [A, 4] zero-centred anchors from `base_anchors`.
  """
  height, width = feature_size
  stride_h, stride_w = stride
  shift_y, shift_x = np.meshgrid(np.arange(height) * stride_h, np.arange(width) * stride_w,
                                 indexing="ij")
  shift_x = shift_x.reshape(-1)
  shift_y = shift_y.reshape(-1)
  shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1).astype(cell_anchors.dtype)
  return (shifts[:, None, :] + cell_anchors[None, :, :]).reshape(-1, 4)


def multilevel_anchors(image_size: Tuple[int, int], feature_sizes: Sequence[Tuple[int, int]],
                       sizes: Sequence[Sequence[float]],
                       aspect_ratios: Sequence[Sequence[float]]) -> np.ndarray:
  """Anchors [sum_l H_l * W_l * A_l, 4] ([x1, y1, x2, y2] pixels) over all feature levels.

  image_size: (height, width) of the padded input batch; feature_sizes: (H_l, W_l) per level;
  sizes[l], aspect_ratios[l]: the anchor sizes and ratios of level l (one level for a plain
  Faster R-CNN, five for FPN: sizes ((32,), (64,), ..., (512,)), ratios ((0.5, 1.0, 2.0),) * 5).
  Levels are concatenated in order; equals torchvision's AnchorGenerator output for one image.
  """
  if not len(feature_sizes) == len(sizes) == len(aspect_ratios):
    raise ValueError(f"{len(feature_sizes)} feature maps but {len(sizes)} size tuples and "
                     f"{len(aspect_ratios)} aspect-ratio tuples; give one of each per level.")
  levels = []
  for feature_size, level_sizes, level_ratios in zip(feature_sizes, sizes, aspect_ratios):
    stride = (image_size[0] // feature_size[0], image_size[1] // feature_size[1])
    levels.append(grid_anchors(feature_size, stride, base_anchors(level_sizes, level_ratios)))
  return np.concatenate(levels, axis=0)
