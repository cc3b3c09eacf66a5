"""Fast R-CNN box head on proposals: RoI sampling, multi-level RoIAlign, losses, detections.

Boxes are [x1, y1, x2, y2] in pixels of the padded input image; class ids are 1..C for objects
and 0 for background. Per-image functions are written for one image and vmapped by the model.

torchvision rules reproduced: ground-truth boxes join the proposals; proposals match ground
truth at IoU >= 0.5 (foreground) else background; 512 RoIs sampled per image with at most 25%
foreground; RoIAlign 7x7, sampling ratio 2, each RoI pooled from FPN level
floor(k0 + log2(sqrt(area) / s0)) (k0 = 4, s0 = 224 for ImageNet-scale images); two 1024-wide FC
layers; class logits and class-specific codes (weights 10, 10, 5, 5); loss = cross-entropy over
the sampled RoIs + smooth-L1 (beta 1/9) of the true class's codes over the foreground, divided
by the number sampled. Inference: softmax, per-class boxes clipped, scores > 0.05, boxes at
least 0.01 pixel, class-wise NMS at 0.5, the best 100.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.models.detection.rpn import smooth_l1
from research.ops import box_coder, boxes as box_ops, matcher
from research.ops.nms import batched_nms
from research.ops.roi_align import roi_align, roi_align_per_image


def sample_rois(proposals: jax.Array, proposal_valid: jax.Array, gt_boxes: jax.Array,
                gt_labels: jax.Array, gt_valid: jax.Array, key: jax.Array, num_rois: int,
                positive_fraction: float = 0.25, fg_iou: float = 0.5, bg_iou: float = 0.5
                ) -> Dict[str, jax.Array]:
  """One image's training RoIs: 'boxes' [R, 4], 'labels' int32 [R] (0 background), 'codes'
  [R, 4] (RoI-head codes of foreground RoIs, 0 elsewhere), 'weight' float [R] (1 for sampled
  RoIs, 0 for padding slots when too few candidates exist).

  proposals [P, 4] with proposal_valid [P]; gt_boxes [M, 4], gt_labels int [M] (1..C), gt_valid
  [M]. R = min(num_rois, P + M); sampled RoIs come first."""
  candidates = jnp.concatenate([proposals, gt_boxes])
  valid = jnp.concatenate([proposal_valid, gt_valid])
  quality = box_ops.box_iou(gt_boxes, candidates)
  matches = matcher.match(quality, fg_iou, bg_iou, False, gt_valid)
  labels = jnp.where(matches >= 0, gt_labels[jnp.maximum(matches, 0)], 0)
  labels = jnp.where((matches == matcher.BETWEEN_THRESHOLDS) | ~valid, -1, labels)
  positive, negative = matcher.sample_balanced(key, labels, num_rois, positive_fraction)
  sampled = positive | negative
  count = min(num_rois, candidates.shape[0])
  _, order = jax.lax.top_k(sampled.astype(jnp.float32), count)
  rois = candidates[order]
  fg = positive[order]
  codes = box_coder.encode_boxes(gt_boxes[jnp.maximum(matches[order], 0)], rois,
                                 box_coder.ROI_HEAD_WEIGHTS)
  return {"boxes": rois, "labels": jnp.where(fg, labels[order], 0).astype(jnp.int32),
          "codes": jnp.where(fg[:, None], codes, 0.0), "weight": sampled[order].astype(jnp.float32)}


def roi_levels(rois: jax.Array, num_levels: int, canonical_scale: float, canonical_level: int,
               min_level: int) -> jax.Array:
  """Index (0-based from `min_level`) of the pyramid level each RoI [..., 4] pools from:
  clamp(floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)), torchvision's
  LevelMapper."""
  scale = jnp.sqrt(jnp.maximum(box_ops.box_area(rois), 1e-12))
  level = jnp.floor(canonical_level + jnp.log2(scale / canonical_scale) + 1e-6)
  return (jnp.clip(level, min_level, min_level + num_levels - 1) - min_level).astype(jnp.int32)


def _pool_level(features: jax.Array, rois: jax.Array, stride: int, output_size: int,
                sampling_ratio: int, dense_max_cells: int) -> jax.Array:
  """RoIAlign of rois [N, R, 4] on one map [N, H, W, C] -> [N, R, S, S, C]: the matrix-product
  form for maps of at most `dense_max_cells` cells, the gather form above (its work does not
  grow with the map, its memory does not grow with R x W x C)."""
  size = (output_size, output_size)
  n, h, w, _ = features.shape
  if h * w <= dense_max_cells:
    return roi_align_per_image(features, rois, size, 1.0 / stride, sampling_ratio)
  r = rois.shape[1]
  pooled = roi_align(features, rois.reshape(n * r, 4), jnp.repeat(jnp.arange(n, dtype=jnp.int32), r),
                     size, 1.0 / stride, sampling_ratio)
  return pooled.reshape((n, r) + pooled.shape[1:])


def multilevel_roi_align(features: Sequence[jax.Array], strides: Sequence[int], rois: jax.Array,
                         output_size: int = 7, sampling_ratio: int = 2,
                         canonical_scale: float = 224.0, canonical_level: int = 4,
                         dense_max_cells: int = 4096) -> jax.Array:
  """Pooled features [N, R, S, S, C] of rois [N, R, 4] from feature maps [N, H_l, W_l, C] at
  `strides` (powers of two; one map: plain RoIAlign). torchvision's MultiScaleRoIAlign
  (aligned=False). Each level pools every RoI and the RoI's own level is selected: simple and
  static, at num_levels times the pooling work."""
  pooled = [_pool_level(f, rois, s, output_size, sampling_ratio, dense_max_cells)
            for f, s in zip(features, strides)]
  if len(pooled) == 1:
    return pooled[0]
  min_level = int(round(np.log2(strides[0])))
  level = roi_levels(rois, len(pooled), canonical_scale, canonical_level, min_level)
  return sum(jnp.where((level == i)[..., None, None, None], p, 0.0) for i, p in enumerate(pooled))


class BoxHead(nn.Module):
  """Pooled RoI features [..., S, S, C] -> (class logits [..., C + 1], codes [..., C + 1, 4]).

  Two FC layers of `hidden` units with ReLU (torchvision's TwoMLPHead), then the predictor; the
  predictor's initializers are normal(0.01) for logits and normal(0.001) for codes (Detectron).
  """

  num_classes: int
  hidden: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pooled: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
    lead = pooled.shape[:-3]
    x = pooled.reshape(lead + (-1,)).astype(self.dtype)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc6")(x))
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc7")(x))
    logits = nn.Dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                      name="cls_score")(x)
    codes = nn.Dense(4 * (self.num_classes + 1), kernel_init=nn.initializers.normal(0.001),
                     dtype=self.dtype, name="bbox_pred")(x)
    return logits.astype(jnp.float32), codes.astype(jnp.float32).reshape(lead + (self.num_classes + 1, 4))


def box_head_losses(logits: jax.Array, codes: jax.Array, targets: Dict[str, jax.Array]
                    ) -> Dict[str, jax.Array]:
  """{'roi_classifier', 'roi_box'} from logits [N, R, C + 1], codes [N, R, C + 1, 4] and the
  stacked `sample_rois` targets, normalized by the number of sampled RoIs in the batch."""
  labels, weight = targets["labels"], targets["weight"]
  num_sampled = jnp.maximum(weight.sum(), 1.0)
  log_probs = jax.nn.log_softmax(logits)
  ce = -jnp.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  own = jnp.take_along_axis(codes, labels[..., None, None], -2)[..., 0, :]
  box = smooth_l1(own - targets["codes"], 1.0 / 9).sum(-1)
  return {"roi_classifier": jnp.sum(ce * weight) / num_sampled,
          "roi_box": jnp.sum(jnp.where(labels > 0, box, 0.0)) / num_sampled}


def detections(logits: jax.Array, codes: jax.Array, proposals: jax.Array, proposal_valid: jax.Array,
               image_hw: Tuple[int, int], score_threshold: float = 0.05, nms_threshold: float = 0.5,
               max_detections: int = 100, max_candidates: int = 4096) -> Dict[str, jax.Array]:
  """One image's detections: 'boxes' [D, 4], 'scores' [D], 'labels' int32 [D] (1..C), 'valid'
  bool [D], best first (D = max_detections).

  logits [P, C + 1], codes [P, C + 1, 4] for proposals [P, 4]. Class-wise NMS runs on the
  `max_candidates` best (proposal, class) pairs above the score threshold; it stops after D kept
  boxes, so the result equals torchvision's unless more than max_candidates pairs are needed
  to find D survivors."""
  num_classes = logits.shape[-1] - 1
  scores = jax.nn.softmax(logits)[:, 1:].reshape(-1)
  boxes = box_coder.decode_boxes(codes[:, 1:], proposals[:, None], box_coder.ROI_HEAD_WEIGHTS)
  boxes = box_ops.clip_boxes(boxes, image_hw).reshape(-1, 4)
  labels = jnp.tile(jnp.arange(1, num_classes + 1, dtype=jnp.int32), proposals.shape[0])
  valid = (jnp.repeat(proposal_valid, num_classes) & (scores > score_threshold)
           & box_ops.min_size_mask(boxes, 1e-2))
  k = min(max_candidates, scores.shape[0])
  top_scores, top = jax.lax.top_k(jnp.where(valid, scores, -1.0), k)
  boxes, labels, valid = boxes[top], labels[top], valid[top]
  keep, keep_valid = batched_nms(boxes, top_scores, labels, nms_threshold, min(max_detections, k), valid)
  return {"boxes": jnp.where(keep_valid[:, None], boxes[keep], 0.0),
          "scores": jnp.where(keep_valid, top_scores[keep], 0.0),
          "labels": jnp.where(keep_valid, labels[keep], 0), "valid": keep_valid}
