"""The console entry points (pyproject's [project.scripts]): `train` runs research.cli.train.run,
and so on for every command.

Each imports its command's module with CPython's cyclic garbage collector paused, then moves what
the import created into the permanent generation (`gc.freeze`) and resumes the collector. Importing
JAX, Flax, TFDS and the library creates ~240,000 objects that live as long as the process, and the
collector walks every tracked object in each full collection, one of which runs whenever the
long-lived objects have grown by a quarter: LeNet-5's default job spent 0.3-0.45 s in collections
(its start-up and one 170 ms collection among its training steps, on a 2-core AMD EPYC), and
0.09-0.12 s with this launcher. Nothing else changes: the collector runs as usual once the command
starts, and the frozen objects are freed when the process ends.
"""
from __future__ import annotations

import gc
import importlib
from types import ModuleType
from typing import Callable


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
    import_paused(f"research.cli.{name}").run()
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
