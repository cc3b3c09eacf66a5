"""Helpers the dataset modules share: the catalog builder, image bytes, text lists."""
from __future__ import annotations

import contextlib
import io
import sys
import types
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from research.data.prepare.sources import SourceError


# What TFDS builders' `_info()` use of TensorFlow, as NumPy: coco's declares 'image/id' as tf.int64.
_TF_DTYPES = types.SimpleNamespace(int64=np.int64, int32=np.int32, float32=np.float32, bool=np.bool_,
                                   uint8=np.uint8, string=np.object_)


@contextlib.contextmanager
def _numpy_tf(cls: type):
  """While active, the module of `cls` (and of its bases) sees `tf` as _TF_DTYPES."""
  modules = {sys.modules[c.__module__] for c in cls.__mro__ if hasattr(sys.modules.get(c.__module__), "tf")}
  saved = {m: m.tf for m in modules}
  try:
    for m in modules:
      m.tf = _TF_DTYPES
    yield
  finally:
    for m, tf in saved.items():
      m.tf = tf


def catalog_builder(name: str, data_dir: str, file_format: Optional[str] = "array_record"
                    ) -> tfds.core.DatasetBuilder:
  """TFDS's own builder for catalog name `name` ('cifar10', 'coco/2017') in data_dir: its
  `info.features` is the catalog's feature spec (and, once prepared, it reads the dataset).

  Without TensorFlow, every builder here constructs except coco's (and so coco_captions'), whose
  `_info()` names the dtype tf.int64; builders are constructed with NumPy's dtypes in place of
  TensorFlow's (the same feature spec: TFDS stores dtypes by name).
  """
  base, _, config = name.partition("/")
  cls = tfds.builder_cls(base)
  kwargs = {"data_dir": data_dir, "file_format": file_format}
  if config:
    kwargs["config"] = config
  with _numpy_tf(cls):
    builder = cls(**kwargs)
    builder.info.features  # (cached: later uses need no TensorFlow)
  return builder


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_components(data: bytes) -> Optional[int]:
  """The number of colour components of a baseline or progressive JPEG (1 grey, 3 YCbCr/RGB, 4
  CMYK/YCCK) from its frame header, or None if `data` does not parse as a JPEG that far."""
  if data[:2] != b"\xff\xd8":
    return None
  pos = 2
  while pos + 4 <= len(data):
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    length = int.from_bytes(data[pos + 2:pos + 4], "big")
    if marker in _SOF:
      return data[pos + 9] if pos + 9 < len(data) else None
    pos += 2 + length
  return None


def image_bytes(data: bytes, where: str, channels: int = 3) -> bytes:
  """The bytes to store for an image feature of `channels` channels stored as JPEG.

  The original bytes when they are a JPEG that decodes to RGB or greyscale (TFDS's reader turns
  greyscale into `channels` copies, as TensorFlow's decoder does); any other file (CMYK JPEG, PNG
  named .jpg, as a few ImageNet files are) is converted to RGB and re-encoded as JPEG (quality 95),
  as TFDS's builders do. Only the header is parsed, so this costs little.
  """
  components = jpeg_components(data)
  if components == 1 or (components == 3 and channels == 3):
    return data
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
