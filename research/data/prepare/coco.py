"""`coco/2017` (detection) and `coco_captions` (COCO 2014 with Karpathy & Li's splits), TFDS 1.1.0.

Source folder, coco/2017: train2017.zip, val2017.zip, annotations_trainval2017.zip, and for the
test split (optional, images only) test2017.zip with image_info_test2017.zip.
coco_captions: train2014.zip, val2014.zip, annotations_trainval2014.zip and Karpathy's
dataset_coco.json (or caption_datasets.zip, which holds it). Each archive may be replaced by its
extracted contents (train2017/, annotations/, ...).

Features, as TFDS's coco builder writes them: image (the original JPEG bytes), image/filename
('000000000009.jpg'), image/id, objects: Sequence of {id, area (int), bbox (BBox, normalized
[ymin, xmin, ymax, xmax] from COCO's [x, y, width, height] pixels), label (ClassLabel(80), names
in the annotation file's category order), is_crowd}; every annotation of the image, by id.
coco_captions adds captions: Sequence of {text: Karpathy's 'raw' sentence, id: its 'sentid'}.
Splits: coco/2017 train (118,287), validation (5,000), test (40,670); coco_captions train
(82,783, from train2014), val, test (5,000 each) and restval (30,504), from val2014, as listed in
dataset_coco.json. Images in id order.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Iterator, Optional

import tensorflow_datasets as tfds

from research.data.prepare import common, sources, writer

NAMES = ("coco/2017", "coco_captions")
HELP = {
    "coco/2017": "train2017.zip, val2017.zip, annotations_trainval2017.zip; for the test split also "
                 "test2017.zip, image_info_test2017.zip (or their extracted folders)",
    "coco_captions": "train2014.zip, val2014.zip, annotations_trainval2014.zip, dataset_coco.json "
                     "(or caption_datasets.zip; archives may be extracted)",
}
_SHARD = 1000


def _load_json(archive: sources.Archive, member: str) -> dict:
  try:
    return json.loads(archive.read(member))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise sources.SourceError(f"{archive.path}: {member} is not valid JSON ({e}); truncated?") from None


class Annotations:
  """One COCO annotation file: categories in file order, images by id, instances per image by id."""

  def __init__(self, archive: sources.Archive, member: str):
    data = _load_json(archive, member)
    for key in ("images", "categories"):
      if key not in data:
        raise sources.SourceError(f"{archive.path}: {member} has no {key!r}: not a COCO annotation file")
    self.categories = [c["name"] for c in data["categories"]]
    id2name = {c["id"]: c["name"] for c in data["categories"]}
    self.images = sorted(((i["file_name"], i["id"], i["width"], i["height"]) for i in data["images"]),
                         key=lambda i: i[1])
    self.objects = collections.defaultdict(list)
    for a in sorted(data.get("annotations", []), key=lambda a: a["id"]):
      self.objects[a["image_id"]].append(
          (a["id"], int(a["area"]), tuple(a["bbox"]), id2name[a["category_id"]], bool(a["iscrowd"])))


def _jobs(split: str, images: sources.Archive, folder: str, annotations: Annotations,
          captions: Optional[dict] = None) -> list[writer.Job]:
  items = []
  for image in annotations.images:
    if captions is not None and image[0] not in captions:
      continue
    items.append((image, annotations.objects.get(image[1], []),
                  None if captions is None else captions[image[0]]))
  if items and f"{folder}/{items[0][0][0]}" not in images:
    raise images.missing(f"{folder}/{items[0][0][0]}")
  return [writer.Job(split, (images, folder, chunk),
                     sum(images.size(f"{folder}/{i[0][0]}") for i in chunk if f"{folder}/{i[0][0]}" in images))
          for chunk in writer.shards(items, -(-len(items) // _SHARD))]


def _images(source: str, folder: str, check: bool) -> sources.Archive:
  path = os.path.join(source, folder + ".zip")
  if os.path.isfile(path):
    return sources.open_archive(path, check)
  if os.path.isdir(os.path.join(source, folder)):
    return sources.FolderArchive(source)
  raise sources.SourceError(f"{folder}.zip not found in {source}: put COCO's {folder}.zip there "
                            f"(or its extracted folder {folder}/)")


def _karpathy(source: str) -> dict[str, dict[str, list]]:
  """{split: {image file name: [(sentid, raw)]}} from dataset_coco.json."""
  path = os.path.join(source, "dataset_coco.json")
  if os.path.isfile(path):
    archive, member = sources.FolderArchive(source), "dataset_coco.json"
  elif os.path.isfile(os.path.join(source, "caption_datasets.zip")):
    archive, member = sources.open_archive(os.path.join(source, "caption_datasets.zip")), "dataset_coco.json"
  else:
    raise sources.SourceError(f"dataset_coco.json not found in {source}: put Karpathy & Li's "
                              "dataset_coco.json (from caption_datasets.zip) there")
  data = _load_json(archive, member)
  splits: dict[str, dict] = collections.defaultdict(dict)
  try:
    for image in data["images"]:
      splits[image["split"]][image["filename"]] = [(s["sentid"], s["raw"]) for s in image["sentences"]]
  except (KeyError, TypeError) as e:
    raise sources.SourceError(f"{archive.path}: {member} is not Karpathy's dataset_coco.json "
                              f"(missing {e})") from None
  return splits


def plan(name: str, source: str, data_dir: str, check: bool = True) -> writer.Plan:
  builder = common.catalog_builder(name, data_dir)
  jobs = []
  if name == "coco/2017":
    ann = sources.find(source, "annotations_trainval2017.zip", "annotations/instances_val2017.json", check=check)
    for split, folder in (("train", "train2017"), ("validation", "val2017")):
      annotations = Annotations(ann, f"annotations/instances_{folder}.json")
      jobs += _jobs(split, _images(source, folder, check), folder, annotations)
    categories = annotations.categories
    have = [os.path.exists(os.path.join(source, f)) for f in ("test2017.zip", "image_info_test2017.zip")]
    have_dirs = [os.path.isdir(os.path.join(source, "test2017")),
                 os.path.isfile(os.path.join(source, "annotations", "image_info_test2017.json"))]
    if any(have) or all(have_dirs):
      info = sources.find(source, "image_info_test2017.zip", "annotations/image_info_test2017.json", check=check)
      jobs += _jobs("test", _images(source, "test2017", check), "test2017",
                    Annotations(info, "annotations/image_info_test2017.json"))
  else:
    ann = sources.find(source, "annotations_trainval2014.zip", "annotations/instances_val2014.json", check=check)
    karpathy = _karpathy(source)
    train = Annotations(ann, "annotations/instances_train2014.json")
    val = Annotations(ann, "annotations/instances_val2014.json")
    categories = val.categories
    jobs += _jobs("train", _images(source, "train2014", check), "train2014", train, karpathy["train"])
    val_images = _images(source, "val2014", check)
    for split in ("val", "test", "restval"):
      jobs += _jobs(split, val_images, "val2014", val, karpathy[split])
  builder.info.features["objects"]["label"].names = categories
  return writer.Plan(builder, generate, jobs)


def generate(args) -> Iterator[dict]:
  images, folder, items = args
  for (file_name, image_id, width, height), objects, captions in items:
    member = f"{folder}/{file_name}"
    example = {
        "image": common.image_bytes(images.read(member), f"{images.path}:{member}"),
        "image/filename": file_name,
        "image/id": image_id,
        "objects": [{
            "id": object_id,
            "area": area,
            "bbox": tfds.features.BBox(ymin=y / height, xmin=x / width, ymax=(y + h) / height,
                                       xmax=(x + w) / width),
            "label": label,
            "is_crowd": crowd,
        } for object_id, area, (x, y, w, h), label, crowd in objects],
    }
    if captions is not None:
      example["captions"] = [{"id": sentid, "text": raw} for sentid, raw in captions]
    yield example
