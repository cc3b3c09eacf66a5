"""`voc/2007` and `voc/2012` (TFDS 5.0.0, detection) from the PASCAL VOC tars.

Source folder, voc/2007: VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar; voc/2012:
VOCtrainval_11-May-2012.tar (and VOC2012test.tar for the test split, which has no annotations;
without it the split is not prepared). Or their extracted contents, VOCdevkit/VOC2007/ or
VOCdevkit/VOC2012/ in the folder.

Features, as TFDS's voc builder writes them: image (the original JPEG bytes), image/filename
('000005.jpg'), objects: Sequence of {label (ClassLabel of the 20 classes), bbox (BBox: the XML's
pixel corners divided by the image size, [ymin, xmin, ymax, xmax]), pose (frontal, rear, left,
right, unspecified), is_truncated, is_difficult}, labels and labels_no_difficult (the image's
distinct classes, sorted by name). Splits: train, validation (ImageSets/Main/train.txt, val.txt)
and test (test.txt): voc/2007 2,501 / 2,510 / 4,952 images; voc/2012 5,717 / 5,823.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from typing import Iterator

import tensorflow_datasets as tfds

from research.data.prepare import common, sources, writer

NAMES = ("voc/2007", "voc/2012")
TARS = {
    "2007": ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"),
    "2012": ("VOCtrainval_11-May-2012.tar", "VOC2012test.tar"),
}
HELP = {
    "voc/2007": "VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar (or VOCdevkit/VOC2007/ extracted)",
    "voc/2012": "VOCtrainval_11-May-2012.tar, optionally VOC2012test.tar (or VOCdevkit/VOC2012/ extracted)",
}
_SHARD = 1000


def read_ids(archive: sources.Archive, member: str) -> list[str]:
  """The image ids listed one a line in an ImageSets file."""
  return [line.strip() for line in archive.read(member).decode().splitlines() if line.strip()]


def parse_objects(xml: bytes, where: str) -> list[dict]:
  """The objects of one VOC annotation XML, as TFDS's voc builder reads them."""
  try:
    root = ElementTree.fromstring(xml)
    size = root.find("size")
    width, height = float(size.find("width").text), float(size.find("height").text)
    objects = []
    for obj in root.findall("object"):
      box = obj.find("bndbox")
      xmin, ymin, xmax, ymax = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
      objects.append({
          "label": obj.find("name").text.lower(),
          "pose": obj.find("pose").text.lower(),
          "bbox": tfds.features.BBox(ymin / height, xmin / width, ymax / height, xmax / width),
          "is_truncated": obj.find("truncated").text == "1",
          "is_difficult": obj.find("difficult").text == "1",
      })
  except (ElementTree.ParseError, AttributeError, ValueError) as e:
    raise sources.SourceError(f"{where} is not a VOC annotation (size, object/name, pose, truncated, "
                              f"difficult, bndbox): {e}") from None
  return objects


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  year = name.split("/")[1]
  trainval_tar, test_tar = TARS[year]
  main = f"VOCdevkit/VOC{year}/ImageSets/Main"
  trainval = sources.find(source, trainval_tar, f"{main}/train.txt", check=check)
  parts = [("train", trainval, "train", True), ("validation", trainval, "val", True)]
  test_given = os.path.isfile(os.path.join(source, test_tar)) or f"{main}/test.txt" in trainval
  if year == "2007" or test_given:
    test = sources.find(source, test_tar, f"{main}/test.txt", check=check)
    parts.append(("test", test, "test", year == "2007"))
  jobs = []
  for split, archive, set_name, annotated in parts:
    ids = read_ids(archive, f"{main}/{set_name}.txt")
    for chunk in writer.shards(ids, -(-len(ids) // _SHARD)):
      size = sum(archive.size(f"VOCdevkit/VOC{year}/JPEGImages/{i}.jpg") for i in chunk
                 if f"VOCdevkit/VOC{year}/JPEGImages/{i}.jpg" in archive)
      jobs.append(writer.Job(split, (archive, year, chunk, annotated), size))
  return writer.Plan(common.catalog_builder(name, data_dir), generate, jobs)


def generate(args) -> Iterator[dict]:
  archive, year, ids, annotated = args
  base = f"VOCdevkit/VOC{year}"
  for image_id in ids:
    objects = []
    if annotated:
      member = f"{base}/Annotations/{image_id}.xml"
      objects = parse_objects(archive.read(member), f"{archive.path}:{member}")
    member = f"{base}/JPEGImages/{image_id}.jpg"
    yield {
        "image": common.image_bytes(archive.read(member), f"{archive.path}:{member}"),
        "image/filename": f"{image_id}.jpg",
        "objects": objects,
        "labels": sorted({o["label"] for o in objects}),
        "labels_no_difficult": sorted({o["label"] for o in objects if not o["is_difficult"]}),
    }
