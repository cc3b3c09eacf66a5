"""Confusion-matrix pictures: the whole matrix with class names, or for many classes the most
confused pairs as a table."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from research.viz.figures import new_figure, to_array

MAX_MATRIX_CLASSES = 30


def most_confused(confusion: np.ndarray, names: Sequence[str], k: int = 20) -> List[Dict[str, object]]:
  """The k largest off-diagonal cells of `confusion` [C, C] (rows true, columns predicted), largest
  first (ties: lower true class, then lower predicted class), as {'true', 'predicted', 'count',
  'fraction_of_true'} with class names."""
  confusion = np.asarray(confusion)
  off = confusion.astype(np.float64).copy()
  np.fill_diagonal(off, 0)
  flat = np.argsort(-off.ravel(), kind="stable")[:k]
  support = confusion.sum(axis=1)
  pairs = []
  for index in flat:
    t, p = divmod(int(index), confusion.shape[1])
    if off[t, p] <= 0:
      break
    pairs.append({"true": names[t], "predicted": names[p], "count": int(confusion[t, p]),
                  "fraction_of_true": float(confusion[t, p] / max(support[t], 1))})
  return pairs


def confusion_picture(confusion: np.ndarray, names: Sequence[str]) -> np.ndarray:
  """uint8 [H, W, 3]: for <= 30 classes the matrix (rows true, columns predicted; colour = fraction
  of the true class, counts written in the cells), else the 20 most confused pairs as a table."""
  confusion = np.asarray(confusion)
  n = confusion.shape[0]
  if n > MAX_MATRIX_CLASSES:
    pairs = most_confused(confusion, names, 20)
    fig = new_figure((7, 0.6 + 0.3 * max(len(pairs), 1)))
    ax = fig.add_subplot(1, 1, 1)
    ax.axis("off")
    rows = [[p["true"], p["predicted"], str(p["count"]), f"{p['fraction_of_true']:.1%}"] for p in pairs]
    ax.set_title(f"{n} classes: the {len(pairs)} most confused pairs")
    if rows:
      ax.table(cellText=rows, colLabels=["true", "predicted", "count", "of true class"], loc="upper center")
    return to_array(fig)
  side = min(12.0, 2.5 + 0.45 * n)
  fig = new_figure((side, side))
  ax = fig.add_subplot(1, 1, 1)
  rate = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
  ax.set_xticks(range(n), labels=list(names), rotation=90 if n > 8 else 0, fontsize=8)
  ax.set_yticks(range(n), labels=list(names), fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if n <= 20:
    for t in range(n):
      for p in range(n):
        ax.text(p, t, str(int(confusion[t, p])), ha="center", va="center", fontsize=7,
                color="white" if rate[t, p] > 0.5 else "black")
  return to_array(fig)
