"""Prepare TFDS `mnist` offline, from the four IDX files LeCun distributes.

The result is exactly what `tfds build mnist --file_format=array_record` writes (same name,
version 3.0.1, features {'image': uint8 [28, 28, 1], 'label': ClassLabel(10)}, splits train and
test), so configs read it by its TFDS name with `tfds.data_source('mnist', data_dir=...)`.
"""
from __future__ import annotations

import gzip
import os
import struct
from typing import Dict, Iterator, Tuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification.mnist import MNIST

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str) -> np.ndarray:
  """An IDX file (optionally .gz) as a uint8 array: images [N, 28, 28] or labels [N]."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path} is not a uint8 IDX file (magic {data[:4].hex()})")
  shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape}, found {array.size} values")
  return array.reshape(shape)


class MnistFromIdx(MNIST, skip_registration=True):
  """TFDS `mnist` built from local IDX files in `idx_dir` instead of downloading them."""

  name = "mnist"

  def __init__(self, *, idx_dir: str, **kwargs):
    self.idx_dir = idx_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager
    for images, labels in IDX_FILES.values():
      for f in (images, labels):
        if not os.path.exists(os.path.join(self.idx_dir, f)):
          raise FileNotFoundError(f"MNIST IDX file {f} not found in {self.idx_dir}")
    return {split: self._generate(*files) for split, files in IDX_FILES.items()}

  def _generate(self, images_file: str, labels_file: str) -> Iterator[Tuple[int, Dict]]:
    images = read_idx(os.path.join(self.idx_dir, images_file))
    labels = read_idx(os.path.join(self.idx_dir, labels_file))
    if len(images) != len(labels):
      raise ValueError(f"{images_file} has {len(images)} images but {labels_file} {len(labels)} labels")
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": Image.fromarray(image).convert("L"), "label": int(label)}


def prepare_mnist(idx_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Writes TFDS mnist (array_record) into `data_dir` from the IDX files in `idx_dir`."""
  builder = MnistFromIdx(idx_dir=idx_dir, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return builder
