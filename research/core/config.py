"""The core's configuration schema: defaults, and validation that names misspelled keys.

Every config file starts from `default_config()` and changes what it needs, so any field can be
overridden from the command line (`--config.optimizer.learning_rate=0.1`). `validate(config)`
rejects keys the core does not know, naming them, so a typo never silently falls back to a default.

The sections `model` and `task` are open: their keys are keyword arguments of the registered
model / task (`name` picks the entry), checked when the model or task is built.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from typing import Any, Iterable

from ml_collections import ConfigDict

OPEN_SECTIONS = ("model", "task")


class ConfigError(ValueError):
  """A configuration problem; the message names the offending key."""


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


def task_config(name: str, **overrides: Any) -> ConfigDict:
  """config.task for the registered task `name`: every key it reads, with defaults, so each can be
  overridden from the command line (--config.task.<key>=...)."""
  from research.core.registry import TASKS
  import research.tasks  # noqa: F401  (registers the tasks)
  section = ConfigDict({"name": name})
  section.update(TASKS.get(name).config_defaults())
  _update_known(section, overrides, "task")
  return section


_NOT_CONFIGURABLE = ("parent", "name", "dtype", "param_dtype", "bias_init")


def model_config(name: str, **overrides: Any) -> ConfigDict:
  """config.model for the registered model `name`: its fields of plain types (numbers, strings,
  bools, tuples) with their defaults (registered defaults included), so each can be overridden."""
  import dataclasses
  from research.core.registry import MODELS
  import research.models  # noqa: F401  (registers the models)
  entry = MODELS.get(name)
  cls = getattr(entry, "fn", entry)
  bound = dict(getattr(entry, "defaults", {}))
  section = ConfigDict({"name": name})
  for field in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
    if field.name in _NOT_CONFIGURABLE or field.name in ("num_classes",):
      continue
    value = bound.get(field.name, field.default)
    if isinstance(value, (bool, int, float, str, tuple)):
      section[field.name] = value
  _update_known(section, overrides, "model", allow_new=True)
  return section


def _update_known(section: ConfigDict, overrides: dict, where: str, allow_new: bool = False) -> None:
  for key, value in overrides.items():
    if key not in section and not allow_new:
      raise ConfigError(f"unknown config key '{where}.{key}'{_suggest(key, section.keys())}")
    section[key] = value


def _suggest(key: str, known: Iterable[str]) -> str:
  close = difflib.get_close_matches(key, list(known), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def _check(cfg: ConfigDict, reference: ConfigDict, prefix: str) -> None:
  for key in cfg.keys():
    path = f"{prefix}{key}"
    if key not in reference:
      raise ConfigError(f"unknown config key {path!r}{_suggest(key, reference.keys())}; "
                        f"known keys of {prefix.rstrip('.') or 'config'}: {', '.join(sorted(reference.keys()))}")
    value, ref = cfg[key], reference[key]
    if isinstance(ref, ConfigDict) and not (prefix == "" and key in OPEN_SECTIONS):
      if not isinstance(value, ConfigDict):
        raise ConfigError(f"config key {path!r} must be a section (ConfigDict), got {value!r}")
      _check(value, ref, path + ".")


def validate(config: ConfigDict, extra_defaults: ConfigDict | None = None) -> None:
  """Raises ConfigError naming the first key of `config` the core does not know.

  `extra_defaults` adds keys a task or script defines beyond the core's (merged into the
  reference schema).
  """
  reference = default_config()
  if extra_defaults is not None:
    reference.update(extra_defaults)
  if not config.model.get("name"):
    raise ConfigError("config.model.name is empty: name a registered model")
  _check(config, reference, "")


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
