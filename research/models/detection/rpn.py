"""Region proposal network (Ren et al. 2015) with torchvision's training rules, in static shapes.

Boxes are [x1, y1, x2, y2] in pixels of the padded input image. Anchors [A, 4] come from
`research.ops.anchors.multilevel_anchors` (cell-major per level, levels concatenated), and the
head's outputs are laid out in the same order: objectness logits [N, A] and box codes [N, A, 4].
Ground truth arrives padded to M boxes per image with a validity mask; every per-image function
here is written for one image and vmapped over the batch.

torchvision rules reproduced: anchors match ground truth at IoU >= 0.7 (foreground), < 0.3
(background), in between ignored, plus every ground truth's best anchors ("low-quality
matches"); 256 anchors sampled per image, at most half positive; losses are binary
cross-entropy over the sampled anchors and smooth-L1 (beta 1/9) over the positives, both
normalized by the number sampled. Proposals: top `pre_nms_top_n` logits per level, decoded,
clipped, boxes smaller than `min_size` dropped, NMS at 0.7 per level, best `post_nms_top_n`.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.models.conv import Conv
from research.ops import box_coder, boxes as box_ops, matcher
from research.ops.nms import batched_nms


def smooth_l1(x: jax.Array, beta: float) -> jax.Array:
  """Elementwise smooth-L1 (torch.nn.functional.smooth_l1_loss, reduction='none') of x = pred - target."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


class RPNHead(nn.Module):
  """3x3 conv + ReLU shared over levels, then 1x1 convs to A objectness logits and 4 A box codes.

  features: a list of [N, H_l, W_l, C] maps -> (logits [N, sum_l H_l W_l A], codes [N, ..., 4]),
  cell-major per level with the A anchors of a cell consecutive, as the anchors are ordered.
  """

  num_anchors: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> Tuple[jnp.ndarray, jnp.ndarray]:
    init = nn.initializers.normal(0.01)
    channels = features[0].shape[-1]
    conv = Conv(channels, (3, 3), padding=1, kernel_init=init, dtype=self.dtype, name="conv")
    cls = Conv(self.num_anchors, (1, 1), padding=0, kernel_init=init, dtype=self.dtype, name="cls_logits")
    reg = Conv(4 * self.num_anchors, (1, 1), padding=0, kernel_init=init, dtype=self.dtype, name="bbox_pred")
    logits, codes = [], []
    for f in features:
      t = nn.relu(conv(f))
      logits.append(cls(t).reshape(f.shape[0], -1))
      codes.append(reg(t).reshape(f.shape[0], -1, 4))
    return (jnp.concatenate(logits, 1).astype(jnp.float32),
            jnp.concatenate(codes, 1).astype(jnp.float32))


def anchor_targets(anchors: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array, key: jax.Array,
                   batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                   fg_iou: float = 0.7, bg_iou: float = 0.3) -> Dict[str, jax.Array]:
  """One image's RPN targets: 'positive', 'negative' bool [A] (the sample) and 'codes' [A, 4]
  (RPN-weight codes of each positive anchor's ground truth, 0 elsewhere).

  anchors [A, 4]; gt_boxes [M, 4]; gt_valid bool [M]. An image without valid boxes has only
  negatives."""
  quality = box_ops.box_iou(gt_boxes, anchors)
  matches = matcher.match(quality, fg_iou, bg_iou, True, gt_valid)
  labels = jnp.where(matches >= 0, 1, jnp.where(matches == matcher.BELOW_LOW_THRESHOLD, 0, -1))
  positive, negative = matcher.sample_balanced(key, labels, batch_size_per_image, positive_fraction)
  matched = gt_boxes[jnp.maximum(matches, 0)]
  codes = box_coder.encode_boxes(matched, anchors, box_coder.RPN_WEIGHTS)
  return {"positive": positive, "negative": negative,
          "codes": jnp.where(positive[:, None], codes, 0.0)}


def rpn_losses(logits: jax.Array, codes: jax.Array, targets: Dict[str, jax.Array]
               ) -> Dict[str, jax.Array]:
  """Batch losses {'rpn_objectness', 'rpn_box'} from logits [N, A], codes [N, A, 4] and the
  stacked `anchor_targets` of the N images (torchvision's normalization over the whole batch)."""
  positive, negative = targets["positive"], targets["negative"]
  sampled = (positive | negative).astype(jnp.float32)
  num_sampled = jnp.maximum(sampled.sum(), 1.0)
  bce = jnp.maximum(logits, 0) - logits * positive + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  box = smooth_l1(codes - targets["codes"], 1.0 / 9).sum(-1)
  return {"rpn_objectness": jnp.sum(bce * sampled) / num_sampled,
          "rpn_box": jnp.sum(jnp.where(positive, box, 0.0)) / num_sampled}


def select_proposals(anchors: np.ndarray, level_sizes: Sequence[int], logits: jax.Array,
                     codes: jax.Array, image_hw: Tuple[int, int], pre_nms_top_n: int,
                     post_nms_top_n: int, nms_threshold: float = 0.7, min_size: float = 1e-3,
                     score_threshold: float = 0.0) -> Tuple[jax.Array, jax.Array]:
  """One image's proposals [post_nms_top_n, 4] (descending objectness) and validity mask.

  anchors [A, 4] with `level_sizes` anchors per level (static); logits [A]; codes [A, 4].
  The result is cut from the gradient (proposals are inputs to the box head, as in torchvision).
  """
  logits, codes = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(codes)
  picks, levels, start = [], [], 0
  for level, size in enumerate(level_sizes):
    k = min(pre_nms_top_n, size)
    _, idx = jax.lax.top_k(logits[start:start + size], k)
    picks.append(idx + start)
    levels.append(np.full(k, level, np.int32))
    start += size
  idx = jnp.concatenate(picks)
  boxes = box_coder.decode_boxes(codes[idx], jnp.asarray(anchors)[idx], box_coder.RPN_WEIGHTS)
  boxes = box_ops.clip_boxes(boxes, image_hw)
  scores = jax.nn.sigmoid(logits[idx])
  valid = box_ops.min_size_mask(boxes, min_size) & (scores >= score_threshold)
  keep, keep_valid = batched_nms(boxes, scores, jnp.asarray(np.concatenate(levels)), nms_threshold,
                                 min(post_nms_top_n, idx.shape[0]), valid)
  return boxes[keep], keep_valid
