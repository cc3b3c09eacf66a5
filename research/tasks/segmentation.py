"""Semantic segmentation: per-pixel cross-entropy with an ignore label, confusion-matrix mIoU.

Batch layout: 'image' float [N, H, W, 3] (normalized), 'segmentation' int32 [N, H, W] class ids
(0 background; `ignore_label`, default 255, excluded from loss and metrics), and at evaluation
'mask' float32 [N] (1 for real examples, 0 for padding).
Models return logits [N, H, W, C] at input resolution, or {'logits': ..., 'aux': ...} with an
auxiliary head (weighted by `aux_loss_weight` in training).
mIoU follows the reference definition: a confusion matrix over pixels with 0 <= target < C,
IoU_c = diag / (row + col - diag), averaged over classes present (nonzero union).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from research.core.registry import TASKS
from research.data import preprocess
from research.evaluation import segmentation as seg_eval
from research.tasks.base import Batch, PyTree, Sums, Task
from research.viz.grid import image_grid, to_uint8
from research.viz.masks import colorize, overlay

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = 255) -> jax.Array:
  """Mean cross-entropy over pixels whose label is not `ignore_label` (as torch's ignore_index).

  logits [N, H, W, C], labels int [N, H, W]."""
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  return jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)


@TASKS.register("segmentation")
class SegmentationTask(Task):
  """Dense per-pixel classification."""

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.num_classes = 0          # 0: the dataset's object classes + 1 (background).
    c.image_size = 0           # 0: native size; else resize to image_size x image_size.
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    c.augment = ("flip",)
    c.ignore_label = 255
    c.aux_loss_weight = 0.4
    return c

  @property
  def num_classes(self) -> int:
    if self.cfg.num_classes:
      return int(self.cfg.num_classes)
    return int(self.dataset_info.features["objects"]["label"].num_classes) + 1

  def model_defaults(self) -> Dict[str, Any]:
    return {"num_classes": self.num_classes}

  def wrap_source(self, source: Any, split: str) -> Any:
    return preprocess.ValidatedSource(source, self.config.dataset.name)

  # --- host-side preprocessing ---
  def _finish(self, example: Dict[str, Any]) -> Dict[str, Any]:
    example = preprocess.normalize(example, self.cfg.mean, self.cfg.std)
    return {"image": example["image"], "segmentation": example["segmentation_mask"][..., 0].astype(np.int32)}

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    if self.cfg.image_size:
      example = preprocess.resize(example, int(self.cfg.image_size))
    if "flip" in self.cfg.augment:
      example = preprocess.random_hflip(example, rng)
    return self._finish(example)

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    if self.cfg.image_size:
      example = preprocess.resize(example, int(self.cfg.image_size))
    return self._finish(example)

  # --- device-side steps ---
  def loss_fn(self, params, model_state, batch: Batch, rng: jax.Array):
    out, new_state = self.apply_model(params, model_state, batch["image"], True, rng)
    logits = out["logits"] if isinstance(out, dict) else out
    labels = batch["segmentation"]
    loss = pixel_cross_entropy(logits, labels, self.cfg.ignore_label)
    valid = labels != self.cfg.ignore_label
    metrics = {"pixel_accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) * valid) / jnp.maximum(valid.sum(), 1)}
    if isinstance(out, dict) and "aux" in out:
      metrics["main_loss"] = loss
      loss = loss + self.cfg.aux_loss_weight * pixel_cross_entropy(out["aux"], labels, self.cfg.ignore_label)
    return loss, (metrics, new_state)

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    out, _ = self.apply_model(state.params, state.model_state, batch["image"], False)
    logits = out["logits"] if isinstance(out, dict) else out
    labels, example_mask = batch["segmentation"], batch["mask"]
    pred = jnp.argmax(logits, -1)
    confusion = seg_eval.pixel_confusion_matrix(labels, pred, self.num_classes, example_mask[:, None, None])
    count = example_mask.sum()
    per_image = jax.vmap(lambda l, y: pixel_cross_entropy(l[None], y[None], self.cfg.ignore_label))(logits, labels)
    loss_sum = jnp.sum(per_image * example_mask)
    return {"loss": (loss_sum, count), "confusion": (confusion, count)}, None

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    confusion = np.asarray(sums["confusion"][0], np.float64)
    report = seg_eval.iou_report(confusion)
    scalars = {"loss": float(sums["loss"][0]) / max(float(sums["loss"][1]), 1.0),
               "miou": report["miou"], "pixel_accuracy": report["pixel_accuracy"]}
    names = self._class_names()
    for c, iou in enumerate(report["iou"]):
      if iou is not None:
        scalars[f"iou/{names[c]}"] = iou
    return scalars, {"confusion_matrix": confusion.astype(np.int64).tolist(), **report}

  def _class_names(self) -> List[str]:
    try:
      names = ["background"] + list(self.dataset_info.features["objects"]["label"].names)
    except (KeyError, TypeError, AttributeError):
      names = []
    return names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

  def predict(self, state, batch: Batch) -> jax.Array:
    out, _ = self.apply_model(state.params, state.model_state, batch["image"], False)
    return jnp.argmax(out["logits"] if isinstance(out, dict) else out, -1)

  def visualize(self, batch: Dict[str, np.ndarray], predictions: np.ndarray) -> Dict[str, np.ndarray]:
    """Rows of (image, ground truth, prediction overlay) for the first 8 examples."""
    n = min(8, len(predictions))
    images = to_uint8(batch["image"][:n], self.cfg.mean, self.cfg.std)
    tiles = []
    for i in range(n):
      tiles += [images[i], colorize(batch["segmentation"][i], self.num_classes, self.cfg.ignore_label),
                overlay(images[i], predictions[i], self.num_classes)]
    captions = ["image", "truth", "predicted"] * n
    return {"masks": image_grid(np.stack(tiles), captions, columns=6, scale=2)}
