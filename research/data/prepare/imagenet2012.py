"""`imagenet2012` (TFDS 5.1.0: train and validation) from the ILSVRC 2012 archives, streamed.

Source folder: ILSVRC2012_img_train.tar (a tar of 1,000 class tars n01440764.tar, ...) and
ILSVRC2012_img_val.tar (50,000 JPEGs ILSVRC2012_val_00000001.JPEG ...), or the folders they were
extracted into: ILSVRC2012_img_train/ (the class tars, or one sub-folder of JPEGs per class) and
ILSVRC2012_img_val/. The validation labels are TFDS's own file
(tensorflow_datasets/datasets/imagenet2012/validation_labels.txt, synsets in image-number order);
no devkit is needed. The test split (no labels) is not prepared.

Features: image (the original JPEG bytes; the CMYK JPEGs and the PNG among the training images
re-encoded as RGB JPEG, as TFDS does), label ClassLabel(1000) in TFDS's labels.txt order (sorted
synsets), file_name 'n01440764_10026.JPEG' / 'ILSVRC2012_val_00000001.JPEG'.

Memory: a class tar is read as a stream, one JPEG at a time, from its offset in the outer tar
(located once by reading the 1,000 tar headers), so a worker holds about one image; one shard
per class (train) and per 1,000 validation images.
"""
from __future__ import annotations

import os
import re
from typing import Iterator

import tensorflow_datasets as tfds

from research.data.prepare import common, sources, writer

NAMES = ("imagenet2012",)
TRAIN, VAL = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
HELP = f"{TRAIN} and {VAL} (or the folders ILSVRC2012_img_train/, ILSVRC2012_img_val/ they were extracted into)"
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_SYNSET = re.compile(r"^n\d{8}$")
_VAL_SHARD = 1000


def validation_labels() -> list[str]:
  """The synset of validation image i + 1 at index i (TFDS's validation_labels.txt)."""
  path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
  return path.read_text().split()


def _find(source: str, archive: str, check: bool) -> sources.Archive:
  path = os.path.join(source, archive)
  folder = os.path.join(source, archive[:-4])
  if os.path.isfile(path):
    return sources.open_archive(path, check)
  if os.path.isdir(folder):
    return sources.FolderArchive(folder)
  raise sources.SourceError(f"{archive} not found in {source}: put the ILSVRC 2012 {archive} there "
                            f"(or its extracted contents in {folder})")


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  builder = common.catalog_builder(name, data_dir)
  synsets = set(builder.info.features["label"].names)
  train = _find(source, TRAIN, check)
  jobs = []
  class_files: dict[str, list[str]] = {}
  for member in train.names():
    parts = member.split("/")
    if len(parts) == 1 and member.endswith(".tar") and _SYNSET.match(member[:-4]):
      class_files.setdefault(member[:-4], []).append(member)
    elif len(parts) == 2 and _SYNSET.match(parts[0]):
      class_files.setdefault(parts[0], []).append(member)
    else:
      raise sources.SourceError(f"{train.path}: unexpected member {member}; ILSVRC2012 train holds "
                                "class tars n01440764.tar ... (or, extracted, folders n01440764/)")
  unknown = sorted(set(class_files) - synsets)
  if unknown:
    raise sources.SourceError(f"{train.path}: classes {unknown[:5]} are not ILSVRC 2012 synsets")
  for synset in sorted(class_files):
    members = class_files[synset]
    jobs.append(writer.Job("train", (train, synset, members), sum(train.size(m) for m in members)))

  val = _find(source, VAL, check)
  labels = validation_labels()
  items = []
  for member in sorted(val.names()):
    match = _VAL_NAME.match(member)
    if not match or not 1 <= int(match.group(1)) <= len(labels):
      raise sources.SourceError(f"{val.path}: unexpected member {member}; {VAL} holds "
                                "ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG")
    items.append((member, labels[int(match.group(1)) - 1]))
  for chunk in writer.shards(items, -(-len(items) // _VAL_SHARD)):
    jobs.append(writer.Job("validation", (val, None, chunk), sum(val.size(m) for m, _ in chunk)))
  return writer.Plan(builder, generate, jobs)


def generate(args) -> Iterator[dict]:
  archive, synset, members = args
  if synset is None:  # validation: [(member, synset)]
    for member, label in members:
      yield _example(archive.read(member), member, label, f"{archive.path}:{member}")
  elif len(members) == 1 and members[0].endswith(".tar"):  # a class tar, streamed
    where = f"{archive.path}:{members[0]}"
    with archive.open(members[0]) as f:
      for member, data in sources.iter_tar(f, where):
        yield _example(data, os.path.basename(member), synset, f"{where}:{member}")
  else:  # an extracted class folder
    for member in members:
      yield _example(archive.read(member), os.path.basename(member), synset, f"{archive.path}/{member}")


def _example(data: bytes, file_name: str, synset: str, where: str) -> dict:
  return {"image": common.image_bytes(data, where), "label": synset, "file_name": file_name}
