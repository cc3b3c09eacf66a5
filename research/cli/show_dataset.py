"""Draw examples of a dataset with their labels: boxes, masks and captions (a PNG).

  research-show-dataset --dataset shapes --split train --num 6 --out docs/shapes_examples.png
"""
from __future__ import annotations

import os


import numpy as np
from absl import flags
from PIL import Image, ImageDraw

from research.cli.app import run_app
from research.data import datasets, preprocess
from research.viz.boxes import draw_boxes
from research.viz.masks import overlay

_DATASET = flags.DEFINE_string("dataset", "shapes", "A dataset with objects (and masks, captions).")
_SPLIT = flags.DEFINE_string("split", "train", "Split.")
_NUM = flags.DEFINE_integer("num", 6, "Number of examples.")
_SCALE = flags.DEFINE_integer("scale", 4, "Upscaling factor.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
_OUT = flags.DEFINE_string("out", "dataset_examples.png", "Output PNG.")


def render(example: dict, class_names: list, scale: int) -> Image.Image:
  """One example: image with boxes | mask overlay, and its captions below."""
  image = example["image"]
  h, w = image.shape[:2]
  objects = example.get("objects", {"bbox": np.zeros((0, 4)), "label": np.zeros((0,), int)})
  boxes = preprocess.bbox_to_pixels(objects["bbox"], h, w)
  left = draw_boxes(image, boxes, objects["label"], class_names, scale=scale, width=max(1, scale // 2))
  panels = [left]
  if "segmentation_mask" in example:
    right = overlay(image, example["segmentation_mask"][..., 0], len(class_names) + 1, alpha=0.6)
    panels.append(np.asarray(Image.fromarray(right).resize((w * scale, h * scale), Image.NEAREST)))
  top = np.concatenate(panels, axis=1)
  captions = example.get("captions", {}).get("text", [])[:3]
  tile = Image.new("RGB", (top.shape[1], top.shape[0] + 12 * len(captions) + 4), (255, 255, 255))
  tile.paste(Image.fromarray(top), (0, 0))
  draw = ImageDraw.Draw(tile)
  for i, text in enumerate(captions):
    draw.text((2, top.shape[0] + 2 + 12 * i), text, fill=(0, 0, 0))
  return tile


def main(argv):
  del argv
  builder = datasets.get_builder(_DATASET.value, _DATA_DIR.value)
  source = preprocess.ValidatedSource(builder.as_data_source(split=_SPLIT.value), _DATASET.value)
  class_names = list(builder.info.features["objects"]["label"].names)
  tiles = [render(source[i], class_names, _SCALE.value) for i in range(_NUM.value)]
  cols = min(3, len(tiles))
  rows = -(-len(tiles) // cols)
  tw, th = max(t.width for t in tiles), max(t.height for t in tiles)
  sheet = Image.new("RGB", (cols * (tw + 4), rows * (th + 4)), (220, 220, 220))
  for i, t in enumerate(tiles):
    sheet.paste(t, ((i % cols) * (tw + 4), (i // cols) * (th + 4)))
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  sheet.save(_OUT.value)
  print("wrote", _OUT.value)


def run() -> None:
  """Console entry point."""
  run_app(main)


if __name__ == "__main__":
  run()
