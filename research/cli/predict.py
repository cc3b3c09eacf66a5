"""Inference pictures from a trained run, DIGITS-style: predictions drawn on images, as PNG.

  research-predict --workdir runs/lenet5_digits [--split test] [--num 32] [--out preds.png]

Uses the run's config.json and latest checkpoint; what is drawn is the task's choice
(classification: predicted/true labels; detection: boxes with labels and scores; segmentation:
mask overlays; captioning: generated captions; GAN: samples).
"""
from __future__ import annotations

import os


import jax
import numpy as np
from absl import flags
from PIL import Image

import research.models  # noqa: F401
import research.tasks  # noqa: F401
from research.cli.app import run_app
from research.core.errors import ConfigError
from research.core.runs import load_run
from research.core.state import TrainState
from research.data import datasets, pipeline

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_SPLIT = flags.DEFINE_string("split", "", "Split to draw from (default: the run's eval split).")
_NUM = flags.DEFINE_integer("num", 32, "Number of examples.")
_OUT = flags.DEFINE_string("out", "", "Output directory (default: WORKDIR/predict).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  if _NUM.value < 1:
    raise ConfigError(f"--num must be at least 1, got {_NUM.value}")
  config, task, variables = load_run(_WORKDIR.value)
  split = _SPLIT.value or config.dataset.eval_split
  source = task.wrap_source(datasets.get_data_source(config.dataset.name, split, config.dataset.data_dir or None),
                           split)
  batch = next(pipeline.eval_batches(source, task.preprocess_eval, min(_NUM.value, len(source))))
  params = variables.pop("params")
  state = TrainState(step=np.int32(0), params=params, model_state=variables, opt_state=None, tx=None)
  predictions = jax.jit(task.predict)(state, batch)
  pictures = task.visualize(batch, jax.device_get(predictions))
  out = _OUT.value or os.path.join(_WORKDIR.value, "predict")
  os.makedirs(out, exist_ok=True)
  for name, picture in pictures.items():
    path = os.path.join(out, f"{split}_{name.replace('/', '_')}.png")
    Image.fromarray(np.asarray(picture)).save(path)
    print("wrote", path)


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
