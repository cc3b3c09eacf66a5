"""Box geometry with torchvision.ops semantics, as pure jit-able JAX functions.

Box convention of this layer: a box is `[x1, y1, x2, y2]` in absolute pixel coordinates of the
image (x to the right, y down), continuous, with `x2 - x1` the width and `y2 - y1` the height
(no "+1" term), exactly as torchvision.ops expects. Boxes live in the last axis of size 4; any
leading batch axes are allowed unless a function says otherwise. Conversions to and from
`[cx, cy, w, h]` and `[y1, x1, y2, x2]` (the TFDS/TF Object Detection order) are provided for the
boundaries where data arrives in another layout.
"""
from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp


def box_area(boxes: jax.Array) -> jax.Array:
  """Areas [...] of boxes [..., 4] in [x1, y1, x2, y2] pixels: (x2 - x1) * (y2 - y1).

  Like torchvision.ops.box_area, degenerate boxes (x2 < x1) give a negative or zero area; they
  are not clamped.
  """
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
  """Pairwise IoU [N, M] of boxes1 [N, 4] and boxes2 [M, 4], both [x1, y1, x2, y2] pixels.

  Same as torchvision.ops.box_iou: intersection sides clamp(min(x2) - max(x1), 0), no +1 term,
  IoU = inter / (area1 + area2 - inter). Two zero-area boxes give 0 / 0 = NaN, as in torchvision.
  """
  area1 = box_area(boxes1)
  area2 = box_area(boxes2)
  lt = jnp.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
  rb = jnp.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  return inter / (area1[:, None] + area2[None, :] - inter)


def clip_boxes(boxes: jax.Array, image_size: Tuple[int, int] | jax.Array) -> jax.Array:
  """Boxes [..., 4] in [x1, y1, x2, y2] pixels clipped to an image of size (height, width).

  x coordinates go to [0, width], y to [0, height] (torchvision.ops.clip_boxes_to_image).
  `image_size` is a (height, width) pair or a traced array [..., 2] whose leading axes broadcast
  against those of `boxes`: per-image sizes [B, 1, 2] for boxes [B, N, 4] of a padded batch.
  """
  image_size = jnp.asarray(image_size, boxes.dtype)
  height, width = image_size[..., 0:1], image_size[..., 1:2]
  x = jnp.clip(boxes[..., 0::2], 0.0, width)
  y = jnp.clip(boxes[..., 1::2], 0.0, height)
  return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def min_size_mask(boxes: jax.Array, min_size: float) -> jax.Array:
  """Bool [...]: True for boxes [..., 4] ([x1, y1, x2, y2] pixels) with both sides >= min_size.

  The static-shape form of torchvision.ops.remove_small_boxes, which returns the indices of
  exactly these boxes.
  """
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  return (widths >= min_size) & (heights >= min_size)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
  """[x1, y1, x2, y2] -> [cx, cy, w, h] in the last axis (pixels)."""
  x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  """[cx, cy, w, h] -> [x1, y1, x2, y2] in the last axis (pixels)."""
  cx, cy, w, h = jnp.moveaxis(boxes, -1, 0)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_yxyx(boxes: jax.Array) -> jax.Array:
  """[x1, y1, x2, y2] -> [y1, x1, y2, x2] in the last axis; the map is its own inverse."""
  return boxes[..., jnp.array([1, 0, 3, 2])]


yxyx_to_xyxy = xyxy_to_yxyx
