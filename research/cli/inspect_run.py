"""Look inside a trained run for one input, DIGITS-style:

  research-inspect --workdir runs/lenet5_digits [--image FILE | --split test --index 7] [--out DIR]

Writes, to --out (default WORKDIR/inspect): each convolution's and pooling stage's activations,
per-layer weight statistics (table and bar chart), BatchNorm running statistics, the fraction of
zero ReLU outputs, the first convolution's kernels and, for classifiers, the top-k prediction and
a gradient saliency map; as PNGs, inspect.json, activations.npz and one self-contained index.html
(research/inspection/inspector.py, page.py). Without --image: example --index of --split
(default: example 0 of the run's eval split).
"""
from __future__ import annotations

import os

import numpy as np
from absl import flags

from research.cli.app import run_app
from research.inspection import inspector, page
from research.inspection.images import image_files
from research.inspection.predict import Run
from research.viz.grid import to_uint8

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_IMAGE = flags.DEFINE_string("image", "", "An image file (PNG, JPEG, ...) to inspect the model on.")
_SPLIT = flags.DEFINE_string("split", "", "Without --image: the dataset split (default: the run's eval split).")
_INDEX = flags.DEFINE_integer("index", 0, "Without --image: the example's index in --split.")
_OUT = flags.DEFINE_string("out", "", "Output directory (default: WORKDIR/inspect).")
flags.mark_flags_as_required(["workdir"])


def inspect_run(workdir: str, image: str = "", split: str = "", index: int = 0, out: str = "") -> str:
  """Inspects the run (module docstring); returns the path of index.html."""
  run = Run.load(workdir)
  if image:
    batch = run.batch([run.read(image_files([image])[0])])
    described = image
  else:
    split = split or run.config.dataset.eval_split
    size = len(run.source(split))
    if not 0 <= index < size:
      raise IndexError(f"--index {index} is outside split {split!r} (0..{size - 1})")
    batch = run.eval_batch([index], split)
    described = f"{run.config.dataset.name} {split}[{index}]"
  result = inspector.inspect(run, batch)
  cfg = run.task.cfg
  shown = to_uint8(batch["image"][:1], cfg.get("mean", (0.0,)), cfg.get("std", (1.0,)))[0]
  about = {"workdir": os.path.abspath(workdir), "task": run.config.task.name, "model": run.config.model.name,
           "input": described, "step": _checkpoint_step(workdir)}
  out = out or os.path.join(workdir, "inspect")
  page.write(result, np.ascontiguousarray(shown), out, about)
  return os.path.join(out, "index.html")


def _checkpoint_step(workdir: str) -> int | None:
  """The step of the run's latest checkpoint (the weights inspected)."""
  folder = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps) if steps else None


def main(argv):
  del argv
  path = inspect_run(_WORKDIR.value, _IMAGE.value, _SPLIT.value, _INDEX.value, _OUT.value)
  print("wrote", path)


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
