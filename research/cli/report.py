"""Report of a sweep:  research-report experiments/X.py [--sweep_dir=DIR] [--out_dir=DIR]

Writes report.md and report.csv (every trial's config differences and final metrics, the best
trial per metric, the mean over seeds, the baseline expected vs reached) and PNG plots
(curves.png: learning curves of all trials; hparams.png: final metric vs each hyperparameter) to
--out_dir (default: the sweep directory, runs/sweeps/<experiment name>), and prints report.md.
"""
from __future__ import annotations

import os
from typing import List


from absl import app, flags

from research.cli.app import run_app
from research.sweeps import load_experiment
from research.sweeps.local import SweepDir
from research.sweeps.report import write_report

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Sweep directory (default runs/sweeps/<name>).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the report goes (default: the sweep dir).")


def main(argv: List[str]) -> None:
  if len(argv) != 2:
    raise app.UsageError("usage: report.py EXPERIMENT_FILE [--sweep_dir=DIR] [--out_dir=DIR]")
  experiment = load_experiment(argv[1])
  sweep = SweepDir(_SWEEP_DIR.value or os.path.join("runs", "sweeps", experiment.name))
  paths = write_report(experiment, sweep, _OUT_DIR.value)
  with open(paths["markdown"]) as f:
    print(f.read())
  print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
