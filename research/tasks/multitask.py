"""Multi-task learning: one backbone, several heads, one training step (research.models.multitask).

The heads ('classification', 'detection', 'segmentation', 'captioning'; task.heads picks any
subset) are the single tasks'. This task holds one instance of each single task, configured by
task.<head> (that task's own config keys), and delegates to it: its preprocessing makes the head's
labels, and its eval_step, predict, finalize_eval and visualize score and draw the head's outputs
(the joint model's outputs stand in for its own model's: `_JointModelHead`), so every head is
scored by exactly its single task's metrics. The training losses are the single tasks' loss
functions, restricted to the examples that have the head's labels.

Data: one dataset carrying every head's labels (config.dataset, e.g. `shapes`), or a mixture
task.mixture = ((name, train_split, eval_split, weight, heads), ...) of datasets each carrying the
labels of `heads`. Training draws member k with probability weight_k / sum(weights)
(research.data.mixture); evaluation reads each member's eval split once ('' leaves a member out).
config.dataset must still name a dataset the core can open (e.g. the first member). A head takes
its label space (classes, vocabulary) from the first member that carries it; members sharing a
head must share its label space. Images of different datasets or sizes need task.image_size.

Batch layout (N examples; every head's entries are present for every example, zero-filled where
the example has no labels for that head):
  'image'             float32 [N, S, S, 3]: RGB (grey repeated), resized to task.image_size keeping
                      the aspect ratio (zero-padded at the bottom / right; boxes and masks follow),
                      flipped per task.augment (boxes, masks and the captions' 'left' / 'right'
                      follow), normalized by task.mean / task.std
  'has_<head>'        float32 [N]: 1 where the example has the head's labels
  '<head>/<key>'      the single task's batch entries other than 'image': 'classification/label';
                      'detection/boxes', '/labels', '/box_valid', '/crowd', '/area', '/scale',
                      '/image_id'; 'segmentation/segmentation'; 'captioning/tokens' in training,
                      '/captions', '/caption_valid', '/image_id' in evaluation
  and the core's 'mask' and 'index' in evaluation.

Loss: sum_t w_t L_t (task.loss_weighting = 'fixed', w_t = task.weights[t]), or with 'uncertainty'
(Kendall, Gal & Cipolla 2018) sum_t exp(-s_t) w_t L_t + s_t, with s_t the model's learned
'log_variance' parameters. L_t averages over the examples with has_t = 1 only (their pixels for
segmentation, their words for captioning), so a head without labels in a batch gets exactly zero
gradient and its term (s_t included) drops out.
Metrics, side by side: '<head>/<name>', e.g. train 'classification/loss', 'detection/rpn_box',
'captioning/word_accuracy', '<head>/labeled' (fraction of the batch with labels),
'<head>/log_variance'; eval 'classification/accuracy', 'detection/mAP', 'segmentation/miou',
'captioning/cider', '<head>/examples' (labeled examples scored).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from research.core.config import ConfigError
from research.core.registry import TASKS
from research.data import datasets, mixture, preprocess
from research.models.multitask import HEADS
from research.tasks.base import Batch, PyTree, Sums, Task
from research.tasks.captioning import CaptioningTask
from research.tasks.classification import ClassificationTask
from research.tasks.detection import DetectionTask
from research.tasks.segmentation import IMAGENET_MEAN, IMAGENET_STD, SegmentationTask

# Set once for all heads by the multi-task config (task.<key>), not per head.
SHARED_KEYS = ("image_size", "mean", "std", "augment")


class _JointModelHead:
  """Mixin: a single task whose model is one head of the joint model. It builds no model of its
  own; its `apply_model` returns what it is given in place of the images: the joint model's output
  for this head, computed once for every head. So the single task's eval_step, predict,
  finalize_eval and visualize run unchanged on the joint model's outputs."""

  def build_model(self) -> None:
    return None

  def apply_model(self, params: PyTree, model_state: PyTree, inputs: Any, train: bool,
                  rng: Optional[jax.Array] = None) -> Tuple[Any, PyTree]:
    return inputs, model_state


class _ClassificationHead(_JointModelHead, ClassificationTask):
  pass


class _DetectionHead(_JointModelHead, DetectionTask):
  pass


class _SegmentationHead(_JointModelHead, SegmentationTask):
  pass


class _CaptioningHead(_JointModelHead, CaptioningTask):
  """The head's outputs are {'logits', 'features'} (research.models.multitask); CaptioningTask's
  decoding runs on the joint model (set as `model`: its `start` / `decode_step`) from the pooled
  features; reference captions come from the joint evaluation source."""

  def apply_model(self, params, model_state, inputs, train, rng=None):
    outputs, _ = inputs  # (head outputs, tokens): the logits were computed for these tokens.
    return outputs["logits"], model_state

  def decode(self, state, outputs: Dict[str, jax.Array]) -> jax.Array:
    return super().decode(state, outputs["features"])

  def use_eval_source(self, source: Any) -> None:
    self._eval_source, self._references = source, None

  def references(self) -> Dict[int, List[str]]:
    """Reference captions by position in the evaluation source, for the examples that have any."""
    if self._references is None:
      examples = (self._eval_source[i] for i in range(len(self._eval_source)))
      self._references = {i: list(e["captions"]["text"]) for i, e in enumerate(examples) if "captions" in e}
    return self._references


HEAD_TASKS = {"classification": _ClassificationHead, "detection": _DetectionHead,
              "segmentation": _SegmentationHead, "captioning": _CaptioningHead}


class Member(NamedTuple):
  """One dataset of the mixture and the heads it has labels for."""
  name: str
  train_split: str
  eval_split: str
  weight: float
  heads: Tuple[str, ...]


def _validated(source: Any, name: str) -> Any:
  """The source in canonical layout (`preprocess.ValidatedSource`) where the dataset has an
  adapter; whole-image datasets (digits, mnist, cifar10) are read as they are."""
  if name.split(":")[0].split("/")[0] in preprocess.ADAPTERS:
    return preprocess.ValidatedSource(source, name)
  return source


@TASKS.register("multitask")
class MultiTaskTask(Task):
  """Several heads on one backbone, trained jointly; see the module docstring."""

  @classmethod
  def required_packages(cls, task_config: ConfigDict) -> Dict[str, str]:
    needed: Dict[str, str] = {}
    for head in task_config.get("heads", HEADS):
      if head in HEAD_TASKS:
        needed.update(HEAD_TASKS[head].required_packages(task_config.get(head, ConfigDict())))
    return needed

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.heads = HEADS
    c.weights = ConfigDict({head: 1.0 for head in HEADS})  # w_t of each head's loss.
    c.loss_weighting = "fixed"  # 'fixed': sum_t w_t L_t; 'uncertainty': Kendall et al. 2018.
    c.mixture = ()              # ((name, train_split, eval_split, weight, heads), ...); (): config.dataset.
    c.image_size = 0            # 0: native size (one per dataset); else aspect kept, padded to S x S.
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    c.augment = ("flip",)       # 'flip': horizontal, for every head's labels at once.
    for head, task_cls in HEAD_TASKS.items():
      own = task_cls.config_defaults()
      c[head] = ConfigDict({k: v for k, v in own.items() if k not in SHARED_KEYS})
    return c

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    super().__init__(config, dataset_info)
    if "captioning" in self.cfg.heads:
      self.head_tasks["captioning"].model = self.model

  # --- configuration ---
  @functools.cached_property
  def members(self) -> List[Member]:
    """The datasets read and the heads each has labels for; the first thing built from the task
    settings (by the model's defaults), so it checks them."""
    heads = tuple(self.cfg.heads)
    unknown = set(heads) - set(HEADS)
    if not heads or unknown or len(set(heads)) != len(heads):
      raise ConfigError(f"config.task.heads {heads}: name each of {', '.join(HEADS)} at most once")
    if self.cfg.loss_weighting not in ("fixed", "uncertainty"):
      raise ConfigError(f"config.task.loss_weighting: unknown {self.cfg.loss_weighting!r}; known: fixed, uncertainty")
    if set(self.cfg.augment) - {"flip"}:
      raise ConfigError(f"config.task.augment {tuple(self.cfg.augment)}: the multitask task knows only 'flip'")
    ds = self.config.dataset
    if not self.cfg.mixture:
      return [Member(ds.name, ds.train_split, ds.eval_split, 1.0, heads)]
    members = []
    for i, entry in enumerate(self.cfg.mixture):
      if len(entry) != 5:
        raise ConfigError(f"config.task.mixture[{i}] = {entry!r}: expected (name, train_split, eval_split, "
                          "weight, heads)")
      name, train_split, eval_split, weight, member_heads = entry
      member_heads = (member_heads,) if isinstance(member_heads, str) else tuple(member_heads)
      if set(member_heads) - set(heads):
        raise ConfigError(f"config.task.mixture[{i}] ({name}) labels heads {member_heads} outside "
                          f"config.task.heads {heads}")
      members.append(Member(name, train_split, eval_split, float(weight), member_heads))
    for head in heads:
      if not any(head in m.heads and m.weight > 0 for m in members):
        raise ConfigError(f"config.task.mixture: no member of positive weight has labels for head {head!r}")
    return members

  def _head_config(self, head: str) -> ConfigDict:
    """The whole config as the single task `head` sees it: its own task section (plus the shared
    keys) and, as config.dataset, the first member with its labels."""
    own = self.cfg[head]
    shared = [k for k in own.keys() if k in SHARED_KEYS]
    if shared:
      raise ConfigError(f"config.task.{head}.{shared[0]} is set for every head by config.task.{shared[0]}")
    member = next(m for m in self.members if head in m.heads)
    config = ConfigDict(self.config.to_dict())
    config.dataset.name, config.dataset.train_split, config.dataset.eval_split = (
        member.name, member.train_split, member.eval_split or member.train_split)
    config.model = ConfigDict({"name": ""})
    config.task = ConfigDict({"name": head, **own.to_dict(), "image_size": 0, "mean": tuple(self.cfg.mean),
                              "std": tuple(self.cfg.std), "augment": ()})
    if head == "classification":  # the joint preprocessing makes one float32 image for every head
      config.task.augment_on_device = False
    return config

  @functools.cached_property
  def head_tasks(self) -> Dict[str, Task]:
    """head -> the single task that makes its labels and scores its outputs."""
    tasks = {}
    for head in self.cfg.heads:
      config = self._head_config(head)
      info = datasets.get_builder(config.dataset.name, config.dataset.data_dir or None).info
      try:
        tasks[head] = HEAD_TASKS[head](config, info)
      except ConfigError as e:
        raise ConfigError(f"config.task.{head} (the {head} task's own keys): {e}") from None
    return tasks

  def model_defaults(self) -> Dict[str, Any]:
    heads = tuple(self.cfg.heads)
    defaults = {"heads": heads, "uncertainty_weighting": self.cfg.loss_weighting == "uncertainty",
                "num_classes": {h: self.head_tasks[h].num_classes for h in heads if h != "captioning"}}
    if "captioning" in heads:
      defaults["vocab_size"] = len(self.head_tasks["captioning"].vocab)
    return defaults

  # --- data ---
  def wrap_source(self, source: Any, split: str) -> Any:
    ds, data_dir = self.config.dataset, self.config.dataset.data_dir or None
    if not self.cfg.mixture:
      wrapped = _validated(source, ds.name)
    elif split == ds.train_split:
      wrapped = mixture.MixtureSource(
          [_validated(datasets.get_data_source(m.name, m.train_split, data_dir), m.name) if m.weight > 0 else ()
           for m in self.members], [m.weight for m in self.members])
    elif split == ds.eval_split:
      wrapped = mixture.InterleavedSource(
          [_validated(datasets.get_data_source(m.name, m.eval_split, data_dir), m.name) if m.eval_split else ()
           for m in self.members])
    else:
      raise ConfigError(f"multitask with a mixture reads config.dataset.train_split or eval_split, not {split!r}")
    if split == ds.eval_split and "captioning" in self.cfg.heads:
      self.head_tasks["captioning"].use_eval_source(wrapped)
    return wrapped

  def _labeled_heads(self, example: Dict[str, Any]) -> Tuple[str, ...]:
    return self.members[int(example.get(mixture.MEMBER_KEY, 0))].heads

  def _label_key(self, head: str) -> str:
    """The canonical example key holding the head's labels."""
    if head == "classification":
      return self.head_tasks[head].cfg.label_key
    return {"detection": "objects", "segmentation": "segmentation_mask", "captioning": "captions"}[head]

  @staticmethod
  def _placeholder(head_key: str, image: np.ndarray) -> Any:
    """Stand-in labels under `head_key` for an example without them (the head's preprocessing
    runs on them; its outputs are then zeroed)."""
    if head_key == "objects":
      return {"bbox": np.zeros((0, 4), np.float32), "label": np.zeros(0, np.int64),
              "area": np.zeros(0, np.int64), "is_crowd": np.zeros(0, np.bool_)}
    if head_key == "segmentation_mask":
      return np.zeros(image.shape[:2] + (1,), np.uint8)
    if head_key == "captions":
      return {"text": [""]}
    return 0  # whole-image label

  def _prepare(self, example: Dict[str, Any], rng: Optional[np.random.Generator]
               ) -> Tuple[Dict[str, Any], float]:
    """The steps shared by every head: RGB uint8 image, resize, flip. -> (example, scale)."""
    example = dict(example, image=preprocess.prepare_image(example["image"], channels=3))
    example.setdefault("image/id", int(example.get(mixture.INDEX_KEY, 0)))
    height, width = example["image"].shape[:2]
    scale = 1.0
    if self.cfg.image_size:
      size = int(self.cfg.image_size)
      example = preprocess.resize(example, size, keep_aspect=True)
      scale = min(size / height, size / width)
    if rng is not None and "flip" in self.cfg.augment:
      example = preprocess.random_hflip(example, rng)
    return example, scale

  def _per_head(self, example: Dict[str, Any], scale: float,
                run: Callable[[Task, Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
    """Each head's single-task preprocessing `run` on the prepared example, merged (module docstring)."""
    labeled = self._labeled_heads(example)
    out: Dict[str, Any] = {}
    for head in self.cfg.heads:
      has, key = head in labeled, self._label_key(head)
      if has and key not in example:
        raise KeyError(f"head {head!r}: example {example.get('image/id')} has no {key!r}, but its dataset is "
                       "listed as labeled for it (config.task.mixture)")
      result = run(self.head_tasks[head], example if key in example else
                   {**example, key: self._placeholder(key, example["image"])})
      image = out.setdefault("image", result["image"])
      if result["image"].shape != image.shape:
        raise ConfigError(f"head {head!r} makes images of shape {result['image'].shape}, the others "
                          f"{image.shape}: leave its geometric options (crop_size, eval_resize) at 0")
      for k, v in result.items():
        if k != "image":
          out[f"{head}/{k}"] = v if has else np.zeros_like(v)
      out[f"has_{head}"] = np.float32(has)
    if "detection" in self.cfg.heads:  # the image was resized here, not by the detection task
      out["detection/scale"] = np.float32(scale if "detection" in labeled else 0.0)
    return out

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    example, scale = self._prepare(example, rng)
    return self._per_head(example, scale, lambda head, e: head.preprocess_train(e, rng))

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    example, scale = self._prepare(example, None)
    return self._per_head(example, scale, lambda head, e: head.preprocess_eval(e))

  # --- device-side steps ---
  def _targets(self, batch: Batch, train: bool) -> Dict[str, Any]:
    """What the model's heads need besides the image: detection boxes (training), caption tokens."""
    targets: Dict[str, Any] = {}
    if "detection" in self.cfg.heads and train:
      targets["detection"] = {"boxes": batch["detection/boxes"], "labels": batch["detection/labels"],
                              "valid": batch["detection/box_valid"]}
    if "captioning" in self.cfg.heads:
      targets["captioning"] = batch["captioning/tokens" if "captioning/tokens" in batch else "captioning/captions"]
    return targets

  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"], train=False,
                           targets=self._targets(batch, train=False))

  def apply_model(self, params: PyTree, model_state: PyTree, inputs: Tuple[jax.Array, Dict[str, Any]],
                  train: bool, rng: Optional[jax.Array] = None) -> Tuple[Dict[str, Any], PyTree]:
    """inputs: (images, targets) -> ({head: output}, model_state)."""
    images, targets = inputs
    variables = {"params": params, **model_state}
    if train:
      dropout_rng, sampling_rng = jax.random.split(rng)
      return self.model.apply(variables, images, train=True, targets=targets,
                              rngs={"dropout": dropout_rng, "sampling": sampling_rng},
                              mutable=list(model_state.keys()))
    return self.model.apply(variables, images, train=False, targets=targets), model_state

  def train_outputs(self, params, model_state, batch: Batch, rng: jax.Array) -> Tuple[Dict[str, Any], PyTree]:
    return self.apply_model(params, model_state, (batch["image"], self._targets(batch, True)), True, rng)

  def loss(self, outputs: Dict[str, Any], batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """(sum_t w_t L_t, or with uncertainty weighting sum_t exp(-s_t) w_t L_t + s_t; metrics).

    outputs: the joint model's training outputs {head: its outputs, 'log_variance': [T]}. L_t and
    the head's metrics are its single task's `loss` on the head's outputs and the head's view of the
    batch, each example weighted by has_<head> times example_weights [N]."""
    total, metrics = jnp.zeros((), jnp.float32), {}
    for i, head in enumerate(self.cfg.heads):
      has = batch[f"has_{head}"]
      weights = has * example_weights
      loss, head_metrics = self.head_tasks[head].loss(outputs[head], self.head_batch(batch, head), weights)
      term = float(self.cfg.weights[head]) * loss
      if self.cfg.loss_weighting == "uncertainty":
        log_var = outputs["log_variance"][i]
        term = jnp.where(weights.sum() > 0, jnp.exp(-log_var) * term + log_var, 0.0)
        metrics[f"{head}/log_variance"] = log_var
      total = total + term
      metrics.update({f"{head}/loss": loss, f"{head}/labeled": has.mean(),
                      **{f"{head}/{k}": v for k, v in head_metrics.items()}})
    return total, metrics

  def head_batch(self, batch: Dict[str, Any], head: str, image: Any = None) -> Dict[str, Any]:
    """The single task's view of a batch: its entries unprefixed, 'mask' limited to the examples
    with its labels, and 'image' replaced by `image` (the head's outputs) where given."""
    prefix = head + "/"
    view = {k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)}
    view["image"] = batch["image"] if image is None else image
    if "mask" in batch:
      view["mask"] = batch["mask"] * batch[f"has_{head}"]
    if "index" in batch:
      view["index"] = batch["index"]
    return view

  def eval_outputs(self, state, batch: Batch) -> Dict[str, Any]:
    """The joint model's evaluation outputs {head: output} (the head tasks read them via head_batch)."""
    out, _ = self.apply_model(state.params, state.model_state, (batch["image"], self._targets(batch, False)), False)
    return out

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    out = self.eval_outputs(state, batch)
    sums: Sums = {}
    outputs: Dict[str, PyTree] = {}
    for head in self.cfg.heads:
      view = self.head_batch(batch, head, out[head])
      head_sums, head_outputs = self.head_tasks[head].eval_step(state, view)
      labeled = view["mask"].sum()
      sums.update({f"{head}/{k}": v for k, v in head_sums.items()})
      sums[f"{head}/examples"] = (labeled, jnp.ones_like(labeled))
      if head_outputs is not None:
        outputs[head] = head_outputs
    return sums, outputs or None

  def predict(self, state, batch: Batch) -> Dict[str, PyTree]:
    out = self.eval_outputs(state, batch)
    return {head: self.head_tasks[head].predict(state, self.head_batch(batch, head, out[head]))
            for head in self.cfg.heads}

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Each head's own finalize_eval on its sums and outputs; metrics prefixed '<head>/'."""
    scalars: Dict[str, float] = {}
    artifacts: Dict[str, Any] = {}
    for head in self.cfg.heads:
      prefix = head + "/"
      examples = float(sums[f"{head}/examples"][0])
      scalars[f"{head}/examples"] = examples
      if not examples:
        continue
      head_sums = {k[len(prefix):]: v for k, v in sums.items() if k.startswith(prefix) and k != f"{head}/examples"}
      head_scalars, head_artifacts = self.head_tasks[head].finalize_eval(
          head_sums, [o[head] for o in outputs if head in o])
      scalars.update({prefix + k: v for k, v in head_scalars.items()})
      images = head_artifacts.pop("images", {})  # pictures (a confusion matrix) go up, as '<head>/<name>'
      if images:
        artifacts.setdefault("images", {}).update({prefix + k: v for k, v in images.items()})
      if head_artifacts:
        artifacts[head] = head_artifacts
    return scalars, artifacts

  def visualize(self, batch: Dict[str, np.ndarray], predictions: Dict[str, PyTree]) -> Dict[str, np.ndarray]:
    """Each head's pictures (its single task's) of the batch's examples with its labels."""
    pictures = {}
    for head in self.cfg.heads:
      rows = (batch[f"has_{head}"] > 0) & (batch["mask"] > 0 if "mask" in batch else True)
      if not rows.any():
        continue
      view = {k: np.asarray(v)[rows] for k, v in self.head_batch(batch, head).items()}
      head_predictions = jax.tree_util.tree_map(lambda x: np.asarray(x)[rows], predictions[head])
      pictures.update({f"{head}/{k}": v for k, v in self.head_tasks[head].visualize(view, head_predictions).items()})
    return pictures
