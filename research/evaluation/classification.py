"""Classification metrics: top-k correctness, confusion matrix, per-class precision and recall.

The per-class view is the point of the base-rate lesson: a classifier that is 99% accurate
overall can still be wrong on most examples of a rare class; recall per class and balanced
accuracy (mean recall) show it, overall accuracy hides it.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """[N] float: 1 where the label is among the k highest logits [N, C]."""
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     weights: Optional[jax.Array] = None) -> jax.Array:
  """[C, C] float32 counts: rows are true classes, columns predicted classes.

  labels, predictions: int [N]; weights: [N] (e.g. the padding mask), default 1.
  """
  if weights is None:
    weights = jnp.ones(labels.shape, jnp.float32)
  index = labels.astype(jnp.int32) * num_classes + predictions.astype(jnp.int32)
  flat = jnp.zeros((num_classes * num_classes,), jnp.float32).at[index].add(weights.astype(jnp.float32))
  return flat.reshape(num_classes, num_classes)


def per_class_report(confusion: np.ndarray) -> Dict[str, List[float] | float]:
  """Precision, recall and support per class from a confusion matrix (rows true, cols predicted).

  A class never predicted has precision 0; a class absent from the labels has recall 0 and is
  left out of balanced accuracy (mean recall over classes with support).
  """
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  predicted = confusion.sum(axis=0)
  support = confusion.sum(axis=1)
  precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
  recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
  present = support > 0
  return {
      "precision": precision.tolist(),
      "recall": recall.tolist(),
      "support": support.astype(np.int64).tolist(),
      "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
      "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
  }
