"""Image classification: softmax cross-entropy, top-1/top-k accuracy, confusion matrix.

Batch layout: 'image' float [N, H, W, C] (normalized), 'label' int32 [N], and at evaluation
'mask' float32 [N] (0 for padding rows). Models return logits [N, num_classes], or a dict
{'logits': ..., 'aux1': ..., 'aux2': ...} (GoogLeNet's auxiliary heads, used in training only).

Host-side preprocessing (numpy and PIL, in data workers). Training augmentations (task.augment):
'flip' (horizontal, p = 0.5), 'crop' (pad crop_padding, random crop: the CIFAR recipe) and
'random_resized_crop' (torchvision's RandomResizedCrop(image_size, scale=crop_scale,
ratio=crop_ratio), bilinear: the ImageNet recipe). Evaluation: the image resized to image_size x
image_size, or with eval_resize > 0 torchvision's Resize(eval_resize) (shorter side) then
CenterCrop(image_size): the ImageNet "resize 256, centre crop 224" protocol.

With task.augment_on_device (the default), training batches leave the host as uint8: 'image'
uint8 [N, H, W, C] (decoded, resized, random-resized-cropped), with the host's random draws
'crop_offset' int32 [N, 2] (with 'crop': the (y, x) of the crop in the padded image) and 'flip'
bool [N] (with 'flip'); the jitted step pads and crops, flips and normalizes (`train_images`):
the same random draws from the same host generators and the same float32 values (normalization
by the same look-up table) as doing it all on the host, so results do not change, with 4x fewer
bytes to batch and copy and the per-pixel work off the host. Evaluation batches stay float32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from research.core.config import ConfigError
from research.core.records import NamedRecords
from research.core.registry import TASKS
from research.data import philox, preprocess
from research.evaluation import classification as cls_eval
from research.tasks.base import Batch, PyTree, Sums, Task, weighted_mean
from research.viz.confusion import MAX_MATRIX_CLASSES, confusion_picture, most_confused
from research.viz.grid import image_grid, to_uint8


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
                          ) -> jax.Array:
  """Per-example cross-entropy [N] of logits [N, C] against int labels [N], with label smoothing
  (targets (1 - eps) one_hot + eps / C, as torch.nn.CrossEntropyLoss(label_smoothing=eps))."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


AUGMENTATIONS = ("flip", "crop", "random_resized_crop")


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [H, W, C] -> uint8 [height, width, C], PIL bilinear per channel (as preprocess.prepare_image)."""
  return preprocess._resize_array(image, height, width)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)
                            ) -> Tuple[int, int, int, int]:
  """(top, left, h, w) of a crop of a height x width image, as torchvision's RandomResizedCrop.get_params.

  Up to 10 tries: area fraction uniform in `scale`, aspect ratio w / h log-uniform in `ratio`,
  kept if it fits, at a uniformly random position; else the centre crop of the whole image clamped
  to the ratio range.
  """
  area = height * width
  log_ratio = np.log(np.asarray(ratio, np.float64))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(np.sqrt(target_area * aspect)))
    h = int(round(np.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    h, w = int(round(width / min(ratio))), width
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def resize_shorter_center_crop(image: np.ndarray, resize: int, crop: int) -> np.ndarray:
  """uint8 [H, W, C] -> [crop, crop, C]: torchvision's Resize(resize) (shorter side to `resize`,
  the longer to int(resize * long / short), bilinear) then CenterCrop(crop)."""
  h, w = image.shape[:2]
  nh, nw = (int(resize * h / w), resize) if w <= h else (resize, int(resize * w / h))
  image = resize_image(image, nh, nw)
  top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
  return image[top:top + crop, left:left + crop]


@TASKS.register("classification")
class ClassificationTask(Task):
  """Supervised classification of whole images."""

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.image_key = "image"
    c.label_key = "label"
    c.num_classes = 0          # 0: from the dataset's ClassLabel feature.
    c.image_size = 0           # 0: native size; else resize (bilinear) to image_size x image_size.
    c.channels = 0             # 0: native; 1 or 3 to convert grey <-> RGB.
    c.mean = (0.0,)            # Normalization: (x / 255 - mean) / std, per channel.
    c.std = (1.0,)
    c.augment = ()             # 'flip', 'crop', 'random_resized_crop' (module docstring).
    c.crop_padding = 4
    c.crop_scale = (0.08, 1.0)       # random_resized_crop: area fraction range,
    c.crop_ratio = (3 / 4, 4 / 3)    # and aspect ratio (w / h) range.
    c.eval_resize = 0          # > 0: evaluation resizes the shorter side to this, then centre-crops image_size.
    c.label_smoothing = 0.0
    c.aux_loss_weight = 0.3    # Weight of auxiliary heads' losses (GoogLeNet), if present.
    c.top_k = 5
    c.augment_on_device = True  # training: crop, flip and normalization in the jitted step (docstring).
    return c

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    super().__init__(config, dataset_info)
    unknown = set(self.cfg.augment) - set(AUGMENTATIONS)
    if unknown:
      raise ConfigError(f"config.task.augment: unknown augmentation(s) {sorted(unknown)}; "
                        f"known: {', '.join(AUGMENTATIONS)}")
    size = int(self.cfg.image_size)
    if "random_resized_crop" in self.cfg.augment and not size:
      raise ConfigError("config.task.augment 'random_resized_crop' needs config.task.image_size > 0")
    if self.cfg.eval_resize and not 0 < size <= int(self.cfg.eval_resize):
      raise ConfigError(f"config.task.eval_resize={self.cfg.eval_resize} needs 0 < config.task.image_size "
                        f"<= eval_resize, got image_size={size}")

  @property
  def num_classes(self) -> int:
    if self.cfg.num_classes:
      return int(self.cfg.num_classes)
    return int(self.dataset_info.features[self.cfg.label_key].num_classes)

  def model_defaults(self) -> Dict[str, Any]:
    return {"num_classes": self.num_classes}

  # --- host-side preprocessing ---
  def _image(self, example: Dict[str, Any], size: Optional[int] = None) -> np.ndarray:
    """uint8 [size, size, C] (size: task.image_size; 0 keeps the native size)."""
    cfg = self.host_cfg
    size = int(cfg.image_size) if size is None else size
    return preprocess.prepare_image(example[cfg.image_key], cfg.channels, size)

  def _normalize(self, image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 (image / 255 - mean) / std, as image * scale + shift."""
    cfg = self.host_cfg
    if not hasattr(self, "_normalize_table"):
      self._normalize_table = preprocess.NormalizeTable(cfg.mean, cfg.std)
    return self._normalize_table(image)

  def _image_feature(self) -> Any:
    """The dataset's TFDS image feature (None if unknown)."""
    features = getattr(self.dataset_info, "features", None)
    key = self.host_cfg.image_key
    return features[key] if features and key in features.keys() else None

  def _feature_channels(self) -> int:
    """The channel count of the dataset's image feature (0 if unknown): what TFDS's decoder makes
    of a grey JPEG, which `preprocess_train` decodes itself from the undecoded training split."""
    shape = getattr(self._image_feature(), "shape", None)
    return int(shape[-1]) if shape and shape[-1] else 0

  def wrap_source(self, source: Any, split: str) -> Any:
    """The training split of a TFDS source whose images are JPEG is read undecoded (bytes), so
    that `preprocess_train` decodes only what its crop needs (`preprocess.crop_and_resize`);
    other splits and sources are unchanged. A `NamedRecords` source is looked through."""
    if isinstance(source, NamedRecords):
      return source.replace_source(self.wrap_source(source.source, split))
    cfg = self.host_cfg
    jpeg = getattr(self._image_feature(), "encoding_format", None) == "jpeg"
    if (split == self.config.dataset.train_split and jpeg and dataclasses.is_dataclass(source)
        and getattr(source, "decoders", "none") is None):
      from tensorflow_datasets import decode  # pylint: disable=g-import-not-at-top
      return dataclasses.replace(source, decoders={cfg.image_key: decode.SkipDecoding()})
    return source

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    cfg = self.host_cfg
    if cfg.eval_resize:
      image = resize_shorter_center_crop(self._image(example, 0), int(cfg.eval_resize), int(cfg.image_size))
    else:
      image = self._image(example)
    return {"image": self._normalize(image), "label": np.int32(example[cfg.label_key])}

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    cfg = self.host_cfg
    if "random_resized_crop" in cfg.augment:
      image = example[cfg.image_key]
      if cfg.channels or not isinstance(image, bytes):
        image = self._image(example, 0)
      else:
        image = preprocess.open_encoded(image)  # its header read once, for the box and the crop
      box = random_resized_crop_box(*preprocess.image_hw(image), rng, cfg.crop_scale, cfg.crop_ratio)
      size = int(cfg.image_size)
      image = preprocess.crop_and_resize(image, box, (size, size), self._feature_channels())
    else:
      image = self._image(example)
    out: Dict[str, Any] = {"label": np.int32(example[cfg.label_key])}
    if "crop" in cfg.augment:
      p = int(cfg.crop_padding)
      h, w = image.shape[:2]
      y, x = rng.integers(0, 2 * p + 1), rng.integers(0, 2 * p + 1)  # = integers(size=2), 5x cheaper
      if cfg.augment_on_device:
        out["crop_offset"] = np.array([y, x], np.int32)
      else:
        image = np.pad(image, ((p, p), (p, p), (0, 0)))[y:y + h, x:x + w]
    if "flip" in cfg.augment:
      flip = rng.random() < 0.5
      if cfg.augment_on_device:
        out["flip"] = np.bool_(flip)
      elif flip:
        image = image[:, ::-1]
    out["image"] = image if cfg.augment_on_device else self._normalize(image)
    return out

  def preprocess_train_batch(self, source: Any, indices: np.ndarray, positions: np.ndarray,
                             rngs: Any) -> Optional[Dict[str, Any]]:
    """`preprocess_train` of the examples source[indices] with the generators rngs(positions),
    stacked, vectorized (research.data.pipeline.BatchPreprocess): for a source held in memory
    with augment_on_device and at most 'crop' and 'flip', the images and labels are gathered from
    arrays prepared once and the random draws computed from the generators' first Philox block
    (research.data.philox) -- the same values, bit for bit, at ~1/10 of the host time. None
    (one by one) otherwise, and for a batch with a rejected draw (about 1 in 2**32)."""
    from research.data.datasets import InMemorySource  # datasets imports tfds: only when needed
    cfg = self.host_cfg
    if (not isinstance(source, InMemorySource) or not cfg.augment_on_device
        or not set(cfg.augment) <= {"crop", "flip"}):
      return None
    cached = getattr(self, "_train_arrays", None)
    if cached is None or cached[0] is not source:
      examples = [source[i] for i in range(len(source))]
      images = [self._image(e) for e in examples]
      if len({image.shape for image in images}) != 1:
        return None
      cached = (source, np.stack(images), np.asarray([e[cfg.label_key] for e in examples], np.int32))
      self._train_arrays = cached
    _, images, labels = cached
    words = iter(rngs.first_block(positions))
    out: Dict[str, Any] = {"label": labels[indices]}
    rejected = np.zeros(len(positions), bool)
    if "crop" in cfg.augment:
      word, n = next(words), 2 * int(cfg.crop_padding) + 1
      (y, y_rejected), (x, x_rejected) = philox.bounded(philox.low_half(word), n), philox.bounded(
          philox.high_half(word), n)
      rejected |= y_rejected | x_rejected
      out["crop_offset"] = np.stack([y, x], axis=1).astype(np.int32)
    if "flip" in cfg.augment:
      out["flip"] = philox.uniform(next(words)) < 0.5
    if rejected.any():
      return None
    out["image"] = images[indices]
    return out

  # --- device-side steps ---
  def train_images(self, batch: Batch) -> jax.Array:
    """The model's training input float32 [N, H, W, C] from a training batch: with
    augment_on_device, the uint8 images padded and cropped at 'crop_offset', flipped where 'flip',
    and normalized by the host's look-up table (module docstring); else batch['image'] as it is."""
    images = batch["image"]
    if images.dtype != jnp.uint8:
      return images
    n, h, w, c = images.shape
    if "crop_offset" in batch:
      p = int(self.cfg.crop_padding)
      padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
      crop = lambda image, yx: jax.lax.dynamic_slice(image, (yx[0], yx[1], 0), (h, w, c))  # noqa: E731
      images = jax.vmap(crop)(padded, batch["crop_offset"])
    if "flip" in batch:
      images = jnp.where(batch["flip"][:, None, None, None], images[:, :, ::-1], images)
    if not hasattr(self, "_normalize_table"):
      self._normalize_table = preprocess.NormalizeTable(self.cfg.mean, self.cfg.std)
    table, offsets = self._normalize_table.table(c)
    return jnp.take(jnp.asarray(table), images.astype(jnp.int32) + jnp.asarray(offsets, jnp.int32))

  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    return super().init_variables(rng, {**batch, "image": self.train_images(batch)})

  def train_outputs(self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
                    ) -> Tuple[Any, PyTree]:
    return self.apply_model(params, model_state, self.train_images(batch), True, rng)

  def loss(self, outputs: Any, batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Cross-entropy per example (label-smoothed) against batch['label'] int [N]; outputs: logits
    [N, C], or {'logits', 'aux*'} with auxiliary heads' logits (GoogLeNet), whose losses add
    aux_loss_weight times theirs (metric 'main_loss' without them). Metric: 'accuracy'."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    labels = batch["label"]
    smoothing = self.cfg.label_smoothing
    loss = weighted_mean(softmax_cross_entropy(logits, labels, smoothing), example_weights)
    metrics = {"accuracy": weighted_mean(jnp.argmax(logits, -1) == labels, example_weights)}
    if isinstance(outputs, dict):
      aux = [weighted_mean(softmax_cross_entropy(v, labels, smoothing), example_weights)
             for k, v in sorted(outputs.items()) if k.startswith("aux")]
      if aux:
        metrics["main_loss"] = loss
        loss = loss + self.cfg.aux_loss_weight * sum(aux)
    return loss, metrics

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    out, _ = self.apply_model(state.params, state.model_state, batch["image"], False)
    logits = (out["logits"] if isinstance(out, dict) else out).astype(jnp.float32)
    labels, mask = batch["label"], batch["mask"]
    count = mask.sum()
    ce = softmax_cross_entropy(logits, labels)
    pred = jnp.argmax(logits, -1)
    sums = {
        "loss": ((ce * mask).sum(), count),
        "accuracy": (((pred == labels) * mask).sum(), count),
        "confusion": (cls_eval.confusion_matrix(labels, pred, logits.shape[-1], mask), count),
    }
    k = min(int(self.cfg.top_k), logits.shape[-1])
    if 1 < k < logits.shape[-1]:
      sums[f"top{k}_accuracy"] = ((cls_eval.top_k_correct(logits, labels, k) * mask).sum(), count)
    return sums, None

  def predict(self, state, batch: Batch) -> jax.Array:
    """Predicted class ids [N]."""
    out, _ = self.apply_model(state.params, state.model_state, batch["image"], False)
    return jnp.argmax(out["logits"] if isinstance(out, dict) else out, -1)

  def visualize(self, batch: Dict[str, np.ndarray], predictions: np.ndarray) -> Dict[str, np.ndarray]:
    """A grid of the first 32 images captioned 'predicted/true', green if right, red if wrong."""
    n = min(32, len(predictions))
    names = self._class_names()
    labels, preds = batch["label"][:n], predictions[:n]
    captions = [f"{names[p]}/{names[l]}" for p, l in zip(preds, labels)]
    colors = [(80, 220, 80) if p == l else (255, 80, 80) for p, l in zip(preds, labels)]
    images = to_uint8(batch["image"][:n], self.cfg.mean, self.cfg.std)
    return {"predictions": image_grid(images, captions, colors)}

  def _class_names(self) -> List[str]:
    feature = self.dataset_info.features[self.cfg.label_key] if self.dataset_info else None
    names = list(getattr(feature, "names", []) or [])
    return names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    confusion = np.asarray(sums["confusion"][0]).astype(np.int64)
    scalars = {k: float(s) / max(float(c), 1.0) for k, (s, c) in sums.items() if k != "confusion"}
    report = cls_eval.per_class_report(confusion)
    scalars["balanced_accuracy"] = report["balanced_accuracy"]
    scalars["macro_precision"] = report["macro_precision"]
    if confusion.shape[0] <= 20:
      for c, (p, r) in enumerate(zip(report["precision"], report["recall"])):
        scalars[f"precision/{c}"] = p
        scalars[f"recall/{c}"] = r
    artifacts = {"confusion_matrix": confusion.tolist(), **report}
    if self.config.get("monitor", {}).get("confusion_matrix", False):  # drawn with class names
      names = self._class_names()
      artifacts["class_names"] = names
      artifacts["images"] = {"confusion_matrix": confusion_picture(confusion, names)}
      if confusion.shape[0] > MAX_MATRIX_CLASSES:
        artifacts["most_confused"] = most_confused(confusion, names, 20)
    return scalars, artifacts
