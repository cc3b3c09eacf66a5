"""The user's own image files, read and shaped like a dataset's images.

`read_image(path, channels, size)` opens a PNG / JPEG / any format Pillow reads, of any size and
mode (grey, RGB, RGBA, palette, 16-bit), converts it to `channels` (1: grey 'L', 3: 'RGB'; an
alpha channel is dropped) and resizes it (bilinear) to `size` = (height, width). The result is
what the dataset's own examples hold (uint8 [H, W, C]), so the run's eval preprocessing applies
unchanged.
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from research.core.errors import ExpectedError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class NotAnImageError(ExpectedError, ValueError):
  """A path given as an image is not an image file Pillow can read (or a folder holds none)."""


def image_files(paths: Sequence[str]) -> List[str]:
  """The files named by `paths`: files as given, folders expanded to their image files (by
  extension, sorted). Raises NotAnImageError for a missing path or a folder without images."""
  files: List[str] = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path)
                     if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
      if not found:
        raise NotAnImageError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
      files.extend(found)
    elif os.path.exists(path):
      files.append(path)
    else:
      raise NotAnImageError(f"image file {path} does not exist")
  return files


def read_image(path: str, channels: int, size: Tuple[int, int]) -> np.ndarray:
  """uint8 [height, width, channels] of the image file at `path` (module docstring)."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  try:
    with Image.open(path) as image:
      image.load()
      if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 8 bits
        values = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(np.round(values * 255.0 / top), 0, 255).astype(np.uint8))
      if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white
        image = Image.alpha_composite(background, rgba)
      image = image.convert("L" if channels == 1 else "RGB")
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise NotAnImageError(f"{path} is not an image file Pillow can read ({type(e).__name__}: {e}); "
                          f"give PNG or JPEG files (or a folder of them)") from None
  height, width = size
  if image.size != (width, height):
    image = image.resize((width, height), Image.BILINEAR)
  array = np.asarray(image, np.uint8)
  return array[..., None] if array.ndim == 2 else array
