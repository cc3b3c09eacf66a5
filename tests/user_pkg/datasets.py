"""A user's dataset: a TFDS builder generated into data_dir on first use (register_dataset)."""
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from research.data.datasets import register_dataset


@register_dataset
class UserBars(tfds.core.GeneratorBasedBuilder):
  """8x8 grey images of one bright bar, horizontal (label 0) or vertical (label 1), with noise;
  train 64 / test 32 examples, the same on every machine (seeded)."""

  name = "user_bars"
  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=2)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(64, 0), "test": self._generate_examples(32, 1)}

  def _generate_examples(self, count: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(count):
      label = i % 2
      image = rng.integers(0, 60, (8, 8), dtype=np.uint8)
      where = rng.integers(8)
      if label:
        image[:, where] = 255
      else:
        image[where, :] = 255
      yield i, {"image": Image.fromarray(image), "label": label}
