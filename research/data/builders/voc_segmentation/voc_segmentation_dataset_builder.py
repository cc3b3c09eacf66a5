"""The `voc2012_segmentation` dataset: PASCAL VOC 2012 semantic segmentation, built from local files.

TFDS's `voc/2012` has boxes but no segmentation masks, so this dataset is prepared from the files
the user has (never the network) by research/data/prepare/voc_segmentation.py:

  research-prepare-data voc2012_segmentation --source DIR --data_dir DATA_DIR

This module defines its feature spec (the builder that reads it) and the mask reader.

Splits:
  train       ImageSets/Segmentation/train.txt (1,464 images), masks from SegmentationClass
  val         ImageSets/Segmentation/val.txt (1,449 images), masks from SegmentationClass
  train_aug   only when SegmentationClassAug exists: every image it has a mask for, less the val
              images (10,582 with the usual release), masks from SegmentationClassAug
There is no test split: VOC 2012 test masks are not public (score on the evaluation server).

Features (H, W: the image's own size, at most 500 x 500 in VOC 2012):
  image               Image uint8 [H, W, 3]: the original JPEG bytes (decoding gives exactly
                      what PIL gives for the file); a JPEG neither RGB nor greyscale is converted
  image/id            int64: the id's digits, '2007_000032' -> 2007000032 (as for voc/2012)
  image/filename      Text: '<id>.jpg'
  segmentation_mask   Image uint8 [H, W, 1], png: class index 0 (background) .. 20, and 255 on
                      object boundaries and 'difficult' regions (ignored by loss and mIoU)
Metadata: 'class_names', the 21 names of the mask values 0..20 (CLASS_NAMES).
"""
from __future__ import annotations

from typing import BinaryIO, Union

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor")
IGNORE_LABEL = 255
_VALID_VALUES = np.array(list(range(len(CLASS_NAMES))) + [IGNORE_LABEL], np.uint8)


def read_mask(path: Union[str, BinaryIO], where: str = "") -> np.ndarray:
  """The class indices of a VOC label PNG, uint8 [H, W], values 0..20 or 255.

  SegmentationClass PNGs are palettized (mode 'P'): the palette indices are the class indices
  (never convert them to RGB or greyscale, which would map them through the colour palette).
  SegmentationClassAug PNGs are greyscale (mode 'L') class indices. Other modes (e.g. a mask
  saved as RGB colours) and values outside 0..20, 255 raise ValueError naming the file (`where`,
  else `path`).
  """
  where = where or str(path)
  with Image.open(path) as image:
    if image.mode not in ("P", "L"):
      raise ValueError(f"{where}: a VOC mask must be a palettized ('P') or greyscale ('L') PNG of "
                       f"class indices, got mode {image.mode!r}")
    mask = np.array(image, np.uint8)
  unexpected = np.setdiff1d(np.unique(mask), _VALID_VALUES)
  if unexpected.size:
    raise ValueError(f"{where}: mask values {unexpected.tolist()} are not VOC class indices "
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
  Put VOCtrainval_11-May-2012.tar (and optionally SegmentationClassAug.zip) in DIR, or their
  extracted contents, then run:
    research-prepare-data voc2012_segmentation --source DIR --data_dir DATA_DIR
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
    """This dataset is written by the offline preparer, never by TFDS's download path."""
    from research.data.datasets import DatasetNotPreparedError
    raise DatasetNotPreparedError("voc2012_segmentation is prepared from the VOC files you have: "
                                  "research-prepare-data voc2012_segmentation --source DIR")

  def _generate_examples(self):
    return self._split_generators(None)
