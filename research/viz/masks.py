"""Segmentation pictures: class masks as colours, overlaid on images."""
from __future__ import annotations

import numpy as np


def palette(num_classes: int) -> np.ndarray:
  """uint8 [num_classes, 3] colours: class 0 (background) black, then the PASCAL VOC colour map."""
  colors = np.zeros((num_classes, 3), np.uint8)
  for c in range(num_classes):
    r = g = b = 0
    label = c
    for shift in range(7, -1, -1):
      r |= ((label >> 0) & 1) << shift
      g |= ((label >> 1) & 1) << shift
      b |= ((label >> 2) & 1) << shift
      label >>= 3
    colors[c] = (r, g, b)
  return colors


def colorize(mask: np.ndarray, num_classes: int, ignore_label: int = 255) -> np.ndarray:
  """int [H, W] class ids -> uint8 [H, W, 3]; ignored pixels white."""
  mask = np.asarray(mask)
  out = palette(num_classes)[np.clip(mask, 0, num_classes - 1)]
  out[mask == ignore_label] = 255
  return out


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
  """uint8 image [H, W, 3] with the non-background pixels of `mask` [H, W] tinted by class colour."""
  colors = colorize(mask, num_classes).astype(np.float32)
  blend = np.where((np.asarray(mask) > 0)[..., None], (1 - alpha) * image + alpha * colors, image)
  return np.clip(blend, 0, 255).astype(np.uint8)
