"""The console entry points (pyproject's [project.scripts]): `train` runs research.cli.train.run,
and so on for every command.

Each imports its command's module with CPython's cyclic garbage collector paused, then moves what
the import created into the permanent generation (`gc.freeze`) and resumes the collector. Importing
JAX, Flax, TFDS and the library creates ~240,000 objects that live as long as the process, and the
collector walks every tracked object in each full collection, one of which runs whenever the
long-lived objects have grown by a quarter. The command then runs with a young-generation
threshold of `YOUNG_THRESHOLD` allocations instead of CPython's 700: tracing JAX programs allocates
many short-lived objects (LeNet-5's default job: ~180 collections, 5 with it). Time that job spent
in collections on a 2-core AMD EPYC (`gc.callbacks`): 0.34-0.41 s as a plain import (among them a
170 ms full collection between two training steps), 0.07-0.15 s with the import paused, 0.03-0.05 s
with both. The frozen objects are freed when the process ends.
"""
from __future__ import annotations

import gc
import importlib
from types import ModuleType
from typing import Callable


# Net allocations of container objects between two young-generation collections in a command.
YOUNG_THRESHOLD = 20_000


def import_paused(module: str) -> ModuleType:
  """Imports `module` with the cyclic garbage collector paused; what it created is then frozen
  (`gc.freeze`) and the collector resumed, also when the import fails."""
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    return importlib.import_module(module)
  finally:
    gc.freeze()
    if was_enabled:
      gc.enable()


def _command(name: str) -> Callable[[], None]:
  def run() -> None:
    command = import_paused(f"research.cli.{name}")
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    command.run()
  run.__name__ = name
  run.__doc__ = f"research-{name.replace('_', '-')}: research.cli.{name}.run, imported with the collector paused."
  return run


train = _command("train")
evaluate = _command("evaluate")
predict = _command("predict")
sweep = _command("sweep")
report = _command("report")
prepare_data = _command("prepare_data")
benchmark = _command("benchmark")
show_dataset = _command("show_dataset")
import_weights = _command("import_weights")
runs = _command("runs")
inspect_run = _command("inspect_run")
