"""`mnist` (TFDS 3.0.1) from the four IDX files LeCun distributes.

Source folder: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
t10k-labels-idx1-ubyte.gz (or the same files gunzipped, without .gz).
Features: image uint8 [28, 28, 1] (PNG), label ClassLabel(10). Splits: train 60,000, test 10,000.
"""
from __future__ import annotations

import gzip
import os
import struct
from typing import Iterator

import numpy as np

from research.data.prepare import common, sources, writer

NAMES = ("mnist",)
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
HELP = ", ".join(FILES) + " (or the same gunzipped)"
IDX_FILES = {"train": FILES[:2], "test": FILES[2:]}
_SHARD = 10_000


def read_idx(path: str) -> np.ndarray:
  """An IDX file (optionally .gz) as a uint8 array: images [N, 28, 28] or labels [N]."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise sources.SourceError(f"{path} cannot be read ({e}): truncated or not gzip (download it again)") from None
  if len(data) < 4:
    raise sources.SourceError(f"{path} is not an IDX file ({len(data)} bytes)")
  zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
  if zero != 0 or dtype_code != 0x08:
    raise sources.SourceError(f"{path} is not a uint8 IDX file (magic {data[:4].hex()}, expected 00000801 "
                              "or 00000803)")
  shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise sources.SourceError(f"{path}: header says {shape}, found {array.size} values (truncated?)")
  return array.reshape(shape)


def _path(root: str, name: str, check: bool) -> str:
  if os.path.isfile(os.path.join(root, name)):
    return sources.find_file(root, name, check)
  if os.path.isfile(os.path.join(root, name[:-3])):
    return os.path.join(root, name[:-3])
  raise sources.SourceError(f"{name} not found in {root} (nor {name[:-3]}): put LeCun's four MNIST "
                            f"IDX files there ({', '.join(FILES)})")


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  jobs = []
  for split, (images_file, labels_file) in IDX_FILES.items():
    images_path, labels_path = _path(source, images_file, check), _path(source, labels_file, check)
    n = len(read_idx(labels_path))
    images = read_idx(images_path)
    if images.shape[1:] != (28, 28) or len(images) != n:
      raise sources.SourceError(f"{images_path} holds images {images.shape}, expected [{n}, 28, 28] "
                                f"to match {labels_path}")
    jobs += [writer.Job(split, (images_path, labels_path, start, min(start + _SHARD, n)),
                        (min(start + _SHARD, n) - start) * 784)
             for start in range(0, n, _SHARD)]
  return writer.Plan(common.catalog_builder(name, data_dir), generate, jobs, output_ratio=0.5)


def generate(args) -> Iterator[dict]:
  images_path, labels_path, start, stop = args
  images, labels = read_idx(images_path), read_idx(labels_path)
  for i in range(start, stop):
    yield {"image": common.png(images[i]), "label": int(labels[i])}
