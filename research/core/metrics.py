"""Metric logging: TensorBoard event files (tensorboardX, no TensorFlow) and WORKDIR/metrics.jsonl.

metrics.jsonl holds one JSON object per log event, {"step": N, "<split>/<metric>": value, ...}.
Only process 0 writes. When a run resumes from a checkpoint at step S, events the interrupted run
wrote after S are dropped from both files, so the history reads as one uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np


def import_tensorboardx() -> Any:
  """The tensorboardX module, imported without PyTorch: tensorboardX imports torch at import time
  when it is installed (2.4-2.8 s of a run's start-up, measured) only to accept torch tensors,
  and we pass numpy arrays. A torch already imported by the caller is left alone."""
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules["torch"] = None  # `import torch` raises ImportError while tensorboardX loads.
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    import tensorboardX.summary  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return tensorboardX


def _truncate_jsonl(path: str, keep_up_to_step: int) -> None:
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [line for line in f if line.strip()]
  kept = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= keep_up_to_step:
        kept.append(line)
    except (ValueError, KeyError):
      continue  # A line cut short by a kill: drop it.
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)


class MetricWriter:
  """Writes scalars (images, histograms, text) at a step to TensorBoard and metrics.jsonl."""

  def __init__(self, workdir: str, start_step: int = 0):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      _truncate_jsonl(self.path, start_step)
      self._tb = import_tensorboardx().SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in values.items():
      self._tb.add_scalar(k, v, step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """images: name -> uint8 [H, W, C] array."""
    if not self.enabled:
      return
    for k, v in images.items():
      self._tb.add_image(k, np.asarray(v), step, dataformats="HWC")

  def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
    if not self.enabled:
      return
    for k, v in arrays.items():
      self._tb.add_histogram(k, np.asarray(v), step)

  def write_text(self, step: int, texts: Mapping[str, str]) -> None:
    """texts: name -> Markdown (TensorBoard's Text tab)."""
    if not self.enabled:
      return
    for k, v in texts.items():
      self._tb.add_text(k, v, step)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(workdir: str) -> list[Dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl, in order ([] without the file; a line cut short by a
  killed process is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        continue
  return records


def eval_records(workdir: str) -> list[Dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl that hold eval/* metrics, in order."""
  return [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]


class TrainSums:
  """The train metrics' running sums between two log steps, as the jitted step keeps them:
  (sums [K], counts [K]) float32, metric k of `names` at index k. Two arrays, so the step adds
  all K metrics in two operations: a (sum, count) pair of scalars per metric compiled 2K scalar
  additions, each a kernel of its own (LeNet-5's step with its 20 metrics: 135 -> 119 operations
  after optimization). Checkpoints hold the per-metric form {name: (sum, count)}
  (`to_tree` / `from_tree`), as before."""

  def __init__(self, names):
    self.names = tuple(names)

  def zeros(self) -> tuple:
    return np.zeros(len(self.names), np.float32), np.zeros(len(self.names), np.float32)

  def add(self, sums: tuple, metrics: Mapping[str, Any]) -> tuple:
    """Traced: the sums and counts after one step's metrics {name: float scalar}."""
    total, counts = sums
    return total + jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in self.names]), counts + 1.0

  def means(self, fetched: tuple) -> Dict[str, float]:
    """{name: sum / count} (0 for a metric not seen yet) from host copies of the two arrays."""
    total, counts = fetched
    return {k: float(total[i]) / max(float(counts[i]), 1.0) for i, k in enumerate(self.names)}

  def to_tree(self, fetched: tuple) -> Dict[str, tuple]:
    """{name: (sum, count)} numpy float32 scalars, the checkpoint's form."""
    total, counts = (np.asarray(a, np.float32) for a in fetched)
    return {k: (total[i], counts[i]) for i, k in enumerate(self.names)}

  def from_tree(self, tree: Mapping[str, tuple]) -> tuple:
    """(sums, counts) numpy from the checkpoint's {name: (sum, count)}."""
    return (np.asarray([np.asarray(tree[k][0]) for k in self.names], np.float32),
            np.asarray([np.asarray(tree[k][1]) for k in self.names], np.float32))
