"""Faster R-CNN box regression targets, as torchvision.models.detection._utils.BoxCoder.

Boxes are [x1, y1, x2, y2] in absolute pixels. A reference (anchor or proposal) box p and a
target box g give the code
  dx = wx (gx - px) / pw,  dy = wy (gy - py) / ph,  dw = ww log(gw / pw),  dh = wh log(gh / ph),
with (px, py) / (gx, gy) the centres and pw, ph / gw, gh the sizes. Weights are (1, 1, 1, 1) for
the RPN and (10, 10, 5, 5) for the RoI box head. Decoding clamps dw and dh at log(1000 / 16) so
exp() cannot overflow.
"""
from __future__ import annotations

import math
from typing import Tuple

import jax
import jax.numpy as jnp

RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def encode_boxes(target_boxes: jax.Array, reference_boxes: jax.Array,
                 weights: Tuple[float, float, float, float]) -> jax.Array:
  """Regression codes [..., 4] (dx, dy, dw, dh) that move reference boxes onto target boxes.

  target_boxes, reference_boxes: [..., 4] in [x1, y1, x2, y2] pixels, broadcast against each
  other. Equals torchvision's BoxCoder(weights).encode_single(target_boxes, reference_boxes)
  (torchvision calls the targets "reference_boxes" and the anchors "proposals").
  """
  wx, wy, ww, wh = weights
  ref_w = reference_boxes[..., 2] - reference_boxes[..., 0]
  ref_h = reference_boxes[..., 3] - reference_boxes[..., 1]
  ref_cx = reference_boxes[..., 0] + 0.5 * ref_w
  ref_cy = reference_boxes[..., 1] + 0.5 * ref_h
  tgt_w = target_boxes[..., 2] - target_boxes[..., 0]
  tgt_h = target_boxes[..., 3] - target_boxes[..., 1]
  tgt_cx = target_boxes[..., 0] + 0.5 * tgt_w
  tgt_cy = target_boxes[..., 1] + 0.5 * tgt_h
  return jnp.stack([
      wx * (tgt_cx - ref_cx) / ref_w,
      wy * (tgt_cy - ref_cy) / ref_h,
      ww * jnp.log(tgt_w / ref_w),
      wh * jnp.log(tgt_h / ref_h),
  ], axis=-1)


def decode_boxes(codes: jax.Array, reference_boxes: jax.Array,
                 weights: Tuple[float, float, float, float],
                 clip: float = BBOX_XFORM_CLIP) -> jax.Array:
  """Boxes [..., 4] in [x1, y1, x2, y2] pixels from codes [..., 4] relative to reference boxes.

  codes and reference_boxes [..., 4] broadcast: class-specific codes [N, C, 4] decode against
  proposals [N, 1, 4] into [N, C, 4], which is torchvision's BoxCoder.decode of codes [N, 4 C].
  dw and dh are clamped from above at `clip` (log(1000/16) by default) before exp().
  """
  wx, wy, ww, wh = weights
  ref_w = reference_boxes[..., 2] - reference_boxes[..., 0]
  ref_h = reference_boxes[..., 3] - reference_boxes[..., 1]
  ref_cx = reference_boxes[..., 0] + 0.5 * ref_w
  ref_cy = reference_boxes[..., 1] + 0.5 * ref_h
  dx = codes[..., 0] / wx
  dy = codes[..., 1] / wy
  dw = jnp.minimum(codes[..., 2] / ww, clip)
  dh = jnp.minimum(codes[..., 3] / wh, clip)
  cx = dx * ref_w + ref_cx
  cy = dy * ref_h + ref_cy
  half_w = 0.5 * (jnp.exp(dw) * ref_w)
  half_h = 0.5 * (jnp.exp(dh) * ref_h)
  return jnp.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
