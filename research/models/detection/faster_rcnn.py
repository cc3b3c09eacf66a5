"""Faster R-CNN (Ren et al. 2015), optionally with an FPN (Lin et al. 2017), in static shapes.

images [N, H, W, 3] (normalized, padded to one size) -> in training a dict of the four losses
('rpn_objectness', 'rpn_box', 'roi_classifier', 'roi_box'); in evaluation detections
{'boxes' [N, D, 4], 'scores' [N, D], 'labels' int32 [N, D] (1..num_classes), 'valid' bool
[N, D]}. Boxes are [x1, y1, x2, y2] in pixels of the padded input. Training needs `targets`
{'boxes' [N, M, 4] (same convention), 'labels' int32 [N, M] (1..num_classes), 'valid' bool
[N, M]} and an rng stream 'sampling' (anchor and RoI sampling). Images without objects train
as pure background.

Defaults are torchvision's fasterrcnn_resnet50_fpn; the pieces are in rpn.py, roi_heads.py and
fpn.py. Without `fpn`, the backbone's one level (e.g. VGG-16 conv5 at stride 16, as in the
paper) feeds both the RPN and RoIAlign. With `frozen_backbone_bn` the backbone's BatchNorm uses
its (pretrained) running statistics in training too, as torchvision's FrozenBatchNorm2d; freeze
its scales and offsets, and early stages, with config.optimizer.freeze.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models.detection import roi_heads, rpn
from research.models.detection.fpn import FPN
from research.models.segmentation.encoder import build_backbone
from research.ops.anchors import multilevel_anchors


class DetectionHead(nn.Module):
  """Everything after the backbone: (FPN,) RPN, proposals, RoIAlign box head, losses, detections.

  Called on a backbone's feature dict and the padded image size (H, W); outputs as FasterRCNN's.
  A multi-task model shares its backbone with other heads through this module.
  `num_classes` counts object classes (background excluded).
  """

  num_classes: int
  feature_levels: Sequence[str] = ("c2", "c3", "c4", "c5")
  fpn: bool = True
  fpn_channels: int = 256
  anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,))
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  rpn_pre_nms_top_n_train: int = 2000
  rpn_post_nms_top_n_train: int = 2000
  rpn_pre_nms_top_n_test: int = 1000
  rpn_post_nms_top_n_test: int = 1000
  rpn_nms_threshold: float = 0.7
  rpn_fg_iou: float = 0.7
  rpn_bg_iou: float = 0.3
  rpn_batch_size_per_image: int = 256
  rpn_positive_fraction: float = 0.5
  box_batch_size_per_image: int = 512
  box_positive_fraction: float = 0.25
  box_fg_iou: float = 0.5
  box_bg_iou: float = 0.5
  roi_output_size: int = 7
  roi_sampling_ratio: int = 2
  canonical_scale: float = 224.0
  canonical_level: int = 4
  box_head_hidden: int = 1024
  box_score_threshold: float = 0.05
  box_nms_threshold: float = 0.5
  detections_per_image: int = 100
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Dict[str, jnp.ndarray], image_hw: Tuple[int, int], train: bool = False,
               targets: Optional[Dict[str, jnp.ndarray]] = None) -> Dict[str, jnp.ndarray]:
    maps = [features[k] for k in self.feature_levels]
    if self.fpn:
      maps = FPN(self.fpn_channels, extra_pool=len(self.anchor_sizes) > len(maps), dtype=self.dtype,
                 name="fpn")(maps)
    if len(maps) != len(self.anchor_sizes):
      raise ValueError(f"{len(maps)} feature maps for the RPN but {len(self.anchor_sizes)} anchor "
                       f"size tuples (model.anchor_sizes); give one tuple per level")
    roi_maps = maps[:len(self.feature_levels)]
    strides = [image_hw[0] // m.shape[1] for m in roi_maps]
    feature_sizes = [(m.shape[1], m.shape[2]) for m in maps]
    anchors = multilevel_anchors(image_hw, feature_sizes, self.anchor_sizes,
                                 [self.aspect_ratios] * len(maps))
    per_cell = len(self.aspect_ratios) * len(self.anchor_sizes[0])
    logits, codes = rpn.RPNHead(per_cell, dtype=self.dtype, name="rpn")(maps)
    select = functools.partial(
        rpn.select_proposals, anchors, [h * w * per_cell for h, w in feature_sizes],
        image_hw=image_hw,
        pre_nms_top_n=self.rpn_pre_nms_top_n_train if train else self.rpn_pre_nms_top_n_test,
        post_nms_top_n=self.rpn_post_nms_top_n_train if train else self.rpn_post_nms_top_n_test,
        nms_threshold=self.rpn_nms_threshold)
    proposals, proposal_valid = jax.vmap(select)(logits, codes)
    box_head = roi_heads.BoxHead(self.num_classes, self.box_head_hidden, dtype=self.dtype, name="box_head")
    pool = functools.partial(roi_heads.multilevel_roi_align, roi_maps, strides,
                             output_size=self.roi_output_size, sampling_ratio=self.roi_sampling_ratio,
                             canonical_scale=self.canonical_scale, canonical_level=self.canonical_level)
    if not train:
      cls_logits, box_codes = box_head(pool(proposals))
      detect = functools.partial(roi_heads.detections, image_hw=image_hw,
                                 score_threshold=self.box_score_threshold,
                                 nms_threshold=self.box_nms_threshold,
                                 max_detections=self.detections_per_image)
      return jax.vmap(detect)(cls_logits, box_codes, proposals, proposal_valid)
    if targets is None:
      raise ValueError("FasterRCNN in training needs targets {'boxes', 'labels', 'valid'}")
    n = logits.shape[0]
    rpn_keys, roi_keys = jnp.split(jax.random.split(self.make_rng("sampling"), 2 * n), 2)
    anchor_fn = functools.partial(rpn.anchor_targets, batch_size_per_image=self.rpn_batch_size_per_image,
                                  positive_fraction=self.rpn_positive_fraction, fg_iou=self.rpn_fg_iou,
                                  bg_iou=self.rpn_bg_iou)
    rpn_targets = jax.vmap(anchor_fn, in_axes=(None, 0, 0, 0))(
        jnp.asarray(anchors), targets["boxes"], targets["valid"], rpn_keys)
    losses = rpn.rpn_losses(logits, codes, rpn_targets)
    sample_fn = functools.partial(roi_heads.sample_rois, num_rois=self.box_batch_size_per_image,
                                  positive_fraction=self.box_positive_fraction, fg_iou=self.box_fg_iou,
                                  bg_iou=self.box_bg_iou)
    roi_targets = jax.vmap(sample_fn)(proposals, proposal_valid, targets["boxes"], targets["labels"],
                                      targets["valid"], roi_keys)
    cls_logits, box_codes = box_head(pool(roi_targets["boxes"]))
    losses.update(roi_heads.box_head_losses(cls_logits, box_codes, roi_targets))
    return losses


@MODELS.register("faster_rcnn")
class FasterRCNN(DetectionHead):
  """A registered backbone + DetectionHead; see the module docstring."""

  backbone: str = "resnet50"
  backbone_args: Optional[Dict[str, Any]] = None
  frozen_backbone_bn: bool = False   # Backbone BatchNorm in inference mode (torchvision's FrozenBN).

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False,
               targets: Optional[Dict[str, jnp.ndarray]] = None) -> Dict[str, jnp.ndarray]:
    features = build_backbone(self.backbone, self.dtype, name="backbone", **(self.backbone_args or {}))(
        images.astype(self.dtype), train=train and not self.frozen_backbone_bn)
    head_fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(DetectionHead)
                   if f.init and f.name not in ("parent", "name")}
    return DetectionHead(**head_fields, name="head")(features, (images.shape[1], images.shape[2]), train, targets)
