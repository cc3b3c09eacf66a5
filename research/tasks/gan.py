"""GANs (DCGAN, Radford et al. 2016): alternating D and G updates inside one jitted step.

Config: `config.model.generator` and `config.model.discriminator` are sections naming registered
modules (`name`) and their keyword arguments; `config.model.name` labels the pair. Images are
scaled to [-1, 1] (the generator ends in tanh).

Train step (one jitted, data-parallel step; the same order as the PyTorch DCGAN reference):
  1. z ~ N(0, I); fake = G(z).
  2. D update with its own Adam: loss_D = BCE(D(real), 1) + BCE(D(stop_grad(fake)), 0).
  3. G update with its own Adam against the updated D, non-saturating loss_G = BCE(D(G(z)), 1).
Both optimizer states live in the one TrainState, so GAN runs checkpoint and resume exactly.

Evaluation (no Inception network can be downloaded here): features of a classifier the
framework trained on the same data (`task.classifier_workdir`) give a Fréchet distance between
real eval images and as many generated ones, the classifier's mean confidence on generated
samples, D's real-vs-fake accuracy, and a diversity ratio (mean pairwise distance of generated
samples over that of real ones; a collapse drives it towards 0). A sample grid from fixed noise
is written at every evaluation.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from research.core.config import ConfigError
from research.core.registry import MODELS, TASKS
from research.core.state import TrainState
from research.data import preprocess
from research.tasks.base import Batch, PyTree, Sums, Task, build_registered
from research.viz.grid import image_grid

G, D = "generator", "discriminator"


class GANOptimizers(NamedTuple):
  """Two optax transformations, one per network (static part of the TrainState)."""
  generator: optax.GradientTransformation
  discriminator: optax.GradientTransformation


def _bce(logits: jax.Array, target: float) -> jax.Array:
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


def _mean_pairwise_distance(x: jax.Array) -> jax.Array:
  """Mean L2 distance between distinct rows of x [N, ...] (flattened)."""
  x = x.reshape(x.shape[0], -1).astype(jnp.float32)
  sq = jnp.sum(x * x, -1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  n = x.shape[0]
  return jnp.sum(jnp.sqrt(d2 + 1e-12) * (1 - jnp.eye(n))) / (n * (n - 1))


@TASKS.register("gan")
class GANTask(Task):
  """Unconditional image generation with a generator / discriminator pair."""

  @classmethod
  def required_runs(cls, task_config: ConfigDict) -> Dict[str, str]:
    path = task_config.get("classifier_workdir", "")
    return {"config.task.classifier_workdir": path} if path else {}

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    c = ConfigDict()
    c.image_key = "image"
    c.image_size = 0            # 0: native; else resize to image_size x image_size.
    c.channels = 0              # 0: native; 1 or 3 to convert.
    c.z_dim = 100
    c.g_learning_rate = 2e-4
    c.d_learning_rate = 2e-4
    c.b1 = 0.5
    c.b2 = 0.999
    c.num_samples = 64          # Size of the fixed-noise sample grid.
    c.classifier_workdir = ""   # A classification run on the same data, for the sample metrics.
    c.feature_layer = ""        # Its layer whose output are the features ('' : the logits).
    return c

  def build_model(self) -> nn.Module:
    model = self.config.model
    for part in (G, D):
      if part not in model:
        raise ConfigError(f"config.model.{part} is missing: the gan task needs config.model.{part}.name")
    extra = {"dtype": self.compute_dtype}
    self.generator = build_registered(MODELS, model[G], f"model.{G}", **self._accepted(model[G].name, extra))
    self.discriminator = build_registered(MODELS, model[D], f"model.{D}",
                                          **self._accepted(model[D].name, extra))
    self._classifier = None
    self._load_classifier()  # eagerly: restoring a checkpoint cannot happen inside a jit trace
    return self.generator

  @staticmethod
  def _accepted(name: str, extra: Dict[str, Any]) -> Dict[str, Any]:
    ctor = MODELS.get(name)
    fields = getattr(getattr(ctor, "fn", ctor), "__dataclass_fields__", {})
    return {k: v for k, v in extra.items() if k in fields}

  # --- data: uint8 images -> float [-1, 1] ---
  def _image(self, example: Dict[str, Any]) -> np.ndarray:
    image = preprocess.prepare_image(example[self.cfg.image_key], self.cfg.channels, int(self.cfg.image_size))
    return (image.astype(np.float32) / 127.5 - 1.0).astype(np.float32)

  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    return {"image": self._image(example)}

  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    return {"image": self._image(example)}

  # --- state ---
  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    g_rng, d_rng = jax.random.split(rng)
    z = jnp.zeros((batch["image"].shape[0], self.cfg.z_dim), jnp.float32)
    return {G: self.generator.init(g_rng, z, train=False),
            D: self.discriminator.init(d_rng, batch["image"], train=False)}

  def create_state(self, variables: PyTree, tx: optax.GradientTransformation) -> TrainState:
    del tx  # A GAN has two optimizers, built from config.task.
    txs = GANOptimizers(optax.adam(self.cfg.g_learning_rate, b1=self.cfg.b1, b2=self.cfg.b2),
                        optax.adam(self.cfg.d_learning_rate, b1=self.cfg.b1, b2=self.cfg.b2))
    params = {G: variables[G]["params"], D: variables[D]["params"]}
    model_state = {k: {c: v for c, v in variables[k].items() if c != "params"} for k in (G, D)}
    opt_state = {G: txs.generator.init(params[G]), D: txs.discriminator.init(params[D])}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=opt_state, tx=txs)

  def _run(self, module: nn.Module, params: PyTree, state: PyTree, x: jax.Array, train: bool):
    if train:
      return module.apply({"params": params, **state}, x, train=True, mutable=list(state.keys()))
    return module.apply({"params": params, **state}, x, train=False), state

  # --- the alternating step ---
  def train_step(self, state: TrainState, batch: Batch, rng: jax.Array
                 ) -> Tuple[TrainState, Dict[str, jax.Array]]:
    real = batch["image"]
    z = jax.random.normal(rng, (real.shape[0], self.cfg.z_dim), jnp.float32)
    params, ms, txs = state.params, state.model_state, state.tx
    fake, g_state = self._run(self.generator, params[G], ms[G], z, True)

    def d_loss_fn(d_params):
      real_logits, d_state = self._run(self.discriminator, d_params, ms[D], real, True)
      fake_logits, d_state = self._run(self.discriminator, d_params, d_state,
                                       jax.lax.stop_gradient(fake), True)
      loss = _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)
      return loss, (real_logits, fake_logits, d_state)

    (d_loss, (real_logits, fake_logits, d_state)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(params[D])
    d_updates, d_opt = txs.discriminator.update(d_grads, state.opt_state[D], params[D])
    d_params = optax.apply_updates(params[D], d_updates)

    def g_loss_fn(g_params):
      fake, _ = self._run(self.generator, g_params, ms[G], z, True)
      logits, new_d_state = self._run(self.discriminator, d_params, d_state, fake, True)
      return _bce(logits, 1.0), (logits, new_d_state)

    (g_loss, (g_logits, d_state)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(params[G])
    g_updates, g_opt = txs.generator.update(g_grads, state.opt_state[G], params[G])
    g_params = optax.apply_updates(params[G], g_updates)
    new_state = state.replace(step=state.step + 1, params={G: g_params, D: d_params},
                              model_state={G: g_state, D: d_state}, opt_state={G: g_opt, D: d_opt})
    metrics = {
        "loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
        "d_real": jax.nn.sigmoid(real_logits).mean(), "d_fake": jax.nn.sigmoid(fake_logits).mean(),
        "d_fake_after_update": jax.nn.sigmoid(g_logits).mean(),
    }
    return new_state, metrics

  # --- evaluation ---
  def _noise(self, index: jax.Array) -> jax.Array:
    """Fixed noise per eval example: z_i depends only on the example index i."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(1234), i))(index)
    return jax.vmap(lambda k: jax.random.normal(k, (self.cfg.z_dim,), jnp.float32))(keys)

  def _load_classifier(self):
    if self._classifier is None and self.cfg.classifier_workdir:
      from research.core.runs import load_run
      try:
        config, task, variables = load_run(self.cfg.classifier_workdir)
      except FileNotFoundError as e:
        raise FileNotFoundError(
            f"config.task.classifier_workdir: {e}. Train the classifier first, e.g. python "
            f"research-train --config configs/lenet5_digits.py --workdir {self.cfg.classifier_workdir}") from None
      self._classifier = (task, variables)
    return self._classifier

  def _features(self, images: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Classifier (features [N, F], softmax probabilities [N, C]) of [-1, 1] images."""
    task, variables = self._load_classifier()
    uint8_scale = (images.astype(jnp.float32) + 1.0) * 127.5
    if uint8_scale.shape[-1] == 3 and task.cfg.channels == 1:
      uint8_scale = uint8_scale.mean(-1, keepdims=True)
    x = (uint8_scale / 255.0 - jnp.asarray(task.cfg.mean)) / jnp.asarray(task.cfg.std)
    logits, inter = task.model.apply(variables, x, train=False, capture_intermediates=True)
    logits = logits["logits"] if isinstance(logits, dict) else logits
    if self.cfg.feature_layer:
      feats = inter["intermediates"][self.cfg.feature_layer]["__call__"][0]
    else:
      feats = logits
    return feats.reshape(feats.shape[0], -1).astype(jnp.float32), jax.nn.softmax(logits.astype(jnp.float32))

  def eval_step(self, state: TrainState, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    real, mask = batch["image"], batch["mask"]
    count = mask.sum()
    fake, _ = self._run(self.generator, state.params[G], state.model_state[G], self._noise(batch["index"]), False)
    real_logits, _ = self._run(self.discriminator, state.params[D], state.model_state[D], real, False)
    fake_logits, _ = self._run(self.discriminator, state.params[D], state.model_state[D], fake, False)
    one = jnp.ones((), jnp.float32)
    sums = {
        "d_accuracy_real": (((real_logits > 0) * mask).sum(), count),
        "d_accuracy_fake": (((fake_logits <= 0) * mask).sum(), count),
        "diversity_ratio": (_mean_pairwise_distance(fake) / _mean_pairwise_distance(real), one),
    }
    if self.cfg.classifier_workdir:
      m = mask[:, None]
      for name, images in (("real", real), ("fake", fake)):
        feats, probs = self._features(images)
        sums[f"{name}_feature_sum"] = ((feats * m).sum(0), count)
        sums[f"{name}_feature_outer"] = (jnp.einsum("ni,nj->ij", feats * m, feats), count)
        if name == "fake":
          sums["classifier_confidence"] = ((probs.max(-1) * mask).sum(), count)
          sums["fake_class_histogram"] = ((probs * m).sum(0), count)
    return sums, None

  def finalize_eval(self, sums, outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    scalars, artifacts = {}, {}
    for k, (s, c) in sums.items():
      if np.ndim(s) == 0:
        scalars[k] = float(s) / max(float(c), 1.0)
    if "real_feature_sum" in sums:
      stats = {}
      for name in ("real", "fake"):
        n = float(sums[f"{name}_feature_sum"][1])
        mu = np.asarray(sums[f"{name}_feature_sum"][0], np.float64) / n
        cov = (np.asarray(sums[f"{name}_feature_outer"][0], np.float64) - n * np.outer(mu, mu)) / (n - 1)
        stats[name] = (mu, cov)
      from research.evaluation.gan import frechet_distance  # scipy: imported only when needed
      scalars["frechet_distance"] = float(frechet_distance(*stats["real"], *stats["fake"]))
      hist = np.asarray(sums["fake_class_histogram"][0], np.float64)
      artifacts["fake_class_histogram"] = (hist / hist.sum()).tolist()
    return scalars, artifacts

  def predict(self, state: TrainState, batch: Batch) -> jax.Array:
    """The fixed-noise sample grid's images: G(z_i) for i < num_samples, in [-1, 1]."""
    n = min(self.cfg.num_samples, batch["image"].shape[0])
    fake, _ = self._run(self.generator, state.params[G], state.model_state[G],
                        self._noise(jnp.arange(n)), False)
    return fake

  def visualize(self, batch: Dict[str, np.ndarray], predictions: np.ndarray) -> Dict[str, np.ndarray]:
    images = np.clip(np.round((np.asarray(predictions, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, -1)
    return {"samples": image_grid(images, columns=8, scale=2)}
