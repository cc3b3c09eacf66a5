"""IoU matching of anchors/proposals to ground truth, and balanced fg/bg sampling.

Static-shape versions of torchvision.models.detection._utils.Matcher and
BalancedPositiveNegativeSampler. Ground truth comes padded to a fixed M with a validity mask;
an image with no valid ground truth matches every prediction as background.
"""
from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match(quality: jax.Array, high_threshold: float, low_threshold: float,
          allow_low_quality_matches: bool,
          gt_valid: Optional[jax.Array] = None) -> jax.Array:
  """Matched ground-truth index per prediction, int32 [N].

  quality: [M, N] match quality (box IoU of M ground-truth boxes and N predicted boxes, both
  [x1, y1, x2, y2] pixels); gt_valid: optional bool [M], False for padding rows.
  Each prediction takes its best ground truth (first on ties); it keeps the index if that
  quality is >= high_threshold, else gets BELOW_LOW_THRESHOLD (-1) below low_threshold or
  BETWEEN_THRESHOLDS (-2) in between. With allow_low_quality_matches, every prediction that
  attains some valid ground truth's highest quality (ties included) keeps its best index even
  below the thresholds -- torchvision's rule, including its quirk that a ground truth
  overlapping nothing (best quality 0) re-matches every prediction it has quality 0 with.
  Equals torchvision's Matcher(high, low, allow_low_quality_matches)(quality[valid rows]).
  """
  if gt_valid is not None:
    quality = jnp.where(gt_valid[:, None], quality, -1.0)
  matched_vals = jnp.max(quality, axis=0)
  all_matches = jnp.argmax(quality, axis=0).astype(jnp.int32)
  matches = jnp.where(matched_vals < low_threshold, BELOW_LOW_THRESHOLD,
                      jnp.where(matched_vals < high_threshold, BETWEEN_THRESHOLDS, all_matches))
  if allow_low_quality_matches:
    best_per_gt = jnp.max(quality, axis=1, keepdims=True)
    is_best = quality == best_per_gt
    if gt_valid is not None:
      is_best &= gt_valid[:, None]
    matches = jnp.where(jnp.any(is_best, axis=0), all_matches, matches)
  return matches


def sample_balanced(key: jax.Array, labels: jax.Array, batch_size_per_image: int,
                    positive_fraction: float) -> Tuple[jax.Array, jax.Array]:
  """Bool masks [N] (positive, negative) of a random balanced sample, as torchvision's sampler.

  labels: int [N], >= 1 positive, 0 negative, < 0 ignored (padding included). Picks
  min(#positives, int(batch_size_per_image * positive_fraction)) positives and
  min(#negatives, batch_size_per_image - #picked positives) negatives uniformly at random
  without replacement; `batch_size_per_image` and `positive_fraction` are static.
  """
  max_pos = int(batch_size_per_image * positive_fraction)
  positive = labels >= 1
  negative = labels == 0
  num_pos = jnp.minimum(jnp.sum(positive), max_pos)
  num_neg = jnp.minimum(jnp.sum(negative), batch_size_per_image - num_pos)
  pos_key, neg_key = jax.random.split(key)

  def pick(key: jax.Array, candidates: jax.Array, k: int, count: jax.Array) -> jax.Array:
    priority = jnp.where(candidates, jax.random.uniform(key, labels.shape), -1.0)
    _, chosen = jax.lax.top_k(priority, min(k, labels.shape[0]))
    take = jnp.arange(chosen.shape[0]) < count
    return jnp.zeros(labels.shape, bool).at[chosen].max(take)

  return (pick(pos_key, positive, max_pos, num_pos),
          pick(neg_key, negative, batch_size_per_image, num_neg))
