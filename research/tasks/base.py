"""What a task supplies to the training core: model, preprocessing, loss, evaluation.

A task never imports the core loop, and the core never imports a specific task: the core calls
these hooks, which tasks (classification, detection, segmentation, captioning, GAN, multi-task)
override. The step functions are written in the global view: `batch` arrays are the global batch
(sharded over devices by the core), so means, BatchNorm statistics and sums are over all replicas.
"""
from __future__ import annotations

import abc
import difflib
import functools
import re
import types
from typing import Any, Dict, List, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from research.core.config import ConfigError
from research.core.registry import MODELS
from research.core.state import TrainState

Batch = Dict[str, jax.Array]
Sums = Dict[str, Tuple[jax.Array, jax.Array]]  # metric name -> (sum, count)
PyTree = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def build_registered(registry: Any, section: ConfigDict, where: str, **extra: Any) -> Any:
  """Builds `registry[section.name](**rest_of_section, **extra)`; bad keys name `where.key`."""
  kwargs = {k: v for k, v in section.items() if k != "name"}
  for k, v in kwargs.items():
    if isinstance(v, ConfigDict):
      kwargs[k] = v.to_dict()
    elif isinstance(v, list):
      kwargs[k] = tuple(v)
  kwargs = {**extra, **kwargs}
  try:
    ctor = registry.get(section.name)
  except KeyError as e:
    raise ConfigError(f"{where}.name: {e.args[0]}") from None
  try:
    return ctor(**kwargs)
  except TypeError as e:
    m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
    if m:
      raise ConfigError(f"unknown config key '{where}.{m.group(1)}' for {where} "
                        f"{section.name!r}") from None
    raise


def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum(values * weights) / max(sum(weights), 1) in float32: the mean over the entries of weight 1
  (an entry of weight 0 adds nothing, even a NaN or Inf value; 0 when every weight is 0).

  values [N, ...]; weights of values' shape, or of a leading part of it (per-example weights [N]
  against per-pixel values [N, H, W] weight every pixel of an example alike)."""
  values = values.astype(jnp.float32)
  weights = jnp.asarray(weights, jnp.float32)
  weights = jnp.broadcast_to(weights.reshape(weights.shape + (1,) * (values.ndim - weights.ndim)), values.shape)
  return jnp.sum(jnp.where(weights > 0, values, 0.0) * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class Task(abc.ABC):
  """Base task. Subclasses set `config_defaults()` and implement the hooks they need.

  Attributes:
    config: the whole run config.
    cfg: its `task` section, merged over `config_defaults()`.
    model: the flax module (built once, by `build_model`).
  """

  def __init__(self, config: ConfigDict, dataset_info: Any = None):
    self.config = config
    self.dataset_info = dataset_info
    defaults = self.config_defaults()
    for key in config.task.keys():
      if key != "name" and key not in defaults:
        close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown config key 'task.{key}'{hint} for task {config.task.name!r}; "
                          f"known: {', '.join(sorted(defaults.keys()))}")
    merged = ConfigDict(defaults.to_dict())
    merged.update({k: v for k, v in config.task.items() if k != "name"})
    self.cfg = merged
    self.model = self.build_model()

  @functools.cached_property
  def host_cfg(self) -> types.SimpleNamespace:
    """`cfg`'s top-level keys as a plain namespace, for host preprocessing that reads them for
    every example: a ConfigDict attribute costs ~3 us, this ~50 ns. Taken at first use (cfg does
    not change after __init__); nested sections stay dicts."""
    return types.SimpleNamespace(**self.cfg.to_dict())

  @classmethod
  def config_defaults(cls) -> ConfigDict:
    """The task's own config keys (config.task.<key>) and their defaults."""
    return ConfigDict()

  @classmethod
  def required_packages(cls, task_config: ConfigDict) -> Dict[str, str]:
    """Modules the run imports later (at evaluation), {module: pip requirement}, for the task
    section `task_config`; checked at start-up, so a missing one fails before any training."""
    return {}

  @classmethod
  def required_runs(cls, task_config: ConfigDict) -> Dict[str, str]:
    """Other runs this run reads, {config field: workdir}; checked at start-up."""
    return {}

  @property
  def compute_dtype(self) -> Any:
    try:
      return _DTYPES[self.config.dtype]
    except KeyError:
      raise ConfigError(f"config.dtype: unknown dtype {self.config.dtype!r}; "
                        f"known: {', '.join(_DTYPES)}") from None

  def model_defaults(self) -> Dict[str, Any]:
    """Keyword arguments the task fills in for the model unless the config sets them."""
    return {}

  def build_model(self) -> nn.Module:
    extra = dict(self.model_defaults())
    ctor = MODELS.get(self.config.model.name) if self.config.model.name in MODELS else None
    fields = getattr(getattr(ctor, "fn", ctor), "__dataclass_fields__", {})
    if "dtype" in fields:
      extra.setdefault("dtype", self.compute_dtype)
    extra = {k: v for k, v in extra.items() if not fields or k in fields}
    return build_registered(MODELS, self.config.model, "model", **extra)

  # --- host-side preprocessing (numpy, runs in Grain workers) ---
  def wrap_source(self, source: Any, split: str) -> Any:
    """The data source the pipelines read: e.g. a `preprocess.ValidatedSource` that maps a real
    dataset onto the canonical layout and replaces unrepairable records. Default: unchanged."""
    return source

  @abc.abstractmethod
  def preprocess_train(self, example: Dict[str, Any], rng: np.random.Generator) -> Dict[str, Any]:
    """One training example -> dict of fixed-shape numpy arrays (augmentation from `rng`)."""

  def preprocess_train_batch(self, source: Any, indices: np.ndarray, positions: np.ndarray,
                             rngs: Any) -> Optional[Dict[str, Any]]:
    """Optional vectorized `preprocess_train` of a whole batch, the same arrays bit for bit
    (research.data.pipeline.BatchPreprocess); None: one example at a time (the default)."""
    del source, indices, positions, rngs
    return None

  @abc.abstractmethod
  def preprocess_eval(self, example: Dict[str, Any]) -> Dict[str, Any]:
    """One evaluation example -> dict of fixed-shape numpy arrays (deterministic)."""

  # --- device-side steps (jitted by the core) ---
  def init_variables(self, rng: jax.Array, batch: Batch) -> PyTree:
    """Model variables {'params': ..., other collections} from a sample batch (default: the model
    called on batch['image'])."""
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "dropout": dropout_rng}, batch["image"], train=False)

  def apply_model(self, params: PyTree, model_state: PyTree, inputs: jax.Array, train: bool,
                  rng: Optional[jax.Array] = None) -> Tuple[Any, PyTree]:
    """(model output, new model_state): in training with dropout from `rng` and the mutable
    collections (BatchNorm statistics) updated; in evaluation the state is returned unchanged."""
    variables = {"params": params, **model_state}
    if train:
      return self.model.apply(variables, inputs, train=True, rngs={"dropout": rng},
                              mutable=list(model_state.keys()))
    return self.model.apply(variables, inputs, train=False), model_state

  def create_state(self, variables: PyTree, tx: optax.GradientTransformation) -> TrainState:
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(params, model_state, tx)

  def loss(self, outputs: Any, batch: Batch, example_weights: jax.Array
           ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """(scalar training loss, training metrics {name: scalar}) of the model's training `outputs`
    on `batch`: the task's per-example losses (per pixel, per word, ... where the task says so),
    averaged with `weighted_mean`, each example weighted by example_weights float32 [N].

    The one definition of the task's loss: its own `loss_fn` calls it with weights 1, and the
    multi-task task calls it for a head with weights has_<head> (examples without the head's
    labels drop out), so the two cannot diverge."""
    raise TypeError(f"{type(self).__name__} defines no loss")

  def loss_fn(self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
              ) -> Tuple[jax.Array, Tuple[Dict[str, jax.Array], PyTree]]:
    """(scalar loss, (metrics {name: scalar mean over the batch}, new model_state)): the model
    applied in training mode, then `loss` with every example weighted 1.

    Used by the default `train_step`; a task with its own `train_step` (e.g. GANs) need not
    define it. Tasks whose model takes more than the images override `train_outputs`."""
    outputs, new_state = self.train_outputs(params, model_state, batch, rng)
    num_examples = jax.tree_util.tree_leaves(batch)[0].shape[0]
    loss, metrics = self.loss(outputs, batch, jnp.ones((num_examples,), jnp.float32))
    return loss, (metrics, new_state)

  def train_outputs(self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
                    ) -> Tuple[Any, PyTree]:
    """(the model's training outputs on `batch`, new model_state); default: on batch['image']."""
    return self.apply_model(params, model_state, batch["image"], True, rng)

  def train_step(self, state: TrainState, batch: Batch, rng: jax.Array
                 ) -> Tuple[TrainState, Dict[str, jax.Array]]:
    """One update. Returns the new state and scalar metrics (must include 'loss')."""
    grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, rng)
    state = state.apply_gradients(grads, model_state)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}

  @abc.abstractmethod
  def eval_step(self, state: TrainState, batch: Batch) -> Tuple[Sums, Optional[PyTree]]:
    """Metric (sum, count) pairs over the batch, weighted by batch['mask'], and optional
    per-example outputs for `finalize_eval` (None when sums are enough)."""

  def predict(self, state: TrainState, batch: Batch) -> Optional[PyTree]:
    """Per-example predictions for a batch (jitted by the core), for pictures; None: no pictures."""
    return None

  def visualize(self, batch: Dict[str, np.ndarray], predictions: PyTree) -> Dict[str, np.ndarray]:
    """Pictures (name -> uint8 [H, W, 3]) of a host batch and its `predict` output."""
    return {}

  def finalize_eval(self, sums: Dict[str, Tuple[np.ndarray, np.ndarray]],
                    outputs: List[PyTree]) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Host side, after the whole split: (scalar metrics, artifacts to save as JSON).

    `outputs` holds the eval_step outputs of every batch, already fetched, padding included
    (each carries the batch's `mask` when the task returns it). Default: sum / count.
    """
    return {k: float(s) / max(float(c), 1.0) for k, (s, c) in sums.items()}, {}
