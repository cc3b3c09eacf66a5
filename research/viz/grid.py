"""Picture grids: a batch of images tiled into one uint8 image, with optional captions."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

Color = Tuple[int, int, int]


def to_uint8(images: np.ndarray, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> np.ndarray:
  """Undo (x / 255 - mean) / std normalization: float [N, H, W, C] -> uint8 [N, H, W, 3]."""
  x = (np.asarray(images, np.float32) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)) * 255.0
  x = np.clip(np.round(x), 0, 255).astype(np.uint8)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def image_grid(images: np.ndarray, captions: Optional[Sequence[str]] = None,
               colors: Optional[Sequence[Color]] = None, columns: int = 8, scale: int = 3,
               caption_height: int = 12) -> np.ndarray:
  """Tiles uint8 images [N, H, W, 3] into a grid [rows * (H*scale + caption_height), ...].

  Each image is upscaled by `scale` (nearest) and captioned below in its color (default white).
  """
  images = np.asarray(images)
  n, h, w = images.shape[:3]
  columns = min(columns, n)
  rows = -(-n // columns)
  ch = caption_height if captions is not None else 0
  cell_h, cell_w = h * scale + ch, w * scale
  canvas = Image.new("RGB", (columns * cell_w + columns - 1, rows * cell_h + rows - 1), (40, 40, 40))
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    r, c = divmod(i, columns)
    x0, y0 = c * (cell_w + 1), r * (cell_h + 1)
    tile = Image.fromarray(images[i]).resize((cell_w, h * scale), Image.NEAREST)
    canvas.paste(tile, (x0, y0))
    if captions is not None:
      color = tuple(colors[i]) if colors is not None else (255, 255, 255)
      draw.text((x0 + 2, y0 + h * scale), str(captions[i]), fill=color)
  return np.asarray(canvas)
