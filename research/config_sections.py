"""The `model` and `task` sections of a config, filled from the registries.

A config names its model and task by their registered names and gets every knob with its default,
so all of them show up in config.json and each can be overridden from the command line
(`--config.model.<key>=...`, `--config.task.<key>=...`):

    from research.config_sections import model_config, task_config
    config.model = model_config("resnet20", shortcut="A")
    config.task = task_config("classification", label_smoothing=0.1)

This module sits above the core (research.core imports no task, model or dataset builder):
importing it registers the built-in models and tasks. A user's own model or task is registered by
importing the module that defines it (`@MODELS.register("name")`, `@TASKS.register("name")`,
research.core.registry) before calling these.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ml_collections import ConfigDict

import research.models  # noqa: F401  (registers the built-in models)
import research.tasks  # noqa: F401  (registers the built-in tasks)
from research.core.config import update_known
from research.core.registry import MODELS, TASKS

# Model fields a config never sets: flax internals, and what the task fills in (dtype, classes).
_NOT_CONFIGURABLE = ("parent", "name", "dtype", "param_dtype", "bias_init", "num_classes")


def task_config(name: str, **overrides: Any) -> ConfigDict:
  """config.task for the registered task `name`: every key it reads (its `config_defaults()`), with
  `overrides` applied; an override the task does not know is a ConfigError naming it."""
  section = ConfigDict({"name": name})
  section.update(TASKS.get(name).config_defaults())
  update_known(section, overrides, "task")
  return section


def model_config(name: str, **overrides: Any) -> ConfigDict:
  """config.model for the registered model `name`: its dataclass fields of plain types (numbers,
  strings, bools, tuples) with their defaults (registered defaults included), then `overrides`
  (which may add keys: they are checked when the model is built)."""
  entry = MODELS.get(name)
  cls = getattr(entry, "fn", entry)
  bound = dict(getattr(entry, "defaults", {}))
  section = ConfigDict({"name": name})
  for field in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
    if field.name in _NOT_CONFIGURABLE:
      continue
    value = bound.get(field.name, field.default)
    if isinstance(value, (bool, int, float, str, tuple)):
      section[field.name] = value
  update_known(section, overrides, "model", allow_new=True)
  return section
