"""`cifar10` and `cifar100` (TFDS 3.0.2) from the CIFAR python archives.

Source folder: cifar-10-python.tar.gz / cifar-100-python.tar.gz (md5 checked), or their extracted
folders cifar-10-batches-py/ / cifar-100-python/. Each batch is a pickle {b'data': uint8 [N, 3072]
(channel-major 32x32 planes), b'labels' (cifar10) or b'fine_labels' and b'coarse_labels'}; the
label names are in batches.meta (b'label_names') or meta (b'fine_label_names', b'coarse_label_names').
Features: id 'train_00000' / 'test_00000' (index within the split), image uint8 [32, 32, 3] (PNG),
label (10 or 100 classes), for cifar100 also coarse_label (20). Splits: train 50,000, test 10,000.
"""
from __future__ import annotations

import pickle
from typing import Iterator

import numpy as np

from research.data.prepare import common, sources, writer

NAMES = ("cifar10", "cifar100")
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
HELP = {n: f"{a} (or its extracted folder)" for n, a in ARCHIVES.items()}
_LAYOUT = {
    # top folder, {split: batch files}, meta file, {feature: (batch key, meta names key)}
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", {"label": (b"labels", b"label_names")}),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta",
                 {"label": (b"fine_labels", b"fine_label_names"),
                  "coarse_label": (b"coarse_labels", b"coarse_label_names")}),
}
_SHARD = 10_000


def load_pickle(archive: sources.Archive, member: str) -> dict:
  try:
    return pickle.loads(archive.read(member), encoding="bytes")
  except (pickle.UnpicklingError, EOFError, ValueError) as e:
    raise sources.SourceError(f"{archive.path}: {member} is not a CIFAR python pickle ({e})") from None


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  top, split_files, meta_file, keys = _LAYOUT[name]
  archive = sources.find(source, ARCHIVES[name], f"{top}/{meta_file}", check=check)
  meta = load_pickle(archive, f"{top}/{meta_file}")
  builder = common.catalog_builder(name, data_dir)
  for feature, (_, names_key) in keys.items():
    names = [n.decode() for n in meta[names_key]]
    builder.info.features[feature].names = names
  jobs = []
  for split, files in split_files.items():
    offset = 0
    for member in files:
      batch = load_pickle(archive, f"{top}/{member}")
      n = len(batch[b"data"])
      if batch[b"data"].shape != (n, 3072) or any(len(batch[k]) != n for k, _ in keys.values()):
        raise sources.SourceError(f"{archive.path}: {top}/{member} holds data {batch[b'data'].shape} with "
                                  f"{[len(batch[k]) for k, _ in keys.values()]} labels, expected [N, 3072] and N")
      jobs += [writer.Job(split, (name, archive, f"{top}/{member}", split, offset, start, min(start + _SHARD, n)),
                          3072 * (min(start + _SHARD, n) - start)) for start in range(0, n, _SHARD)]
      offset += n
  return writer.Plan(builder, generate, jobs, output_ratio=1.0)


def generate(args) -> Iterator[dict]:
  name, archive, member, split, offset, start, stop = args
  batch = load_pickle(archive, member)
  images = batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  keys = _LAYOUT[name][3]
  for i in range(start, stop):
    example = {feature: int(batch[key][i]) for feature, (key, _) in keys.items()}
    example["id"] = f"{split}_{offset + i:05d}"
    example["image"] = common.png(np.ascontiguousarray(images[i]))
    yield example
