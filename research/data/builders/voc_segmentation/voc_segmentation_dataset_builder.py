"""The `voc2012_segmentation` dataset: PASCAL VOC 2012 semantic segmentation, built from local files.

TFDS's `voc/2012` has boxes but no segmentation masks, so this builder reads a VOCdevkit the user
has (never the network):

  research-prepare-data voc2012_segmentation --voc_dir DIR --data_dir DATA_DIR

DIR (the TFDS manual_dir) holds VOCdevkit/VOC2012 (DIR may also be VOCdevkit or VOC2012 itself):
  JPEGImages/<id>.jpg                        the images (VOCtrainval_11-May-2012.tar)
  SegmentationClass/<id>.png                 masks of the train and val images, palettized
  ImageSets/Segmentation/{train,val}.txt     one <id> a line
  SegmentationClassAug/<id>.png              optional: the SBD-augmented masks (greyscale PNGs
                                             of class indices, as distributed with DeepLab)

Splits:
  train       ImageSets/Segmentation/train.txt (1,464 images), masks from SegmentationClass
  val         ImageSets/Segmentation/val.txt (1,449 images), masks from SegmentationClass
  train_aug   only when SegmentationClassAug exists: every image it has a mask for, less the val
              images (10,582 with the usual release), masks from SegmentationClassAug
There is no test split: VOC 2012 test masks are not public (score on the evaluation server).

Features (H, W: the image's own size, at most 500 x 500 in VOC 2012):
  image               Image uint8 [H, W, 3]: the original JPEG bytes (decoding gives exactly
                      what PIL gives for the file); a non-RGB JPEG is converted to RGB
  image/id            int64: the id's digits, '2007_000032' -> 2007000032 (as for voc/2012)
  image/filename      Text: '<id>.jpg'
  segmentation_mask   Image uint8 [H, W, 1], png: class index 0 (background) .. 20, and 255 on
                      object boundaries and 'difficult' regions (ignored by loss and mIoU)
Metadata: 'class_names', the 21 names of the mask values 0..20 (CLASS_NAMES).
"""
from __future__ import annotations

import os
import re
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
IGNORE_LABEL = 255
_VALID_VALUES = np.array(list(range(len(CLASS_NAMES))) + [IGNORE_LABEL], np.uint8)
_ID = re.compile(r"^\d{4}_\d{6}$")


def find_voc2012(root: str) -> str:
  """The VOC2012 directory under `root` (root/VOCdevkit/VOC2012, root/VOC2012 or root itself)."""
  for candidate in (os.path.join(root, "VOCdevkit", "VOC2012"), os.path.join(root, "VOC2012"), root):
    if os.path.isdir(os.path.join(candidate, "JPEGImages")):
      return candidate
  raise FileNotFoundError(
      f"no VOC 2012 devkit under {root}: expected {root}/VOCdevkit/VOC2012/JPEGImages (extract "
      "VOCtrainval_11-May-2012.tar there)")


def read_ids(path: str) -> list[str]:
  """The image ids listed one a line in an ImageSets file, e.g. ['2007_000032', ...]."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"VOC split file {path} not found")
  with open(path) as f:
    ids = [line.strip() for line in f if line.strip()]
  bad = [i for i in ids if not _ID.match(i)]
  if bad:
    raise ValueError(f"{path}: not VOC image ids (YYYY_NNNNNN): {bad[:5]}")
  return ids


def read_mask(path: str) -> np.ndarray:
  """The class indices of a VOC label PNG, uint8 [H, W], values 0..20 or 255.

  SegmentationClass PNGs are palettized (mode 'P'): the palette indices are the class indices
  (never convert them to RGB or greyscale, which would map them through the colour palette).
  SegmentationClassAug PNGs are greyscale (mode 'L') class indices. Other modes (e.g. a mask
  saved as RGB colours) and values outside 0..20, 255 raise ValueError naming the file.
  """
  with Image.open(path) as image:
    if image.mode not in ("P", "L"):
      raise ValueError(f"{path}: a VOC mask must be a palettized ('P') or greyscale ('L') PNG of "
                       f"class indices, got mode {image.mode!r}")
    mask = np.array(image, np.uint8)
  unexpected = np.setdiff1d(np.unique(mask), _VALID_VALUES)
  if unexpected.size:
    raise ValueError(f"{path}: mask values {unexpected.tolist()} are not VOC class indices "
                     f"(0..{len(CLASS_NAMES) - 1}, or {IGNORE_LABEL})")
  return mask


def image_id(voc_id: str) -> int:
  """'2007_000032' -> 2007000032."""
  return int(voc_id.replace("_", ""))


class Builder(tfds.core.GeneratorBasedBuilder):
  """PASCAL VOC 2012 images with class-index segmentation masks (see the module docstring)."""

  name = "voc2012_segmentation"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Extract VOCtrainval_11-May-2012.tar (and optionally SegmentationClassAug.zip into
  VOCdevkit/VOC2012/) into a directory DIR, then run:
    research-prepare-data voc2012_segmentation --voc_dir DIR --data_dir DATA_DIR
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image/id": np.int64,
            "image/filename": tfds.features.Text(),
            "segmentation_mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        }),
        supervised_keys=("image", "segmentation_mask"),
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES)),
    )

  def _split_generators(self, dl_manager):
    root = find_voc2012(os.fspath(dl_manager.manual_dir))
    sets = os.path.join(root, "ImageSets", "Segmentation")
    masks = os.path.join(root, "SegmentationClass")
    val = read_ids(os.path.join(sets, "val.txt"))
    splits = {"train": self._generate_examples(root, read_ids(os.path.join(sets, "train.txt")), masks),
              "val": self._generate_examples(root, val, masks)}
    aug = os.path.join(root, "SegmentationClassAug")
    if os.path.isdir(aug):
      val_ids = set(val)
      aug_ids = sorted(f[:-4] for f in os.listdir(aug) if f.endswith(".png") and f[:-4] not in val_ids)
      splits["train_aug"] = self._generate_examples(root, aug_ids, aug)
    return splits

  def _generate_examples(self, root: str, ids: Sequence[str], mask_dir: str) -> Iterator[tuple[str, dict]]:
    for voc_id in ids:
      image_path = os.path.join(root, "JPEGImages", f"{voc_id}.jpg")
      if not os.path.isfile(image_path):
        raise FileNotFoundError(f"image {image_path} not found (listed for {mask_dir})")
      mask = read_mask(os.path.join(mask_dir, f"{voc_id}.png"))
      with Image.open(image_path) as image:
        if image.size != (mask.shape[1], mask.shape[0]):
          raise ValueError(f"{image_path} is {image.size[0]}x{image.size[1]} (WxH) but its mask is "
                           f"{mask.shape[1]}x{mask.shape[0]}")
        # Without TensorFlow, Image features take bytes or PIL images (numpy needs TF to encode).
        if image.mode == "RGB":
          with open(image_path, "rb") as f:
            encoded = f.read()
        else:
          encoded = image.convert("RGB")
      yield voc_id, {
          "image": encoded,
          "image/id": image_id(voc_id),
          "image/filename": f"{voc_id}.jpg",
          "segmentation_mask": Image.fromarray(mask, mode="L"),
      }


def prepare(voc_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """Writes voc2012_segmentation (array_record) into `data_dir` from the VOCdevkit in `voc_dir`."""
  builder = Builder(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=voc_dir))
  return builder
