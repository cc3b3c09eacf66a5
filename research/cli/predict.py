"""Predictions of a trained run, DIGITS-style: on your own image files, or on a dataset split.

  research-predict --workdir runs/lenet5_digits --image my_digit.png photos/ [--output json]
  research-predict --workdir runs/lenet5_digits [--split test] [--num 32]

With --image (PNG / JPEG of any size and mode, or folders of them) each file is converted to the
dataset's channels and image size and goes through the run's eval preprocessing; classification
prints and draws the top-k classes, detection draws boxes, segmentation overlays the mask with a
legend, captioning writes greedy and beam captions, a multi-task run does each of its heads, a GAN
writes samples (images unused) (research/inspection/predict.py). Without --image the task's own pictures of a split are drawn.
Pictures go to --out (default WORKDIR/predict); --output json prints the results as JSON.
"""
from __future__ import annotations

import json
import os

from absl import app, flags

from research.cli.app import run_app
from research.core.errors import ConfigError
from research.inspection import predict
from research.inspection.images import image_files

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_IMAGE = flags.DEFINE_multi_string("image", [], "Image files or folders of them (repeat the flag, or list "
                                   "them after it: --image a.png b.jpg).")
_SPLIT = flags.DEFINE_string("split", "", "Without --image: the split to draw from (default: the run's eval split).")
_NUM = flags.DEFINE_integer("num", 32, "Without --image: number of examples.")
_OUT = flags.DEFINE_string("out", "", "Output directory (default: WORKDIR/predict).")
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "Print results as text lines or as JSON.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if _NUM.value < 1:
    raise ConfigError(f"--num must be at least 1, got {_NUM.value}")
  images = list(_IMAGE.value) + list(argv[1:])  # `--image a.png b.png`: the rest are positional
  if len(argv) > 1 and not _IMAGE.value:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; image files go after --image")
  loaded = predict.Run.load(_WORKDIR.value)
  out = _OUT.value or os.path.join(_WORKDIR.value, "predict")
  if images:
    records = predict.predict_files(loaded, image_files(images), out)
    if _OUTPUT.value == "json":
      print(json.dumps(records, indent=1))
    else:
      for record in records:
        print(predict.summary_line(record))
      print("pictures in", out)
    return
  paths = predict.predict_split(loaded, _SPLIT.value, _NUM.value, out)
  if _OUTPUT.value == "json":
    print(json.dumps({"pictures": paths}, indent=1))
  else:
    for path in paths:
      print("wrote", path)


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
