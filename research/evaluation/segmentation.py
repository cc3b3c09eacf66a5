"""Segmentation scores from a pixel confusion matrix:
pixels with 0 <= target < C are counted (255 and other out-of-range labels ignored);
IoU_c = diag / (row + col - diag); mIoU averages IoU over classes whose union is nonzero."""
from __future__ import annotations

from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from research.evaluation.classification import confusion_matrix


def pixel_confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                           weights: Optional[jax.Array] = None) -> jax.Array:
  """[C, C] float32 counts (rows true, columns predicted) over pixels with 0 <= label < C.

  labels, predictions: int [...] (any shape, e.g. [N, H, W]); weights: broadcastable to labels
  (e.g. the per-example padding mask [N, 1, 1]), default 1.
  """
  valid = (labels >= 0) & (labels < num_classes)
  w = valid.astype(jnp.float32)
  if weights is not None:
    w = w * jnp.broadcast_to(weights, labels.shape).astype(jnp.float32)
  return confusion_matrix(jnp.where(valid, labels, 0).reshape(-1), predictions.reshape(-1),
                          num_classes, w.reshape(-1))


def iou_report(confusion: np.ndarray) -> Dict[str, float | List[Optional[float]]]:
  """{'miou', 'pixel_accuracy', 'iou': per class (None where the union is empty)}."""
  confusion = np.asarray(confusion, np.float64)
  diag = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - diag
  present = union > 0
  iou = np.where(present, diag / np.maximum(union, 1e-12), np.nan)
  total = confusion.sum()
  return {
      "miou": float(np.nanmean(iou)) if present.any() else 0.0,
      "pixel_accuracy": float(diag.sum() / total) if total else 0.0,
      "iou": [float(v) if p else None for v, p in zip(iou, present)],
  }
