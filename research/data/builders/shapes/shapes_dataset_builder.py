"""The `shapes` dataset: procedural scenes of coloured squares, circles and triangles.

Every example carries what classification, detection, semantic segmentation and captioning need,
under the feature names of the real datasets (coco, voc, coco_captions), so a task's preprocessing
runs on both. Scenes come from `research.data.shapes_scene` (its docstring has the generation and
occlusion rules); example i of a split is `generate_scene((SPLIT_SEEDS[split], i), ...)`, so every
split is the same on every machine and every run.

Configs: `shapes/64` (default) and `shapes/128`: 64x64 or 128x128 images, 1 to 4 objects.
Splits: train 2,000, validation 300, test 300 examples (both configs).

Features (N objects, K = 5 captions, S = image size):
  image               Image uint8 [S, S, 3], png
  image/id            int64; SPLIT_ID_OFFSETS[split] + index in the split (unique across splits)
  label               ClassLabel (square, circle, triangle): the object with the largest visible area
  objects             Sequence of N (in drawing order; later objects occlude earlier ones):
    bbox              BBoxFeature float32 [N, 4]: [ymin, xmin, ymax, xmax] normalized to [0, 1],
                      tightly bounding the object's visible pixels (pixel edges / S)
    label             ClassLabel [N], the same names as `label`
    area              int64 [N], visible pixels
    is_crowd          bool [N], always False
  segmentation_mask   Image uint8 [S, S, 1], png; 0 background, class index + 1 on objects
  captions            Sequence of K: text (Text), id (int64; image/id * K + caption index)
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from research.data import shapes_scene

SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_ID_OFFSETS = {"train": 0, "validation": 1_000_000, "test": 2_000_000}
DEFAULT_SPLIT_SIZES = (("train", 2000), ("validation", 300), ("test", 300))


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """image_size: S; max_objects: objects per scene are 1..max_objects;
  split_sizes: ((split name, number of examples), ...), a subset of SPLIT_SEEDS."""
  image_size: int = 64
  max_objects: int = 4
  split_sizes: tuple[tuple[str, int], ...] = DEFAULT_SPLIT_SIZES


class Builder(tfds.core.GeneratorBasedBuilder):
  """Procedural multi-task scenes; features named as in coco / voc / coco_captions."""

  name = "shapes"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      ShapesConfig(name="64", description="64x64 images, 1 to 4 objects.", image_size=64),
      ShapesConfig(name="128", description="128x128 images, 1 to 4 objects.", image_size=128),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    classes = tfds.features.ClassLabel(names=shapes_scene.CLASS_NAMES)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "image/id": np.int64,
            "label": classes,
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=shapes_scene.CLASS_NAMES),
                "area": np.int64,
                "is_crowd": np.bool_,
            }),
            "segmentation_mask": tfds.features.Image(shape=(size, size, 1), encoding_format="png"),
            "captions": tfds.features.Sequence({"text": tfds.features.Text(), "id": np.int64}),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # generated: nothing to download
    return {split: self._generate_examples(split, n) for split, n in self.builder_config.split_sizes}

  def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
    cfg = self.builder_config
    for index in range(num_examples):
      scene = shapes_scene.generate_scene(
          (SPLIT_SEEDS[split], index), image_size=cfg.image_size, max_objects=cfg.max_objects)
      image_id = SPLIT_ID_OFFSETS[split] + index
      x0, y0, x1, y1 = (scene.boxes / cfg.image_size).T
      # Without TensorFlow, Image features must be fed PIL images (numpy needs TF to encode).
      yield index, {
          "image": Image.fromarray(scene.image, mode="RGB"),
          "image/id": image_id,
          "label": scene.label,
          "objects": {
              "bbox": np.stack([y0, x0, y1, x1], axis=-1),
              "label": scene.labels,
              "area": scene.areas,
              "is_crowd": np.zeros(len(scene.labels), np.bool_),
          },
          "segmentation_mask": Image.fromarray(scene.class_mask, mode="L"),
          "captions": {
              "text": list(scene.captions),
              "id": [image_id * shapes_scene.NUM_CAPTIONS + k for k in range(len(scene.captions))],
          },
      }
