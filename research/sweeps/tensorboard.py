"""TensorBoard HParams summaries of sweep trials, so the HParams tab compares them.

Each finished trial gets WORKDIR/tensorboard/hparams/ (a TensorBoard run of its own): the trial's
swept values as hyperparameters and its final metrics (results.json) as scalars at the final step.
Written again (replacing the old file) whenever the sweep or the report sees the trial finished.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

from research.core.metrics import import_tensorboardx
from research.sweeps.experiment import format_value


def hparam_value(value: Any) -> Any:
  """A value TensorBoard's HParams plugin takes: bool, int, float or str (tuples as text)."""
  return value if isinstance(value, (bool, int, float, str)) else format_value(value)


def write_hparams(workdir: str, swept: Mapping[str, Any], results: Mapping[str, Any]) -> str:
  """Writes the HParams summary of one finished trial; returns its directory.

  swept: dotted config key -> value; results: {'step': N, '<split>/<metric>': value, ...}.
  """
  tensorboardx = import_tensorboardx()

  metrics = {k: float(v) for k, v in results.items()
             if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
  path = os.path.join(workdir, "tensorboard", "hparams")
  shutil.rmtree(path, ignore_errors=True)
  experiment, start, end = tensorboardx.summary.hparams({k: hparam_value(v) for k, v in swept.items()}, metrics)
  writer = tensorboardx.SummaryWriter(path)
  try:
    for summary in (experiment, start, end):
      writer.file_writer.add_summary(summary)
    step = int(results.get("step", 0))
    for key, value in metrics.items():
      writer.add_scalar(key, value, step)
  finally:
    writer.close()
  return path
