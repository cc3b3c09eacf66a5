"""Evaluate a run's latest checkpoint on a split:  research-evaluate --workdir runs/X [--split test]

Prints the task's metrics (the same as the run logs at eval time) and writes them, with the task's
artifacts, to WORKDIR/evaluate_<split>_step_<N>.json.
"""
from __future__ import annotations

import json
import os


from absl import flags

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.cli.app import run_app
from research.core.errors import CheckpointError
from research.core.runs import load_config
from research.core.train import Trainer

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_SPLIT = flags.DEFINE_string("split", "", "Split (default: the run's eval split).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  config = load_config(_WORKDIR.value)
  if _SPLIT.value:
    config.dataset.eval_split = _SPLIT.value
  trainer = Trainer(config, _WORKDIR.value)
  latest = trainer.checkpointer.restore_latest(trainer.checkpoint_target())
  if latest is None:
    raise CheckpointError(f"{_WORKDIR.value} has no checkpoint to evaluate: train it first")
  step, restored, _ = latest
  scalars, artifacts = trainer.evaluate(restored["state"])
  trainer.checkpointer.close()
  artifacts.pop("images", None)
  path = os.path.join(_WORKDIR.value, f"evaluate_{config.dataset.eval_split}_step_{step}.json")
  with open(path, "w") as f:
    json.dump({"step": step, "split": config.dataset.eval_split, "metrics": scalars, **artifacts}, f, indent=1)
  for k, v in scalars.items():
    print(f"{config.dataset.eval_split}/{k}: {v:.6g}")
  print("wrote", path)


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
