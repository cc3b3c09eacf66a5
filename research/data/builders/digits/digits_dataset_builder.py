"""The `digits` dataset: 1,797 real 8x8 handwritten digits (UCI, bundled with scikit-learn).

Images are upsampled to 28x28 uint8 grayscale (bilinear, 0..16 rescaled to 0..255) so that
MNIST models run unchanged. Fixed split: a stratified shuffle with seed 0 puts 1,437 images
in `train` and 360 in `test` (20%), the same on every machine.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

IMAGE_SIZE = 28
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Returns {"train": (images [1437,28,28,1] uint8, labels [1437]), "test": (... [360] ...)}."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  digits = load_digits()
  raw = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
  images = np.stack([
      np.asarray(Image.fromarray(im).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
      for im in raw])[..., None]
  labels = digits.target.astype(np.int64)
  idx_train, idx_test = train_test_split(
      np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels)
  return {"train": (images[idx_train], labels[idx_train]),
          "test": (images[idx_test], labels[idx_test])}


class Builder(tfds.core.GeneratorBasedBuilder):
  """scikit-learn handwritten digits at 28x28, features named as TFDS `mnist`."""

  name = "digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # bundled with scikit-learn: nothing to download
    arrays = load_digits_arrays()
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
    for i, (image, label) in enumerate(zip(images, labels)):
      # Without TensorFlow, Image features must be fed PIL images (numpy needs TF to encode).
      yield i, {"image": Image.fromarray(image[..., 0], mode="L"), "label": int(label)}
