"""Semantic segmentation: per-pixel cross-entropy with an ignore label, confusion-matrix mIoU.

Batch layout: 'image' float [N, H, W, 3] (normalized), 'segmentation' int32 [N, H, W] class ids
(0 background; `ignore_label`, default 255, excluded from loss and metrics), and at evaluation
'mask' float32 [N] (1 for real examples, 0 for padding).
Images of different sizes (VOC) batch through `crop_size` S: training takes a random S x S crop
(after the optional random rescale), evaluation pads each whole image to S x S; padding is the
mean colour (0 once normalized) with `ignore_label`, so it counts in neither loss nor mIoU.
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

from research.core.config import ConfigError
from research.core.registry import TASKS
from research.data import preprocess
from research.evaluation import segmentation as seg_eval
from research.tasks.base import Batch, PyTree, Sums, Task, weighted_mean
from research.viz.grid import image_grid, to_uint8
from research.viz.masks import colorize, overlay

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_cross_entropies(logits: jax.Array, labels: jax.Array, ignore_label: int = 255
                          ) -> Tuple[jax.Array, jax.Array]:
  """(cross-entropy per pixel [N, H, W], valid [N, H, W]: the label is not `ignore_label`).

  logits [N, H, W, C], labels int [N, H, W]; an ignored pixel's cross-entropy is against class 0."""
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0)
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe), valid


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = 255) -> jax.Array:
  """Mean cross-entropy over pixels whose label is not `ignore_label` (as torch's ignore_index).

  logits [N, H, W, C], labels int [N, H, W]."""
  ce, valid = pixel_cross_entropies(logits, labels, ignore_label)
  return weighted_mean(ce, valid)


def random_rescale(example: Dict[str, Any], rng: np.random.Generator,
                   scale_range: Tuple[float, float]) -> Dict[str, Any]:
  """Rescales the uint8 image (bilinear) and segmentation_mask (nearest) by one factor drawn
  uniformly from scale_range = (low, high)."""
  factor = rng.uniform(*scale_range)
  h, w = example["image"].shape[:2]
  return preprocess.resize(example, (max(1, round(h * factor)), max(1, round(w * factor))))


def random_crop(example: Dict[str, Any], size: int, rng: np.random.Generator) -> Dict[str, Any]:
  """The size x size window (or the whole side, where the image is smaller) of image and
  segmentation_mask at a uniformly random offset."""
  h, w = example["image"].shape[:2]
  y, x = int(rng.integers(max(h - size, 0) + 1)), int(rng.integers(max(w - size, 0) + 1))
  return dict(example, image=example["image"][y:y + size, x:x + size],
              segmentation_mask=example["segmentation_mask"][y:y + size, x:x + size])


def fit_within(example: Dict[str, Any], size: int) -> Dict[str, Any]:
  """An example larger than size x size shrunk to fit, keeping its aspect ratio (image bilinear,
  mask nearest); smaller ones unchanged."""
  h, w = example["image"].shape[:2]
  if max(h, w) <= size:
    return example
  scale = size / max(h, w)
  return preprocess.resize(example, (min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))))


def pad_to(image: np.ndarray, labels: np.ndarray, size: int, ignore_label: int) -> Tuple[np.ndarray, np.ndarray]:
  """Pads a normalized image [h, w, C] with zeros (the mean colour) and labels [h, w] with
  ignore_label, at the bottom and right, to [size, size, C] and [size, size] (h, w <= size)."""
  ph, pw = size - labels.shape[0], size - labels.shape[1]
  if ph or pw:
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=ignore_label)
  return image, labels


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
    c.augment = ("flip",)      # 'flip' (horizontal), 'scale' (rescale by a factor in scale_range).
    c.scale_range = (0.5, 2.0)
    c.crop_size = 0            # 0: whole images (of one size, or set image_size); see the docstring.
    c.ignore_label = 255
    c.aux_loss_weight = 0.4
    return c

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    super().__init__(config, dataset_info)
    unknown = set(self.cfg.augment) - {"flip", "scale"}
    if unknown:
      raise ConfigError(f"config.task.augment: unknown augmentation(s) {sorted(unknown)}; known: flip, scale")
    if "scale" in self.cfg.augment and not self.cfg.crop_size:
      raise ConfigError("config.task.augment 'scale' makes images of random sizes: set config.task.crop_size")

  @property
  def num_classes(self) -> int:
    if self.cfg.num_classes:
      return int(self.cfg.num_classes)
    names = self._dataset_class_names()
    if not names:
      raise ConfigError(f"dataset {self.config.dataset.name!r} names no classes: set config.task.num_classes")
    return len(names)

  def _dataset_class_names(self) -> List[str]:
    """'background' then the object classes, as the dataset names them: its objects/label feature
    (shapes, coco, voc), else its metadata['class_names'] (voc2012_segmentation); [] if neither."""
    try:
      return ["background"] + list(self.dataset_info.features["objects"]["label"].names)
    except (KeyError, TypeError, AttributeError):
      metadata = getattr(self.dataset_info, "metadata", None) or {}
      return list(metadata.get("class_names", ()))

  def model_defaults(self) -> Dict[str, Any]:
    return {"num_classes": self.num_classes}

  def wrap_source(self, source: Any, split: str) -> Any:
    return preprocess.ValidatedSource(source, self.config.dataset.name)

  # --- host-side preprocessing ---
  def _finish(self, example: Dict[str, Any]) -> Dict[str, Any]:
    """-> image float32 [H, W, 3] normalized, segmentation int32 [H, W]; padded to crop_size."""
    example = preprocess.normalize(example, self.cfg.mean, self.cfg.std)
    image, labels = example["image"], example["segmentation_mask"][..., 0].astype(np.int32)
    if self.cfg.crop_size:
      image, labels = pad_to(image, labels, int(self.cfg.crop_size), int(self.cfg.ignore_label))
    return {"image": image, "segmentation": labels}

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    if self.cfg.image_size:
      example = preprocess.resize(example, int(self.cfg.image_size))
    if "scale" in self.cfg.augment:
      example = random_rescale(example, rng, tuple(self.cfg.scale_range))
    if self.cfg.crop_size:
      example = random_crop(example, int(self.cfg.crop_size), rng)
    if "flip" in self.cfg.augment:
      example = preprocess.random_hflip(example, rng)
    return self._finish(example)

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    if self.cfg.image_size:
      example = preprocess.resize(example, int(self.cfg.image_size))
    if self.cfg.crop_size:
      example = fit_within(example, int(self.cfg.crop_size))
    return self._finish(example)

  # --- device-side steps ---
  def loss(self, outputs: Any, batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Cross-entropy per pixel against batch['segmentation'] int [N, H, W], over the pixels not
    labeled ignore_label; outputs: logits [N, H, W, C], or {'logits', 'aux'} with an auxiliary
    head's logits, whose loss adds aux_loss_weight times its own (metric 'main_loss' without it).
    Metric: 'pixel_accuracy'."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    labels = batch["segmentation"]
    ce, valid = pixel_cross_entropies(logits, labels, self.cfg.ignore_label)
    weights = valid * example_weights[:, None, None]
    loss = weighted_mean(ce, weights)
    metrics = {"pixel_accuracy": weighted_mean(jnp.argmax(logits, -1) == labels, weights)}
    if isinstance(outputs, dict) and "aux" in outputs:
      metrics["main_loss"] = loss
      aux, _ = pixel_cross_entropies(outputs["aux"], labels, self.cfg.ignore_label)
      loss = loss + self.cfg.aux_loss_weight * weighted_mean(aux, weights)
    return loss, metrics

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
    names = self._dataset_class_names()
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
