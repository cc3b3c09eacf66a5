"""Object detection (Faster R-CNN): four-part loss, COCO mAP through pycocotools, VOC07 AP.

Batch layout (fixed shapes, M = task.max_objects): 'image' float [N, S, S, 3] (normalized; all
images of a split share a size: the native one, or resized keeping the aspect ratio and padded
at the bottom/right to image_size), 'boxes' float [N, M, 4] in [x1, y1, x2, y2] pixels of that
padded image, 'labels' int32 [N, M] (1..C; 0 is background), 'box_valid' bool [N, M] (real,
non-crowd boxes: the training targets), 'crowd' bool [N, M] (COCO iscrowd / VOC difficult:
ignored by evaluation, neither matched nor missed), 'area' float [N, M] (annotation area in
original pixels, for COCO's size ranges), 'scale' float [N] (padded-input pixels per original
pixel), 'image_id' int32 [N], and at evaluation 'mask' float [N] (0 for padding rows).
Evaluation maps detections and ground truth back to original pixels before scoring.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from research.core.registry import TASKS
from research.data import preprocess
from research.evaluation import detection as det_eval
from research.tasks.base import Batch, PyTree, Sums, Task, weighted_mean
from research.tasks.segmentation import IMAGENET_MEAN, IMAGENET_STD
from research.viz.boxes import draw_boxes
from research.viz.grid import image_grid, to_uint8

LOSS_NAMES = ("rpn_objectness", "rpn_box", "roi_classifier", "roi_box")


@TASKS.register("detection")
class DetectionTask(Task):
  """Two-stage detection with a model that follows research.models.detection's interface."""

  @classmethod
  def required_packages(cls, task_config: ConfigDict) -> Dict[str, str]:
    return {"pycocotools": "pycocotools>=2.0.8"} if task_config.get("evaluation", "coco") == "coco" else {}

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.num_classes = 0          # Object classes (background excluded); 0: from the dataset.
    c.image_size = 0           # 0: native size (one size per dataset); else longer side resized to
                               # image_size, aspect kept, padded to image_size x image_size.
    c.max_objects = 16         # Boxes per image kept (static shape).
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    c.augment = ("flip",)
    c.loss_weights = ConfigDict({name: 1.0 for name in LOSS_NAMES})
    c.evaluation = "coco"      # 'coco' (pycocotools mAP@[.5:.95], AP50, AP75, ...) or 'voc07'.
    c.draw_score_threshold = 0.5
    return c

  @property
  def num_classes(self) -> int:
    if self.cfg.num_classes:
      return int(self.cfg.num_classes)
    return int(self.dataset_info.features["objects"]["label"].num_classes)

  def class_names(self) -> List[str]:
    """Names indexed by label (0 = background)."""
    try:
      names = list(self.dataset_info.features["objects"]["label"].names)
    except (KeyError, TypeError, AttributeError):
      names = []
    if len(names) != self.num_classes:
      names = [str(i) for i in range(1, self.num_classes + 1)]
    return ["background"] + names

  def model_defaults(self) -> Dict[str, Any]:
    return {"num_classes": self.num_classes}

  def wrap_source(self, source: Any, split: str) -> Any:
    return preprocess.ValidatedSource(source, self.config.dataset.name)

  # --- host-side preprocessing ---
  def _prepare(self, example: Dict[str, Any], rng: Optional[np.random.Generator]) -> Dict[str, Any]:
    height, width = np.asarray(example["image"]).shape[:2]
    scale = 1.0
    if self.cfg.image_size:
      size = int(self.cfg.image_size)
      example = preprocess.resize(example, size, keep_aspect=True)
      scale = min(size / height, size / width)
    if rng is not None and "flip" in self.cfg.augment:
      example = preprocess.random_hflip(example, rng)
    example = preprocess.pad_objects(example, int(self.cfg.max_objects))
    image = example["image"]
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(image.shape[:2] + (1,)), 3, axis=-1)
    example = preprocess.normalize(dict(example, image=image), self.cfg.mean, self.cfg.std)
    objects = example["objects"]
    crowd = np.asarray(objects.get("is_crowd", np.zeros_like(objects["valid"])), bool)
    return {
        "image": example["image"],
        "boxes": preprocess.bbox_to_pixels(objects["bbox"], image.shape[0], image.shape[1]),
        "labels": (np.asarray(objects["label"]) + 1).astype(np.int32),
        "box_valid": objects["valid"] & ~crowd,
        "crowd": objects["valid"] & crowd,
        "area": np.asarray(objects["area"], np.float32),
        "scale": np.float32(scale),
        "image_id": np.int32(example["image/id"]),
    }

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    return self._prepare(example, rng)

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    return self._prepare(example, None)

  # --- device-side steps ---
  def train_outputs(self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
                    ) -> Tuple[Dict[str, jax.Array], PyTree]:
    targets = {"boxes": batch["boxes"], "labels": batch["labels"], "valid": batch["box_valid"]}
    return self.model.apply({"params": params, **model_state}, batch["image"], train=True,
                            targets=targets, rngs={"sampling": rng}, mutable=list(model_state.keys()))

  def loss(self, outputs: Dict[str, jax.Array], batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """sum_k loss_weights[k] * L_k over the four losses LOSS_NAMES of the model's training outputs.

    outputs[k]: per example [N] (the multi-task model's per-image head), averaged with the weights;
    or already reduced over the batch [] (FasterRCNN: sampled anchors and RoIs of the whole batch
    share one normalizer, as in torchvision), used as it is: the weights are then all 1.
    Metrics: the four losses."""
    parts = {name: outputs[name] if outputs[name].ndim == 0 else weighted_mean(outputs[name], example_weights)
             for name in LOSS_NAMES}
    weights = self.cfg.loss_weights
    return sum(float(weights[name]) * parts[name] for name in LOSS_NAMES), parts

  def predict(self, state, batch: Batch) -> Dict[str, jax.Array]:
    out, _ = self.apply_model(state.params, state.model_state, batch["image"], False)
    return out

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    detections = self.predict(state, batch)
    mask = batch["mask"]
    outputs = {**detections, **{f"gt_{k}": batch[k] for k in ("boxes", "labels", "box_valid", "crowd", "area")},
               "scale": batch["scale"], "image_id": batch["image_id"], "mask": mask}
    return {"images": (mask.sum(), mask.sum())}, outputs

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    out = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    keep = out["mask"] > 0
    out = {k: v[keep] for k, v in out.items()}
    inverse = 1.0 / out["scale"][:, None, None]
    pred_boxes, gt_boxes = out["boxes"] * inverse, out["gt_boxes"] * inverse
    gt_labels, gt_crowd = out["gt_labels"], out["gt_crowd"]
    gt_valid = out["gt_box_valid"] | gt_crowd
    if self.cfg.evaluation == "voc07":
      report = det_eval.voc07_detection_metrics(
          pred_boxes, out["scores"], out["labels"] - 1, out["valid"], gt_boxes, gt_labels - 1,
          gt_valid, self.num_classes, gt_difficult=gt_crowd)
      names = self.class_names()[1:]
      scalars = {"mAP": report["mAP"]}
      scalars.update({f"AP/{names[c]}": ap for c, ap in enumerate(report["AP"]) if not np.isnan(ap)})
      return scalars, {"voc07": report}
    if self.cfg.evaluation != "coco":
      raise ValueError(f"task.evaluation: unknown {self.cfg.evaluation!r}; known: coco, voc07")
    stats = det_eval.coco_detection_metrics(
        pred_boxes, out["scores"], out["labels"], out["valid"], gt_boxes, gt_labels, gt_valid,
        gt_crowd=gt_crowd, gt_areas=out["gt_area"])
    return dict(stats), {"coco_stats": stats, "num_images": int(keep.sum())}

  def visualize(self, batch: Dict[str, np.ndarray], predictions: Dict[str, np.ndarray]
                ) -> Dict[str, np.ndarray]:
    """Pairs of (ground truth, detections scoring >= draw_score_threshold) for 8 examples."""
    n = min(8, len(predictions["scores"]))
    images = to_uint8(batch["image"][:n], self.cfg.mean, self.cfg.std)
    names = self.class_names()
    scale = max(1, 256 // images.shape[1])
    tiles = []
    for i in range(n):
      gt = batch["box_valid"][i] | batch["crowd"][i]
      tiles.append(draw_boxes(images[i], batch["boxes"][i][gt], batch["labels"][i][gt], names, scale=scale))
      shown = predictions["valid"][i] & (predictions["scores"][i] >= self.cfg.draw_score_threshold)
      tiles.append(draw_boxes(images[i], predictions["boxes"][i][shown], predictions["labels"][i][shown],
                              names, predictions["scores"][i][shown], scale=scale))
    return {"detections": image_grid(np.stack(tiles), ["truth", "detected"] * n, columns=4)}
