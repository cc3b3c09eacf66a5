"""Image captioning (Show and Tell): teacher-forced masked cross-entropy, decoding, BLEU / CIDEr-D.

Vocabulary: `preprocess.Vocabulary` built from the training split's captions (words seen at
least `min_word_count` times, at most `max_vocab_size`); ids <pad> 0, <bos> 1, <eos> 2, <unk> 3.
A pure function of the data, so a run's vocabulary is rebuilt identically when it is loaded.

Batch layout (L = max_length, K = max_captions):
  train: 'image' float [N, H, W, 3] (normalized), 'tokens' int32 [N, L], one caption drawn per
         image per step: <bos> words <eos> <pad>...
  eval:  'image', 'captions' int32 [N, K, L] (every reference caption, for the loss),
         'caption_valid' bool [N, K], 'image_id' int32 [N], plus the core's 'mask' and 'index'.
Models take (images, tokens) and return logits [..., L - 1, V], logits[..., t] predicting
tokens[..., t + 1] (research.models.captioning.show_tell); positions whose target is <pad> are
left out of the loss.

Evaluation decodes every image (greedy, or beam search when `beam_size` > 1) inside the jitted
eval step, then on the host scores the decoded captions against the split's reference captions
with BLEU-1..4 and CIDEr-D (research.evaluation.captioning, coco-caption's scorers). Artifacts:
every generated caption ({image_id, caption}, the COCO results format) and `num_examples`
examples with their references.
"""
from __future__ import annotations

import functools
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds
from ml_collections import ConfigDict

from research.core.config import ConfigError
from research.core.registry import TASKS
from research.data import datasets, preprocess
from research.data.preprocess import Vocabulary
from research.evaluation.captioning import caption_metrics
from research.models.captioning import decoding
from research.tasks.base import Batch, PyTree, Sums, Task, weighted_mean
from research.viz.grid import image_grid, to_uint8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array
                         ) -> Tuple[jax.Array, jax.Array]:
  """(sum of weights * cross-entropy, sum of weights) over all positions.

  logits [..., V], targets int [...], weights [...] (0 on padding: those positions do not
  contribute, whatever their logits)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  weights = weights.astype(jnp.float32)
  return jnp.sum(jnp.where(weights > 0, ce, 0.0) * weights), jnp.sum(weights)


@TASKS.register("captioning")
class CaptioningTask(Task):
  """Describe an image in a sentence."""

  @classmethod
  def required_packages(cls, task_config: ConfigDict) -> Dict[str, str]:
    return {"pycocoevalcap": "pycocoevalcap>=1.2"}

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.image_size = 0           # 0: native size; else resize (bilinear) to image_size x image_size.
    c.mean = IMAGENET_MEAN
    c.std = IMAGENET_STD
    c.augment = ("flip",)      # 'flip': horizontal, 'left' / 'right' swapped in the captions (wrong
                               # for captions that list objects left to right, as shapes' do).
    c.max_length = 20          # Tokens per caption, <bos> and <eos> included (longer ones are cut).
    c.max_captions = 5         # Reference captions per image kept for the eval loss.
    c.min_word_count = 1       # Vocabulary: words seen at least this often in training captions.
    c.max_vocab_size = 0       # 0: no limit.
    c.beam_size = 1            # 1: greedy decoding.
    c.length_penalty = 0.0     # Beam ranking: log-prob / length ** length_penalty.
    c.num_examples = 16        # Example captions in the eval artifacts and pictures.
    return c

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    self._references: Optional[Dict[int, List[str]]] = None
    self._eval_source: Any = None
    super().__init__(config, dataset_info)
    unknown = set(self.cfg.augment) - {"flip"}
    if unknown:
      raise ConfigError(f"config.task.augment: unknown augmentation(s) {sorted(unknown)}; known: flip")

  # --- vocabulary ---
  @functools.cached_property
  def vocab(self) -> Vocabulary:
    """Built from the training split's captions, read without decoding images."""
    ds = self.config.dataset
    builder = datasets.get_builder(ds.name, ds.data_dir or None)
    skip = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image)}
    source = builder.as_data_source(split=ds.train_split, decoders=skip)
    return Vocabulary.build(preprocess.caption_texts(source), min_count=int(self.cfg.min_word_count),
                            max_size=int(self.cfg.max_vocab_size) or None)

  def model_defaults(self) -> Dict[str, Any]:
    return {"vocab_size": len(self.vocab)}

  # --- host-side preprocessing ---
  def wrap_source(self, source: Any, split: str) -> Any:
    wrapped = preprocess.ValidatedSource(source, self.config.dataset.name)
    if split == self.config.dataset.eval_split:
      self._eval_source, self._references = wrapped, None
    return wrapped

  def _image(self, example: Dict[str, Any]) -> Dict[str, Any]:
    if self.cfg.image_size:
      example = preprocess.resize(example, int(self.cfg.image_size))
    return example

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    example = self._image(example)
    if "flip" in self.cfg.augment:
      example = preprocess.random_hflip(example, rng)
    example = preprocess.normalize(example, self.cfg.mean, self.cfg.std)
    example = preprocess.encode_captions(preprocess.select_caption(example, rng), self.vocab,
                                         int(self.cfg.max_length), 1)
    return {"image": example["image"], "tokens": example["captions"]["tokens"][0]}

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    example = preprocess.normalize(self._image(example), self.cfg.mean, self.cfg.std)
    captions = preprocess.encode_captions(example, self.vocab, int(self.cfg.max_length),
                                          int(self.cfg.max_captions))["captions"]
    return {"image": example["image"], "captions": captions["tokens"], "caption_valid": captions["valid"],
            "image_id": np.int32(example["image/id"])}

  # --- device-side steps ---
  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"], batch["tokens"],
                           train=False)

  def apply_model(self, params: PyTree, model_state: PyTree, inputs: Tuple[jax.Array, jax.Array],
                  train: bool, rng: Optional[jax.Array] = None) -> Tuple[jax.Array, PyTree]:
    """inputs: (images, tokens) -> (logits [..., L - 1, V], model_state)."""
    variables = {"params": params, **model_state}
    if train:
      return self.model.apply(variables, *inputs, train=True, rngs={"dropout": rng},
                              mutable=list(model_state.keys()))
    return self.model.apply(variables, *inputs, train=False), model_state

  def train_outputs(self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
                    ) -> Tuple[jax.Array, PyTree]:
    return self.apply_model(params, model_state, (batch["image"], batch["tokens"]), True, rng)

  def loss(self, outputs: Any, batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """Cross-entropy per word of the next-token logits [N, L - 1, V] (or {'logits': ...}) against
    batch['tokens'][:, 1:], over the words that are not padding. Metric: 'word_accuracy'."""
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    targets = batch["tokens"][:, 1:]
    weights = (targets != Vocabulary.PAD) * example_weights[:, None]
    total, count = masked_cross_entropy(logits, targets, weights)
    accuracy = jnp.sum((jnp.argmax(logits, -1) == targets) * weights) / jnp.maximum(count, 1.0)
    return total / jnp.maximum(count, 1.0), {"word_accuracy": accuracy}

  def decode(self, state, images: jax.Array) -> jax.Array:
    """Generated captions int32 [N, max_length - 1] (no <bos>; <pad> after <eos>)."""
    variables = {"params": state.params, **state.model_state}
    carry = self.model.apply(variables, images, method="start")
    step = lambda c, t: self.model.apply(variables, c, t, method="decode_step")  # noqa: E731
    n, length = images.shape[0], int(self.cfg.max_length) - 1
    ids = dict(bos=Vocabulary.BOS, eos=Vocabulary.EOS, pad=Vocabulary.PAD)
    if int(self.cfg.beam_size) == 1:
      return decoding.greedy_decode(step, carry, n, length, **ids)
    tokens, _ = decoding.beam_search(step, carry, n, length, beam_size=int(self.cfg.beam_size),
                                     length_penalty=float(self.cfg.length_penalty), **ids)
    return tokens[:, 0]

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    captions, mask = batch["captions"], batch["mask"]
    logits, _ = self.apply_model(state.params, state.model_state, (batch["image"], captions), False)
    targets = captions[..., 1:]
    weights = (targets != Vocabulary.PAD) * (batch["caption_valid"] * mask[:, None])[..., None]
    total, count = masked_cross_entropy(logits, targets, weights)
    outputs = {"tokens": self.decode(state, batch["image"]), "image_id": batch["image_id"],
               "index": batch["index"], "mask": mask}
    return {"loss": (total, count)}, outputs

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    out = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
    keep = out["mask"] > 0
    hypotheses = {int(i): self.vocab.decode(t) for i, t in zip(out["index"][keep], out["tokens"][keep])}
    references = self.references()
    scores = caption_metrics(hypotheses, {i: references[i] for i in hypotheses})
    loss_sum, count = sums["loss"]
    scalars = {"loss": float(loss_sum) / max(float(count), 1.0), **scores}
    image_ids = dict(zip(out["index"][keep].tolist(), out["image_id"][keep].tolist()))
    order = sorted(hypotheses)
    artifacts = {
        "captions": [{"image_id": image_ids[i], "caption": hypotheses[i]} for i in order],
        "examples": [{"image_id": image_ids[i], "caption": hypotheses[i], "references": references[i]}
                     for i in order[:int(self.cfg.num_examples)]],
    }
    return scalars, artifacts

  def references(self) -> Dict[int, List[str]]:
    """Reference captions of the eval split, by position in the split (read once)."""
    if self._references is None:
      source = self._eval_source
      self._references = {i: list(source[i]["captions"]["text"]) for i in range(len(source))}
    return self._references

  # --- pictures ---
  def predict(self, state, batch: Batch) -> jax.Array:
    return self.decode(state, batch["image"])

  def visualize(self, batch: Dict[str, np.ndarray], predictions: np.ndarray) -> Dict[str, np.ndarray]:
    """The first `num_examples` images, each above its generated caption."""
    n = min(int(self.cfg.num_examples), len(predictions))
    images = to_uint8(batch["image"][:n], self.cfg.mean, self.cfg.std)
    scale = max(1, 192 // images.shape[2])
    width = images.shape[2] * scale // 6  # characters per line of PIL's default font
    captions = [textwrap.fill(self.vocab.decode(t), width) for t in predictions[:n]]
    lines = max(c.count("\n") + 1 for c in captions)
    return {"captions": image_grid(images, captions, columns=4, scale=scale, caption_height=14 * lines + 2)}
