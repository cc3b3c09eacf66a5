"""A multi-task model: one registered backbone, several heads on its features, one forward pass.

images [N, H, W, 3] (normalized, one size) -> a dict with one entry per head in `heads`:
  'classification'  logits float32 [N, C]: `ClassificationHead` (global average pool + dense).
  'detection'       Faster R-CNN's `DetectionHead` ((FPN,) RPN, RoIAlign box head), run per image:
                    in training the four losses per example {'rpn_objectness', 'rpn_box',
                    'roi_classifier', 'roi_box'}, each float32 [N] (normalized by the image's own
                    sampled anchors / RoIs, so a task can weight examples, e.g. drop those without
                    boxes); in evaluation detections {'boxes' [N, D, 4], 'scores', 'labels', 'valid'}
                    as FasterRCNN's. Needs targets['detection'] = {'boxes' [N, M, 4] (xyxy pixels),
                    'labels' int32 [N, M] (1..C), 'valid' bool [N, M]} and the rng stream 'sampling'
                    in training.
  'segmentation'    logits float32 [N, H, W, C] at input resolution: a decoder of
                    SEGMENTATION_DECODERS ('fcn8s', 'fcn16s', 'fcn32s': `FCNHead`; 'deeplabv3':
                    `DeepLabHead`).
  'captioning'      Show and Tell's `CaptionDecoder` on the deepest feature map, average pooled:
                    {'logits' float32 [..., L - 1, V] for targets['captioning'] tokens int32 [N, L]
                    or [N, K, L] (teacher forcing, logits[..., t] predicting tokens[..., t + 1]),
                    'features' [N, D] (the pooled features: `start` begins decoding from them)}.
  'log_variance'    float32 [T], T = len(heads), with `uncertainty_weighting`: the learned
                    log-variances s_t of Kendall et al. 2018, one per head in `heads` order.

Parameter paths: 'backbone/...' (as in FasterRCNN, FCN and DeepLabV3), and each head under its own
name: 'classification/fc', 'detection/{fpn,rpn,box_head}' (FasterRCNN's 'head/...'),
'segmentation/{score_c5,up_c4,...}' or 'segmentation/{aspp,head,logits}' (FCN's and DeepLabV3's
top level), 'captioning/{image_embed,word_embed,lstm,word_logits}' (ShowAndTell's top level), so
`config.init_from.rename` maps a single-task run onto this model and back (RENAME_INTO_JOINT,
RENAME_FROM_JOINT).

`heads`, `num_classes`, `vocab_size` and `uncertainty_weighting` are filled in by the multi-task
task; each head's own settings are a dict of its module's fields (`classification`, `detection`,
`segmentation` (+ 'decoder'), `captioning`).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.core.registry import MODELS
from research.models import cpu_dispatch
from research.models.captioning.lstm import Carry
from research.models.captioning.show_tell import CaptionDecoder
from research.models.detection.faster_rcnn import DetectionHead
from research.models.segmentation.deeplab import DeepLabHead
from research.models.segmentation.encoder import build_backbone, deepest_stage
from research.models.segmentation.fcn import FCNHead

HEADS = ("classification", "detection", "segmentation", "captioning")

# config.init_from.rename presets ((regex, replacement), ... over '/'-joined variable paths):
# a single-task run loaded into this model (its backbone and the head), and this model loaded into
# a single-task model, by the single-task model's registered name.
_FCN_INTO = ((r"^params/((score|up)_c\d)/", r"params/segmentation/\1/"),)
_FCN_FROM = ((r"^params/segmentation/", "params/"),)
RENAME_INTO_JOINT = {
    "faster_rcnn": ((r"^(params|batch_stats)/head/", r"\1/detection/"),),
    "fcn8s": _FCN_INTO, "fcn16s": _FCN_INTO, "fcn32s": _FCN_INTO,
    "deeplabv3": ((r"^(params|batch_stats)/(aspp|head|logits)/", r"\1/segmentation/\2/"),),
    "show_tell": ((r"^(params|batch_stats)/(image_embed|word_embed|lstm|word_logits)/", r"\1/captioning/\2/"),
                  (r"^(params|batch_stats)/(?!captioning/)", r"\1/backbone/")),
}
RENAME_FROM_JOINT = {
    "faster_rcnn": ((r"^(params|batch_stats)/detection/", r"\1/head/"),),
    "fcn8s": _FCN_FROM, "fcn16s": _FCN_FROM, "fcn32s": _FCN_FROM,
    "deeplabv3": ((r"^(params|batch_stats)/segmentation/", r"\1/"),),
    "show_tell": ((r"^(params|batch_stats)/(backbone|captioning)/", r"\1/"),),
}

SEGMENTATION_DECODERS = {
    "fcn8s": functools.partial(FCNHead, variant="8s"),
    "fcn16s": functools.partial(FCNHead, variant="16s"),
    "fcn32s": functools.partial(FCNHead, variant="32s"),
    "deeplabv3": DeepLabHead,
}


def pooled(features: Dict[str, jax.Array], key: str = "") -> jax.Array:
  """[N, C] float32: the feature map `key` ('' = the deepest, e.g. 'c5') averaged over space."""
  return features[key or deepest_stage(features)].astype(jnp.float32).mean(axis=(1, 2))


class ClassificationHead(nn.Module):
  """Backbone features -> logits float32 [N, num_classes]: `pooled(features, feature)`, dropout,
  one dense layer ('fc')."""

  num_classes: int
  feature: str = ""
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Dict[str, jax.Array], train: bool = False) -> jax.Array:
    x = nn.Dropout(self.dropout, deterministic=not train)(pooled(features, self.feature))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x).astype(jnp.float32)


@MODELS.register("multitask")
class MultiTaskModel(nn.Module):
  """images [N, H, W, 3] (+ targets) -> {head: output}; see the module docstring."""

  heads: Optional[Sequence[str]] = None
  num_classes: Optional[Dict[str, int]] = None   # 'classification', 'detection', 'segmentation'.
  vocab_size: Optional[int] = None
  uncertainty_weighting: Optional[bool] = None
  backbone: str = "small_cnn"
  backbone_args: Optional[Dict[str, Any]] = None
  frozen_backbone_bn: bool = False  # Backbone BatchNorm in inference mode (as FasterRCNN's).
  classification: Optional[Dict[str, Any]] = None
  detection: Optional[Dict[str, Any]] = None
  segmentation: Optional[Dict[str, Any]] = None  # 'decoder' (SEGMENTATION_DECODERS) + its fields.
  captioning: Optional[Dict[str, Any]] = None
  dtype: Any = jnp.float32

  def setup(self):
    heads = tuple(self.heads or ())
    unknown = set(heads) - set(HEADS)
    if not heads or unknown:
      raise ValueError(f"multitask model: heads {heads} must be a non-empty subset of {HEADS}")
    num_classes = dict(self.num_classes or {})
    self.encoder = build_backbone(self.backbone, self.dtype, name="backbone", **(self.backbone_args or {}))
    if "classification" in heads:
      self.classification_head = ClassificationHead(
          num_classes["classification"], dtype=self.dtype, name="classification", **(self.classification or {}))
    if "detection" in heads:
      # Per image (vmapped over the batch, parameters shared), so each example has its own losses.
      # Intermediates (research-inspect's activations) get the vmapped axis: [N, 1, ...].
      per_image = nn.vmap(DetectionHead, variable_axes={"params": None, "intermediates": 0},
                          split_rngs={"params": False, "sampling": True}, in_axes=(0, None, None, 0))
      self.detection_head = per_image(num_classes=num_classes["detection"], dtype=self.dtype, name="detection",
                                      **(self.detection or {}))
    if "segmentation" in heads:
      settings = dict(self.segmentation or {})
      decoder = settings.pop("decoder", "fcn8s")
      if decoder not in SEGMENTATION_DECODERS:
        raise ValueError(f"model.segmentation.decoder: unknown {decoder!r}; known: {', '.join(SEGMENTATION_DECODERS)}")
      self.segmentation_head = SEGMENTATION_DECODERS[decoder](
          num_classes=num_classes["segmentation"], dtype=self.dtype, name="segmentation", **settings)
    if "captioning" in heads:
      self.captioning_head = CaptionDecoder(vocab_size=self.vocab_size, dtype=self.dtype, name="captioning",
                                            **(self.captioning or {}))
    if self.uncertainty_weighting:
      self.log_variance = self.param("log_variance", nn.initializers.zeros, (len(heads),), jnp.float32)

  def __call__(self, images: jax.Array, train: bool = False,
               targets: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    targets = targets or {}
    features = self.encoder(images.astype(self.dtype), train and not self.frozen_backbone_bn)
    image_hw = (images.shape[1], images.shape[2])
    out: Dict[str, Any] = {}
    if "classification" in self.heads:
      out["classification"] = self.classification_head(features, train)
    if "detection" in self.heads:
      out["detection"] = self._detect(features, image_hw, train, targets.get("detection"))
    if "segmentation" in self.heads:
      out["segmentation"] = self.segmentation_head(features, image_hw, train)
    if "captioning" in self.heads:
      image = pooled(features)
      out["captioning"] = {"features": image}
      if "captioning" in targets:
        out["captioning"]["logits"] = self.captioning_head(image, targets["captioning"], train)
    if self.uncertainty_weighting:
      out["log_variance"] = self.log_variance
    return out

  def _detect(self, features: Dict[str, jax.Array], image_hw: Tuple[int, int], train: bool,
              targets: Optional[Dict[str, jax.Array]]) -> Dict[str, jax.Array]:
    """DetectionHead on each image alone: inputs get a batch axis of 1 inside the vmap."""
    one = lambda tree: jax.tree_util.tree_map(lambda x: x[:, None], tree)  # noqa: E731
    if train and targets is None:
      raise ValueError("the detection head needs targets['detection'] in training")
    # Plain XLA convolutions here: under vmap, the CPU paths' custom_vjp kernel gradient is a
    # convolution with both operands batched, and with the vmapped axis sharded over several
    # devices XLA:CPU (jax 0.10.2) returns one device's partial sum instead of the total (silently
    # wrong gradients; tests/test_multitask.py, 8 devices vs 1). Plain convolutions are batched by
    # folding the vmapped axis into the batch and differentiate correctly.
    with cpu_dispatch.forced_impl("xla"):
      out = self.detection_head(one(features), image_hw, train, one(targets) if train else None)
    return out if train else jax.tree_util.tree_map(lambda x: x[:, 0], out)

  # --- the captioning decoding interface (as ShowAndTell's), used by CaptioningTask.decode ---
  def start(self, features: jax.Array) -> Carry:
    """Pooled features [N, D] (outputs['captioning']['features']) -> the LSTM carry decoding
    starts from."""
    return self.captioning_head.start(features)

  def decode_step(self, carry: Carry, tokens: jax.Array) -> Tuple[jax.Array, Carry]:
    """(carry, previous tokens int32 [B]) -> (next-token logits float32 [B, V], carry)."""
    return self.captioning_head.decode_step(carry, tokens)
