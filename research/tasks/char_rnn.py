"""Character-level language modelling (char-RNN): next-character cross-entropy, bits per character.

Data: a text dataset (research.data.text; config.dataset.name = 'text', data_dir = the file) whose
splits are one long string each. The character vocabulary is built from the training text;
`wrap_source` cuts a split into windows of `seq_length + 1` characters, one every `stride`.

Batch layout: 'inputs' int32 [N, T] and 'targets' int32 [N, T] (the same window shifted by one
character), T = seq_length; at evaluation also the core's 'mask' [N]. Models map inputs to
logits [N, T, V] (research.models.captioning.char_rnn).

Metrics: loss (nats per character) and bits_per_character (= loss / ln 2), against the
test text's unigram entropy (bits per character of the best context-free model, `unigram_entropy`):
a model that learned anything from context is below it. Each window starts from a zero LSTM
state, so its first characters are predicted without context (a slight handicap compared with
char-rnn, which carries the state across batches).

Samples: `sample_text` (temperature sampling after a priming text); at every evaluation `predict`
samples `num_samples` texts and `visualize` draws them as a picture.
"""
from __future__ import annotations

import functools
import math
import textwrap
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict
from PIL import Image, ImageDraw

from research.core.registry import TASKS
from research.data import datasets
from research.data.text import CharSequences, CharVocabulary, unigram_entropy_bits
from research.models.captioning import decoding
from research.tasks.base import Batch, PyTree, Sums, Task, weighted_mean


@TASKS.register("char_rnn")
class CharRNNTask(Task):
  """Predict the next character of a text."""

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.seq_length = 128       # Characters per training sequence (the truncated-BPTT length).
    c.stride = 0             # Characters between sequence starts; 0: seq_length (no overlap).
    c.prime = ""             # Text that samples continue; '': the training text's first character.
    c.temperature = 0.8      # Sampling temperature (> 0): < 1 safer, > 1 more surprising.
    c.sample_length = 400    # Characters per sample.
    c.num_samples = 2        # Samples drawn at each evaluation.
    return c

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    self.unigram_entropy: Optional[float] = None
    super().__init__(config, dataset_info)

  @functools.cached_property
  def train_text(self) -> str:
    ds = self.config.dataset
    return datasets.get_data_source(ds.name, ds.train_split, ds.data_dir or None)[0]["text"]

  @functools.cached_property
  def vocab(self) -> CharVocabulary:
    return CharVocabulary(self.train_text)

  def model_defaults(self) -> Dict[str, Any]:
    return {"vocab_size": len(self.vocab)}

  # --- host-side data ---
  def wrap_source(self, source: Any, split: str) -> Any:
    text = source[0]["text"]
    if split == self.config.dataset.eval_split:
      self.unigram_entropy = unigram_entropy_bits(text)
    length = int(self.cfg.seq_length)
    return CharSequences(self.vocab.encode(text), length + 1, int(self.cfg.stride) or length)

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    ids = example["ids"]
    return {"inputs": ids[:-1], "targets": ids[1:]}

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    return self.preprocess_eval(example)

  # --- device-side steps ---
  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["inputs"], train=False)

  def train_outputs(self, params, model_state, batch: Batch, rng: jax.Array):
    return self.apply_model(params, model_state, batch["inputs"], True, rng)

  def loss(self, outputs: jax.Array, batch: Batch, example_weights: jax.Array):
    """Cross-entropy per character of the logits [N, T, V] against batch['targets'] int [N, T].
    Metric: 'bits_per_character' (the loss in bits)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["targets"])
    loss = weighted_mean(ce, example_weights)
    return loss, {"bits_per_character": loss / math.log(2)}

  def eval_step(self, state, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    logits, _ = self.apply_model(state.params, state.model_state, batch["inputs"], False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    mask = batch["mask"]
    return {"loss": (jnp.sum(ce.sum(-1) * mask), jnp.sum(mask) * ce.shape[1])}, None

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    loss = float(sums["loss"][0]) / max(float(sums["loss"][1]), 1.0)
    scalars = {"loss": loss, "bits_per_character": loss / math.log(2)}
    if self.unigram_entropy is not None:
      scalars["unigram_entropy"] = self.unigram_entropy
    return scalars, {}

  # --- samples ---
  def sample(self, variables: PyTree, rng: jax.Array, num_samples: int) -> jax.Array:
    """int32 [num_samples, sample_length] characters continuing the priming text (jittable)."""
    prime = self.vocab.encode(self.cfg.prime or self.train_text[0])
    prime = jnp.tile(jnp.asarray(prime)[None], (num_samples, 1))
    carry, _ = self.model.apply(variables, prime[:, :-1], method="prime")
    step = lambda c, t: self.model.apply(variables, c, t, method="decode_step")  # noqa: E731
    return decoding.sample(step, carry, prime[:, -1], int(self.cfg.sample_length), rng,
                           float(self.cfg.temperature))

  def predict(self, state, batch: Batch) -> jax.Array:
    """`num_samples` samples (the batch is not used; a fixed seed, so they depend on the weights only)."""
    variables = {"params": state.params, **state.model_state}
    return self.sample(variables, jax.random.PRNGKey(self.config.seed), int(self.cfg.num_samples))

  def visualize(self, batch: Dict[str, np.ndarray], predictions: np.ndarray) -> Dict[str, np.ndarray]:
    """The samples as text on a dark picture, 100 characters a line."""
    prime = self.cfg.prime or self.train_text[0]
    lines: List[str] = []
    for ids in predictions:
      for paragraph in (prime + self.vocab.decode(ids)).splitlines():
        lines += textwrap.wrap(paragraph, 100, replace_whitespace=False) or [""]
      lines.append("-" * 100)
    canvas = Image.new("RGB", (6 * 100 + 8, 12 * len(lines) + 8), (30, 30, 30))
    ImageDraw.Draw(canvas).multiline_text((4, 4), "\n".join(lines), fill=(230, 230, 230), spacing=2)
    return {"samples": np.asarray(canvas)}


def sample_text(workdir: str, prime: str = "", length: int = 400, temperature: float = 0.8,
                seed: int = 0) -> str:
  """A sample from a trained char-RNN run (its latest checkpoint): `prime` and its continuation."""
  from research.core.runs import load_run
  config, task, variables = load_run(workdir)
  task.cfg.prime, task.cfg.sample_length, task.cfg.temperature = prime, length, temperature
  ids = jax.jit(lambda v, r: task.sample(v, r, 1))(variables, jax.random.PRNGKey(seed))
  return (prime or task.train_text[0]) + task.vocab.decode(np.asarray(ids)[0])
