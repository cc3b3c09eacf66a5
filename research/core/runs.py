"""Load a finished (or running) training run: its config, its task and model, its latest weights."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

from ml_collections import ConfigDict

from research.core.checkpoint import load_variables
from research.core.errors import MissingRunError
from research.core.registry import TASKS

PyTree = Any


def load_config(workdir: str) -> ConfigDict:
  """The ConfigDict a run was started with (WORKDIR/config.json)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise MissingRunError(f"{workdir} is not a training run (no config.json): name a workdir of research-train")
  with open(path) as f:
    raw = json.load(f)

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  return ConfigDict(tuples(raw))


def load_run(workdir: str) -> Tuple[ConfigDict, Any, Dict[str, PyTree]]:
  """(config, task with its model built, variables of the latest checkpoint) of a run."""
  from research.data import datasets
  config = load_config(workdir)
  info = datasets.get_builder(config.dataset.name, config.dataset.data_dir or None).info
  task = TASKS.get(config.task.name)(config, info)
  return config, task, load_variables(workdir)
