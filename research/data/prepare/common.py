"""Helpers the dataset modules share: the catalog builder, image bytes, text lists."""
from __future__ import annotations

import io

import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from research.data.prepare.sources import SourceError


def catalog_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """TFDS's own builder for catalog name `name` ('cifar10', 'coco/2017') writing array_record into
  data_dir: its `info.features` is the catalog's feature spec (built without TensorFlow)."""
  return tfds.builder(name, data_dir=data_dir, file_format="array_record")


def image_bytes(data: bytes, where: str, channels: int = 3) -> bytes:
  """The bytes to store for an image feature of `channels` channels stored as JPEG.

  The original bytes when they are a JPEG that decodes to RGB or greyscale (TFDS's reader turns
  greyscale into `channels` copies, as TensorFlow's decoder does); any other file (CMYK JPEG, PNG
  named .jpg, as a few ImageNet files are) is converted to RGB and re-encoded as JPEG (quality 95),
  as TFDS's builders do. Only the header is parsed, so this costs little.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format == "JPEG" and image.mode in ("RGB", "L") and (channels == 3 or image.mode == "L"):
        return data
      buffer = io.BytesIO()
      image.convert("RGB" if channels == 3 else "L").save(buffer, format="JPEG", quality=95)
      return buffer.getvalue()
  except (UnidentifiedImageError, OSError) as e:
    raise SourceError(f"{where} is not a readable image ({e})") from None


def png(array) -> Image.Image:
  """A uint8 [H, W] or [H, W, 3] array as a PIL image (TFDS encodes it as the feature says; without
  TensorFlow, image features take PIL images or encoded bytes, not arrays)."""
  return Image.fromarray(array)
