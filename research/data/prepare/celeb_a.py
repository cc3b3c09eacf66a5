"""`celeb_a` (TFDS 2.1.0) from CelebA's aligned images and annotation files.

Source folder: img_align_celeba.zip (or its extracted folder img_align_celeba/),
list_eval_partition.txt, list_attr_celeba.txt, list_landmarks_align_celeba.txt and
identity_CelebA.txt (TFDS's celeb_a has the identity feature), at the top or in the Anno/ and
Eval/ folders of CelebA's distribution. The list files start with the number of images and a
header line of names (the partition and identity files have neither), then '000001.jpg v1 v2 ...'.

Features: image uint8 [218, 178, 3] (the original JPEG bytes), landmarks {lefteye_x, ...,
rightmouth_y: int64}, attributes {5_o_Clock_Shadow, ..., Young: bool (the file's 1; -1 is
False)}, identity {Identity_No: int64}. Splits from list_eval_partition.txt: train (162,770,
partition 0), validation (19,867, 1), test (19,962, 2); images in file-name order.
"""
from __future__ import annotations

import os
from typing import Iterator

from research.data.prepare import common, sources, writer

NAMES = ("celeb_a",)
LISTS = ("list_eval_partition.txt", "list_attr_celeba.txt", "list_landmarks_align_celeba.txt",
         "identity_CelebA.txt")
HELP = "img_align_celeba.zip (or img_align_celeba/), " + ", ".join(LISTS)
_SPLITS = {"0": "train", "1": "validation", "2": "test"}
_SHARD = 5000


def _list_file(source: str, name: str, check: bool) -> str:
  for folder in ("", "Anno", "Eval"):
    if os.path.isfile(os.path.join(source, folder, name)):
      return sources.find_file(os.path.join(source, folder), name, check)
  raise sources.SourceError(f"{name} not found in {source} (nor in its Anno/ or Eval/): put CelebA's "
                            f"{name} there")


def read_table(path: str, header: bool) -> tuple[list[str], dict[str, list[int]]]:
  """(column names, {file name: values}) of a CelebA list file (`header`: count and names lines)."""
  with open(path) as f:
    lines = [line.split() for line in f.read().splitlines() if line.strip()]
  names: list[str] = []
  if header:
    if len(lines) < 2 or not lines[0][0].isdigit() or int(lines[0][0]) != len(lines) - 2:
      raise sources.SourceError(f"{path}: the first line gives the number of images "
                                f"({lines[0][0] if lines else 'none'}), but {len(lines) - 2} follow: "
                                "truncated or not the publisher's file")
    names, lines = lines[1], lines[2:]
  try:
    rows = {row[0]: [int(v) for v in row[1:]] for row in lines}
  except ValueError as e:
    raise sources.SourceError(f"{path}: not a CelebA list file of integers ({e})") from None
  width = len(names) if header else len(lines[0]) - 1
  bad = [k for k, v in rows.items() if len(v) != width]
  if bad:
    raise sources.SourceError(f"{path}: rows {bad[:3]} do not have {width} values")
  return names, rows


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  partition, attr, landmarks, identity = (_list_file(source, n, check) for n in LISTS)
  _, parts = read_table(partition, header=False)
  attr_names, attrs = read_table(attr, header=True)
  landmark_names, marks = read_table(landmarks, header=True)
  _, ids = read_table(identity, header=False)
  builder = common.catalog_builder(name, data_dir)
  features = builder.info.features
  for feature, names in (("attributes", attr_names), ("landmarks", landmark_names)):
    if sorted(names) != sorted(features[feature].keys()):
      raise sources.SourceError(f"{feature} names in the source differ from TFDS's celeb_a: "
                                f"{sorted(set(names) ^ set(features[feature].keys()))}")
  first = sorted(parts)[0]
  images = sources.find(source, "img_align_celeba.zip", f"img_align_celeba/{first}", check=check)
  jobs = []
  for code, split in _SPLITS.items():
    files = sorted(f for f, v in parts.items() if str(v[0]) == code)
    for f in files:
      for table, what in ((attrs, LISTS[1]), (marks, LISTS[2]), (ids, LISTS[3])):
        if f not in table:
          raise sources.SourceError(f"{what} has no row for {f} (listed in {LISTS[0]})")
    for chunk in writer.shards(files, -(-len(files) // _SHARD)):
      items = [(f, attrs[f], marks[f], ids[f][0]) for f in chunk]
      size = sum(images.size(f"img_align_celeba/{f}") for f in chunk if f"img_align_celeba/{f}" in images)
      jobs.append(writer.Job(split, (images, attr_names, landmark_names, items), size))
  return writer.Plan(builder, generate, jobs)


def generate(args) -> Iterator[dict]:
  images, attr_names, landmark_names, items = args
  for file_name, attr, marks, identity in items:
    member = f"img_align_celeba/{file_name}"
    yield {
        "image": common.image_bytes(images.read(member), f"{images.path}:{member}"),
        "landmarks": dict(zip(landmark_names, marks)),
        "attributes": {k: v > 0 for k, v in zip(attr_names, attr)},
        "identity": {"Identity_No": identity},
    }
