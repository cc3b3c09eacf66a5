"""Start-up checks: before any training, everything the run will need later is present.

Evaluation packages (e.g. pycocotools for COCO mAP), other runs the task reads (the classifier
of a GAN's sample metrics) and the dataset's splits: a run that would fail at its first
evaluation, after hours of training, fails here instead, with the command that fixes it.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from ml_collections import ConfigDict

from research.core.errors import ConfigError, MissingPackageError, MissingRunError


def check_packages(task_cls: Any, config: ConfigDict) -> None:
  """Raises MissingPackageError naming the pip command for a module the task needs later."""
  missing = {module: requirement for module, requirement in task_cls.required_packages(config.task).items()
             if importlib.util.find_spec(module) is None}
  if missing:
    raise MissingPackageError(
        f"task {config.task.name!r} evaluates with {', '.join(missing)}, which is not installed: "
        f"pip install {' '.join(repr(r) for r in missing.values())}  (or pip install -e '.[eval]')")


def has_checkpoint(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds a step folder."""
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(d.isdigit() for d in os.listdir(folder))


def check_runs(task_cls: Any, config: ConfigDict) -> None:
  """Raises MissingRunError when a run the task reads has no config.json or no checkpoint."""
  for field, workdir in task_cls.required_runs(config.task).items():
    if not (os.path.exists(os.path.join(workdir, "config.json")) and has_checkpoint(workdir)):
      raise MissingRunError(
          f"{field}: {workdir} is not a trained run (it needs config.json and a checkpoint). Train "
          f"it first, e.g. research-train --config lenet5_digits --workdir {workdir} "
          f"--config.dataset.name={config.dataset.name}")


def check_splits(info: Any, config: ConfigDict) -> None:
  """Raises ConfigError when config.dataset.train_split / eval_split are not splits of the dataset."""
  splits = getattr(info, "splits", None)
  if splits is None:
    return
  names = list(splits.keys())
  for field in ("train_split", "eval_split"):
    split = config.dataset[field]
    if any(part.split("[")[0] not in names for part in split.split("+")):
      raise ConfigError(f"config.dataset.{field}: dataset {config.dataset.name!r} has no split "
                        f"{split!r}; it has: {', '.join(names)}")
