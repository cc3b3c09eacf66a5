"""The core's configuration schema: defaults, and validation that names misspelled keys.

Every config file starts from `default_config()` and changes what it needs, so any field can be
overridden from the command line (`--config.optimizer.learning_rate=0.1`). `validate(config)`
rejects keys the core does not know, naming them, so a typo never silently falls back to a default.

The sections `model` and `task` are open: their keys are keyword arguments of the registered
model / task (`name` picks the entry), checked when the model or task is built. The helpers that
fill them from the registries (`model_config`, `task_config`) live above the core, in
`research.config_sections`: the core imports no task, model or dataset builder.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from typing import Any, Iterable

from ml_collections import ConfigDict

from research.core.errors import ConfigError

OPEN_SECTIONS = ("model", "task", "compiler_options")
RESUME_CONFIG_CHANGE = ("error", "allow")


def default_config() -> ConfigDict:
  """All fields the training core reads, with their defaults."""
  c = ConfigDict()
  c.seed = 0
  # Global batch size (across all devices and hosts); must divide by the device count.
  c.batch_size = 128
  c.eval_batch_size = 0  # 0: same as batch_size.
  # Duration: num_train_steps if > 0, else num_epochs over the training split.
  c.num_train_steps = 0
  c.num_epochs = 0.0
  c.log_every_steps = 50
  c.eval_every_steps = 0  # 0: evaluate only at the end.
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  c.dtype = "float32"  # Compute dtype of the model (params stay float32): float32, bfloat16.
  # Persistent XLA compilation cache: 'auto' is WORKDIR/../.jax_cache; '' disables it.
  c.compilation_cache_dir = "auto"
  # XLA compiler options for the train and evaluation programs (jax.jit's compiler_options), e.g.
  # xla_cpu_use_fusion_emitters=False (research.core.compile_options); keys are XLA's names.
  c.compiler_options = ConfigDict()
  # On resume, a config that changes what is computed (model, data, optimizer, ...) is an error;
  # 'allow' accepts it (the earlier config.json is kept in WORKDIR/config_history/).
  c.resume_config_change = "error"

  c.model = ConfigDict({"name": ""})
  c.task = ConfigDict({"name": "classification"})

  c.dataset = ConfigDict()
  c.dataset.name = "digits"   # A TFDS name ('mnist', 'cifar10', 'voc/2007') or built-in.
  c.dataset.data_dir = ""     # '': $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  c.dataset.train_split = "train"
  c.dataset.eval_split = "test"
  c.dataset.cache_mb = 1024   # Hold decoded splits smaller than this in memory (0: never).
  c.dataset.num_workers = -1  # Grain worker processes (0: in-process; -1: one per core unless held in memory).
  c.dataset.prefetch_batches = 2  # Batches kept on the devices ahead of the step.

  c.optimizer = ConfigDict()
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.decay = 0.9
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 0
  c.optimizer.boundaries = (0.5, 0.75)
  c.optimizer.decay_factor = 0.1
  c.optimizer.power = 0.9        # Exponent of the 'poly' schedule.
  c.optimizer.weight_decay = 0.0
  c.optimizer.weight_decay_on = "all"
  c.optimizer.grad_clip_norm = 0.0
  c.optimizer.freeze = ()

  # Looking inside a run while it trains (research/core/train_stats.py); none changes the update.
  c.monitor = ConfigDict()
  c.monitor.module_stats = True       # per top-level module weight/grad norm, update ratio: train/*
  c.monitor.weight_histograms = True  # parameter histograms to TensorBoard at each evaluation
  c.monitor.grad_histograms = True    # gradient histograms of the step before each evaluation
  c.monitor.confusion_matrix = True   # classification: the confusion matrix drawn at each evaluation

  # Fine-tuning / transfer: initial weights from another run (used only when the workdir has
  # no checkpoint of its own; resuming always wins).
  c.init_from = ConfigDict()
  c.init_from.workdir = ""     # A workdir (its latest checkpoint) or a checkpoint step directory.
  c.init_from.collections = ("params", "batch_stats")
  c.init_from.reinit = ()      # Regexes over parameter paths to keep freshly initialized (the head).
  # (regex, replacement) pairs applied in order to the other run's '/'-joined paths
  # ('params/conv1/kernel') before matching: e.g. (('^(params|batch_stats)/', r'\1/backbone/'),)
  # loads a classifier into a detector's or segmenter's backbone.
  c.init_from.rename = ()
  return c


def update_known(section: ConfigDict, overrides: dict, where: str, allow_new: bool = False) -> None:
  """Sets `overrides` in `section`; a key the section lacks is a ConfigError naming `where.key`
  (and the closest known key) unless `allow_new`."""
  for key, value in overrides.items():
    if key not in section and not allow_new:
      raise ConfigError(f"unknown config key '{where}.{key}'{suggest(key, section.keys())}")
    section[key] = value


def suggest(key: str, known: Iterable[str]) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def _check(cfg: ConfigDict, reference: ConfigDict, prefix: str) -> None:
  for key in cfg.keys():
    path = f"{prefix}{key}"
    if key not in reference:
      raise ConfigError(f"unknown config key {path!r}{suggest(key, reference.keys())}; "
                        f"known keys of {prefix.rstrip('.') or 'config'}: {', '.join(sorted(reference.keys()))}")
    value, ref = cfg[key], reference[key]
    if isinstance(ref, ConfigDict) and not (prefix == "" and key in OPEN_SECTIONS):
      if not isinstance(value, ConfigDict):
        raise ConfigError(f"config key {path!r} must be a section (ConfigDict), got {value!r}")
      _check(value, ref, path + ".")


def validate(config: ConfigDict, extra_defaults: ConfigDict | None = None) -> None:
  """Raises ConfigError naming the first key of `config` the core does not know (the `model` and
  `task` sections included: their keys are checked against the registered model's fields and the
  task's `config_defaults()`), or the first numeric field out of its range.

  `extra_defaults` adds keys a task or script defines beyond the core's (merged into the
  reference schema).
  """
  reference = default_config()
  if extra_defaults is not None:
    reference.update(extra_defaults)
  if not config.model.get("name"):
    raise ConfigError("config.model.name is empty: name a registered model")
  _check(config, reference, "")
  _check_open_sections(config)
  _check_values(config)


def _model_keys(name: str) -> Iterable[str] | None:
  """The keyword arguments the registered model `name` accepts, or None if unknown/not a dataclass."""
  import dataclasses
  from research.core.registry import MODELS
  if name not in MODELS:
    return None
  entry = MODELS.get(name)
  cls = getattr(entry, "fn", entry)
  if not dataclasses.is_dataclass(cls):
    return None
  return {f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}


def _check_open_sections(config: ConfigDict) -> None:
  """Keys of `model` (when its name is a registered model; a task that builds its own models, as
  the GAN's, checks them itself) and of `task`. The registries are filled by whoever imports the
  models and tasks (the commands, research.config_sections, a user's package); the core does not."""
  from research.core.registry import TASKS
  if config.task.name not in TASKS:
    raise ConfigError(f"config.task.name: unknown task {config.task.name!r}; known: "
                      f"{', '.join(TASKS.names())}{suggest(config.task.name, TASKS.names())}")
  sections = (("model", config.model, _model_keys(config.model.name)),
              ("task", config.task, set(TASKS.get(config.task.name).config_defaults().keys())))
  for where, section, known in sections:
    if known is None:
      continue
    for key in section.keys():
      if key != "name" and key not in known:
        raise ConfigError(f"unknown config key '{where}.{key}'{suggest(key, known)} for {where} "
                          f"{section.name!r}; known: {', '.join(sorted(known))}")


def _number(kind: type):
  def ok(value: Any) -> bool:
    if isinstance(value, bool):
      return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))
  return ok


# (dotted field, type, predicate, what the predicate requires) for every number the core reads.
_VALUE_RULES = (
    ("seed", int, lambda v: True, "an integer"),
    ("batch_size", int, lambda v: v > 0, "> 0"),
    ("eval_batch_size", int, lambda v: v >= 0, ">= 0 (0: same as batch_size)"),
    ("num_train_steps", int, lambda v: v >= 0, ">= 0"),
    ("num_epochs", float, lambda v: v >= 0, ">= 0"),
    ("log_every_steps", int, lambda v: v >= 1, ">= 1"),
    ("eval_every_steps", int, lambda v: v >= 0, ">= 1, or 0 for only at the end"),
    ("checkpoint_every_steps", int, lambda v: v >= 0, ">= 1, or 0 for only at the end and on preemption"),
    ("keep_checkpoints", int, lambda v: v >= 1, ">= 1 (a run needs a checkpoint to resume from)"),
    ("dataset.cache_mb", int, lambda v: v >= 0, ">= 0 (0: never cache)"),
    ("dataset.num_workers", int, lambda v: v >= -1, ">= 0, or -1 (one per core unless the dataset is held in memory)"),
    ("dataset.prefetch_batches", int, lambda v: v >= 1, ">= 1"),
    ("optimizer.learning_rate", float, lambda v: v >= 0, ">= 0"),
    ("optimizer.momentum", float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optimizer.b1", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.b2", float, lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optimizer.eps", float, lambda v: v > 0, "> 0"),
    ("optimizer.decay", float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("optimizer.warmup_steps", int, lambda v: v >= 0, ">= 0"),
    ("optimizer.decay_factor", float, lambda v: v > 0, "> 0"),
    ("optimizer.power", float, lambda v: v >= 0, ">= 0"),
    ("optimizer.weight_decay", float, lambda v: v >= 0, ">= 0"),
    ("optimizer.grad_clip_norm", float, lambda v: v >= 0, ">= 0 (0: no clipping)"),
)


def _check_values(config: ConfigDict) -> None:
  for path, kind, predicate, requirement in _VALUE_RULES:
    value = config
    for part in path.split("."):
      value = value[part]
    if not _number(kind)(value):
      raise ConfigError(f"config.{path} must be {'an integer' if kind is int else 'a number'}, "
                        f"got {value!r}")
    if not predicate(value):
      raise ConfigError(f"config.{path} must be {requirement}, got {value!r}")
  boundaries = tuple(config.optimizer.boundaries)
  if any(not _number(float)(b) or not 0 < b <= 1 for b in boundaries) or list(boundaries) != sorted(boundaries):
    raise ConfigError(f"config.optimizer.boundaries must be increasing fractions of the run in (0, 1], "
                      f"got {boundaries!r}")
  if config.num_train_steps == 0 and config.num_epochs == 0:
    raise ConfigError("set config.num_train_steps or config.num_epochs to a positive value")
  mode = config.get("resume_config_change", "error")  # absent from the config.json of older runs
  if mode not in RESUME_CONFIG_CHANGE:
    raise ConfigError(f"config.resume_config_change must be one of {RESUME_CONFIG_CHANGE}, got {mode!r}")


def duration_steps(config: ConfigDict, train_size: int) -> int:
  """The number of training steps: num_train_steps, or num_epochs over `train_size` examples."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if config.num_epochs > 0:
    return max(1, int(round(config.num_epochs * train_size / config.batch_size)))
  raise ConfigError("set config.num_train_steps or config.num_epochs to a positive value")


def load_python_file(path: str, kind: str = "config") -> Any:
  """The module of a plain Python file (a config or an experiment), under a name unique to its path."""
  name = f"_{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', os.path.abspath(path))}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str) -> ConfigDict:
  """get_config() of a config file."""
  return load_python_file(path, "config").get_config()
