"""Boxes drawn on images: ground truth or detections, with class names and scores."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from research.viz.masks import palette


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int],
               class_names: Optional[Sequence[str]] = None, scores: Optional[Sequence[float]] = None,
               scale: int = 1, width: int = 1) -> np.ndarray:
  """uint8 image [H, W, 3] with boxes drawn on it, upscaled by `scale` (nearest).

  boxes: [K, 4] in pixels, [x1, y1, x2, y2] (x2, y2 exclusive edges); labels: [K] class ids
  (colour = class + 1 in the VOC palette, as in the masks); scores: optional [K], printed after
  the class name.
  """
  h, w = image.shape[:2]
  canvas = Image.fromarray(np.asarray(image, np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
  draw = ImageDraw.Draw(canvas)
  colors = palette(max(int(np.max(labels, initial=0)) + 2, 2))
  for k, (box, label) in enumerate(zip(np.asarray(boxes, np.float32), labels)):
    x1, y1, x2, y2 = (box * scale).tolist()
    color = tuple(int(c) for c in colors[int(label) + 1])
    draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=color, width=width)
    text = class_names[int(label)] if class_names is not None else str(int(label))
    if scores is not None:
      text += f" {float(scores[k]):.2f}"
    draw.text((x1 + 1, max(y1 - 10, 0)), text, fill=color)
  return np.asarray(canvas)
